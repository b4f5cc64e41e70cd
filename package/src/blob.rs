//! Content addressing: SHA-256 digests, the descriptors that point at a
//! blob by digest and size, and the `sha256sum` line for the .wasm.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, DescriptorBuilder, Digest, MediaType};
use sha2::{Digest as _, Sha256};

use crate::PackageError;

/// A blob of the layout: its bytes and the media type it is referenced with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: impl Into<MediaType>, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            bytes,
        }
    }

    /// Lowercase hex SHA-256 of the bytes: the blob's file name under
    /// `blobs/sha256/`.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.bytes)
    }

    /// The descriptor that references this blob, with `annotations` (none
    /// when empty, as the spec prefers to an empty map).
    pub fn descriptor(&self, annotations: &[(&str, &str)]) -> Result<Descriptor, PackageError> {
        let digest: Digest = format!("sha256:{}", self.sha256_hex())
            .parse()
            .map_err(|e| PackageError::at("making a digest", e))?;
        let size = u64::try_from(self.bytes.len()).map_err(|e| PackageError::at("blob size", e))?;
        let mut builder = DescriptorBuilder::default()
            .media_type(self.media_type.clone())
            .digest(digest)
            .size(size);
        if !annotations.is_empty() {
            let map: HashMap<String, String> = annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            builder = builder.annotations(map);
        }
        builder
            .build()
            .map_err(|e| PackageError::at("making a descriptor", e))
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The line `sha256sum FILE` prints for `bytes` named `file_name` (text
/// mode: two spaces), so `sha256sum -c` checks it from the file's folder.
pub fn sha256sum_line(bytes: &[u8], file_name: &str) -> String {
    format!("{}  {}\n", sha256_hex(bytes), file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_checksum_line_is_sha256sum_text_mode() {
        assert_eq!(
            sha256sum_line(b"abc", "secretgate.wasm"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  secretgate.wasm\n"
        );
    }

    #[test]
    fn a_descriptor_names_the_digest_size_and_media_type() {
        let blob = Blob::new(
            "application/vnd.module.wasm.content.layer.v1+wasm",
            b"abc".to_vec(),
        );
        let descriptor = blob
            .descriptor(&[("org.opencontainers.image.title", "plugin.wasm")])
            .unwrap();
        let json = crate::canonical_json::to_vec(&descriptor).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            concat!(
                r#"{"annotations":{"org.opencontainers.image.title":"plugin.wasm"},"#,
                r#""digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","#,
                r#""mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","size":3}"#
            )
        );
    }

    #[test]
    fn a_descriptor_without_annotations_has_no_annotations_key() {
        let descriptor = Blob::new("application/octet-stream", vec![1])
            .descriptor(&[])
            .unwrap();
        let json = String::from_utf8(crate::canonical_json::to_vec(&descriptor).unwrap()).unwrap();
        assert!(!json.contains("annotations"), "{json}");
    }
}
