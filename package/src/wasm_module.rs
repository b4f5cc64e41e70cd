//! The few facts about the .wasm the package needs: that it is a Wasm
//! module at all, and which Proxy-Wasm ABI versions it exports (the oci
//! variant's runtime configuration names them).

use crate::PackageError;

/// The first eight bytes of every binary Wasm module (magic, version 1).
const WASM_HEADER: &[u8; 8] = b"\0asm\x01\0\0\0";

/// Proxy-Wasm modules export an empty function per ABI version they speak,
/// named with this prefix (`proxy_abi_version_0_2_1`).
const ABI_EXPORT_PREFIX: &[u8] = b"proxy_abi_version_";

/// Refuses anything but a binary Wasm module that exports a Proxy-Wasm ABI
/// version; returns the ABI version names, sorted, without duplicates.
pub fn proxy_wasm_abi_versions(module: &[u8]) -> Result<Vec<String>, PackageError> {
    if !module.starts_with(WASM_HEADER) {
        return Err(PackageError(
            "the file is not a binary Wasm module (no \\0asm version 1 header)".to_owned(),
        ));
    }
    // Export names are stored as plain UTF-8 in the export section; a scan
    // for the prefix finds them without a full Wasm parser.
    let mut versions: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(offset) = find(&module[at..], ABI_EXPORT_PREFIX) {
        let start = at + offset;
        let end = module[start + ABI_EXPORT_PREFIX.len()..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'_'))
            .map_or(module.len(), |n| start + ABI_EXPORT_PREFIX.len() + n);
        let name = String::from_utf8_lossy(&module[start..end]).into_owned();
        if end > start + ABI_EXPORT_PREFIX.len() && !versions.contains(&name) {
            versions.push(name);
        }
        at = end.max(start + 1);
    }
    if versions.is_empty() {
        return Err(PackageError(
            "the module exports no proxy_abi_version_* function: it is not a Proxy-Wasm filter"
                .to_owned(),
        ));
    }
    versions.sort();
    Ok(versions)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_with(names: &[&str]) -> Vec<u8> {
        let mut bytes = WASM_HEADER.to_vec();
        for name in names {
            bytes.push(u8::try_from(name.len()).unwrap());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&[0, 3]);
        }
        bytes
    }

    #[test]
    fn finds_the_abi_export() {
        let module = module_with(&[
            "proxy_on_memory_allocate",
            "proxy_abi_version_0_2_1",
            "memory",
        ]);
        assert_eq!(
            proxy_wasm_abi_versions(&module).unwrap(),
            ["proxy_abi_version_0_2_1"]
        );
    }

    #[test]
    fn several_versions_come_out_sorted_once_each() {
        let module = module_with(&[
            "proxy_abi_version_0_2_1",
            "proxy_abi_version_0_1_0",
            "proxy_abi_version_0_2_1",
        ]);
        assert_eq!(
            proxy_wasm_abi_versions(&module).unwrap(),
            ["proxy_abi_version_0_1_0", "proxy_abi_version_0_2_1"]
        );
    }

    #[test]
    fn refuses_a_non_wasm_file_and_a_module_without_the_abi() {
        assert!(proxy_wasm_abi_versions(b"#!/bin/sh\necho proxy_abi_version_0_2_1").is_err());
        assert!(proxy_wasm_abi_versions(&module_with(&["_start", "memory"])).is_err());
    }
}
