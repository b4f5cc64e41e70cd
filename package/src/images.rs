//! The filter as two images, the two variants of the Wasm image spec that
//! Istio's fetcher (`pkg/wasm/imagefetcher.go`) reads:
//!
//! - *oci*: the wasm-specific media types. Istio takes exactly two layers
//!   and picks the one of type `application/vnd.module.wasm.content.layer.v1+wasm`
//!   (the raw .wasm); the other is the runtime configuration JSON, which is
//!   also the manifest's config (`application/vnd.module.wasm.config.v1+json`),
//!   as `wasme` and the spec's example lay it out.
//! - *compat*: an ordinary OCI image whose single `tar+gzip` layer holds
//!   `plugin.wasm`, for registries and tools that refuse unknown media
//!   types; it carries `module.wasm.image/variant=compat` as the spec asks.
//!
//! Both manifests carry the same `org.opencontainers.image.*` annotations.

use std::collections::HashMap;

use oci_spec::image::{
    Arch, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
    ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE, ANNOTATION_TITLE,
    ANNOTATION_VERSION,
};
use serde_json::json;

use crate::blob::{sha256_hex, Blob};
use crate::{canonical_json, compat_layer, PackageError, Release};

/// The oci variant's config and runtime-configuration layer.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// The oci variant's layer: the .wasm bytes as they are.
pub const WASM_CONTENT_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The compat variant's annotation (Wasm image spec, compat variant).
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The root id the filter registers; Envoy's `root_id` must name it.
pub const ROOT_ID: &str = "secretgate";

/// One image of the layout: its manifest and every blob the manifest
/// references (config and layers), reachable by `ref_name` in index.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub ref_name: String,
    pub manifest: Blob,
    pub blobs: Vec<Blob>,
}

