//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! holding both variants, as a map from relative path to bytes. Writing it
//! is `output`'s concern; here every byte is decided.

use std::collections::BTreeMap;

use oci_spec::image::{ImageIndexBuilder, MediaType, OciLayoutBuilder, ANNOTATION_REF_NAME};

use crate::blob::Blob;
use crate::images::Image;
use crate::{canonical_json, PackageError};

/// Every file of the layout by its path inside the layout's folder.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The layout: one manifest per image in `index.json` (in the order
/// given), each with its `org.opencontainers.image.ref.name`; every
/// manifest and blob once under `blobs/sha256/<hex>`.
pub fn layout(images: &[Image]) -> Result<Files, PackageError> {
    let mut files = Files::new();
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        for blob in image.blobs.iter().chain([&image.manifest]) {
            files.insert(blob_path(blob), blob.bytes.clone());
        }
        manifests.push(
            image
                .manifest
                .descriptor(&[(ANNOTATION_REF_NAME, image.ref_name.as_str())])?,
        );
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| PackageError::at("index.json", e))?;
    files.insert("index.json".to_owned(), canonical_json::to_vec(&index)?);
    let marker = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|e| PackageError::at("oci-layout", e))?;
    files.insert("oci-layout".to_owned(), canonical_json::to_vec(&marker)?);
    Ok(files)
}

fn blob_path(blob: &Blob) -> String {
    format!("blobs/sha256/{}", blob.sha256_hex())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::blob::sha256_hex;

    fn image(ref_name: &str, content: &[u8]) -> Image {
        let layer = Blob::new("application/octet-stream", content.to_vec());
        Image {
            ref_name: ref_name.to_owned(),
            manifest: Blob::new(
                MediaType::ImageManifest,
                format!("manifest of {ref_name}").into_bytes(),
            ),
            blobs: vec![layer],
        }
    }

    #[test]
    fn the_index_names_each_manifest_by_its_ref_name() {
        let files = layout(&[image("0.1.0", b"a"), image("0.1.0-compat", b"b")]).unwrap();
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0]["annotations"][ANNOTATION_REF_NAME], "0.1.0");
        assert_eq!(
            manifests[1]["annotations"][ANNOTATION_REF_NAME],
            "0.1.0-compat"
        );
        assert_eq!(
            manifests[0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifests[0]["digest"],
            format!("sha256:{}", sha256_hex(b"manifest of 0.1.0"))
        );
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    }

    #[test]
    fn every_blob_is_stored_under_its_digest_once() {
        // Both images share the layer "same": one file.
        let files = layout(&[image("a", b"same"), image("b", b"same")]).unwrap();
        let blobs: Vec<&String> = files.keys().filter(|p| p.starts_with("blobs/")).collect();
        assert_eq!(
            blobs.len(),
            3,
            "two manifests and one shared layer: {blobs:?}"
        );
        for (path, bytes) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(hex, sha256_hex(bytes));
            }
        }
    }
}