/// The annotations both manifests carry.
fn release_annotations(release: &Release) -> HashMap<String, String> {
    [
        (ANNOTATION_VERSION, release.version.as_str()),
        (ANNOTATION_SOURCE, release.source.as_str()),
        (ANNOTATION_REVISION, release.revision.as_str()),
        (ANNOTATION_CREATED, release.created.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The runtime configuration of the Wasm image spec for an Envoy filter:
/// the runtime, the Proxy-Wasm ABI versions the module exports, its root id.
pub fn runtime_config(abi_versions: &[String]) -> Result<Vec<u8>, PackageError> {
    canonical_json::to_vec(&json!({
        "type": "envoy_proxy",
        "abiVersions": abi_versions,
        "config": {"root_ids": [ROOT_ID]},
    }))
}

/// The oci variant: config = runtime configuration; layers = the runtime
/// configuration (`runtime-config.json`) and the raw .wasm (`plugin.wasm`).
pub fn oci_variant(
    wasm: &[u8],
    abi_versions: &[String],
    release: &Release,
) -> Result<Image, PackageError> {
    let config = Blob::new(WASM_CONFIG_MEDIA_TYPE, runtime_config(abi_versions)?);
    let content = Blob::new(WASM_CONTENT_MEDIA_TYPE, wasm.to_vec());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(&[])?)
        .layers(vec![
            config.descriptor(&[(ANNOTATION_TITLE, "runtime-config.json")])?,
            content.descriptor(&[(ANNOTATION_TITLE, compat_layer::PLUGIN_FILE_NAME)])?,
        ])
        .annotations(release_annotations(release))
        .build()
        .map_err(|e| PackageError::at("oci variant manifest", e))?;
    Ok(Image {
        ref_name: release.oci_ref_name(),
        manifest: Blob::new(MediaType::ImageManifest, canonical_json::to_vec(&manifest)?),
        blobs: vec![config, content],
    })
}

/// The compat variant: an OCI image (os `wasip1`, architecture `wasm`)
/// with one `tar+gzip` layer holding `plugin.wasm`.
pub fn compat_variant(wasm: &[u8], release: &Release) -> Result<Image, PackageError> {
    let layer = compat_layer::build(wasm, release.created_epoch_seconds()?)?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![format!("sha256:{}", sha256_hex(&layer.tar))])
        .build()
        .map_err(|e| PackageError::at("compat variant rootfs", e))?;
    let image_config = ImageConfigurationBuilder::default()
        .created(release.created.clone())
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".to_owned()))
        .rootfs(rootfs)
        .build()
        .map_err(|e| PackageError::at("compat variant configuration", e))?;
    let config = Blob::new(
        MediaType::ImageConfig,
        canonical_json::to_vec(&image_config)?,
    );
    let layer = Blob::new(MediaType::ImageLayerGzip, layer.tar_gzip);
    let mut annotations = release_annotations(release);
    annotations.insert(VARIANT_ANNOTATION.to_owned(), "compat".to_owned());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(&[])?)
        .layers(vec![layer.descriptor(&[])?])
        .annotations(annotations)
        .build()
        .map_err(|e| PackageError::at("compat variant manifest", e))?;
    Ok(Image {
        ref_name: release.compat_ref_name(),
        manifest: Blob::new(MediaType::ImageManifest, canonical_json::to_vec(&manifest)?),
        blobs: vec![config, layer],
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0proxy_abi_version_0_2_1";

    fn release() -> Release {
        Release::new(
            "0.1.0",
            "3362a5f0000000000000000000000000000000aa",
            "2026-12-03T07:00:00Z",
            "https://example.org/secretgate.git",
        )
        .unwrap()
    }

    fn abi() -> Vec<String> {
        vec!["proxy_abi_version_0_2_1".to_owned()]
    }

    fn parsed(blob: &Blob) -> Value {
        serde_json::from_slice(&blob.bytes).unwrap()
    }

    fn blob_by_digest<'a>(image: &'a Image, digest: &Value) -> &'a Blob {
        let digest = digest.as_str().unwrap();
        image
            .blobs
            .iter()
            .find(|b| format!("sha256:{}", b.sha256_hex()) == digest)
            .unwrap_or_else(|| panic!("no blob {digest}"))
    }

    #[test]
    fn the_oci_variant_has_the_wasm_config_and_two_layers_one_the_raw_module() {
        let image = oci_variant(WASM, &abi(), &release()).unwrap();
        let manifest = parsed(&image.manifest);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(
            layers.len(),
            2,
            "Istio reads the oci variant only with exactly two layers"
        );
        assert_eq!(layers[0]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], manifest["config"]["digest"]);
        assert_eq!(layers[1]["mediaType"], WASM_CONTENT_MEDIA_TYPE);
        assert_eq!(layers[1]["annotations"][ANNOTATION_TITLE], "plugin.wasm");
        assert_eq!(blob_by_digest(&image, &layers[1]["digest"]).bytes, WASM);
        assert_eq!(layers[1]["size"], WASM.len());
        let runtime: Value =
            serde_json::from_slice(&blob_by_digest(&image, &layers[0]["digest"]).bytes).unwrap();
        assert_eq!(
            runtime,
            json!({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"], "config": {"root_ids": ["secretgate"]}})
        );
        assert_eq!(image.ref_name, "0.1.0");
    }

    #[test]
    fn both_variants_carry_the_release_annotations() {
        for image in [
            oci_variant(WASM, &abi(), &release()).unwrap(),
            compat_variant(WASM, &release()).unwrap(),
        ] {
            let annotations = &parsed(&image.manifest)["annotations"];
            assert_eq!(annotations[ANNOTATION_VERSION], "0.1.0");
            assert_eq!(
                annotations[ANNOTATION_SOURCE],
                "https://example.org/secretgate.git"
            );
            assert_eq!(
                annotations[ANNOTATION_REVISION],
                "3362a5f0000000000000000000000000000000aa"
            );
            assert_eq!(annotations[ANNOTATION_CREATED], "2026-12-03T07:00:00Z");
        }
    }

    #[test]
    fn the_compat_variant_is_an_image_with_one_gzip_layer_and_the_variant_annotation() {
        let image = compat_variant(WASM, &release()).unwrap();
        let manifest = parsed(&image.manifest);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(manifest["annotations"][VARIANT_ANNOTATION], "compat");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let layer = blob_by_digest(&image, &layers[0]["digest"]);
        let expected = compat_layer::build(WASM, 1_796_281_200).unwrap();
        assert_eq!(layer.bytes, expected.tar_gzip);

        let config = parsed(blob_by_digest(&image, &manifest["config"]["digest"]));
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["created"], "2026-12-03T07:00:00Z");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!([format!("sha256:{}", sha256_hex(&expected.tar))])
        );
        assert_eq!(image.ref_name, "0.1.0-compat");
    }

    #[test]
    fn manifests_are_the_same_bytes_on_every_build() {
        let first = oci_variant(WASM, &abi(), &release()).unwrap();
        let second = oci_variant(WASM, &abi(), &release()).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            compat_variant(WASM, &release()).unwrap(),
            compat_variant(WASM, &release()).unwrap()
        );
    }
}
