//! The release files and writing them: `secretgate.wasm`, its checksum
//! file and the `oci/` layout, all under one output folder.

use std::fs;
use std::path::Path;

use crate::blob::sha256sum_line;
use crate::layout::{self, Files};
use crate::{images, wasm_module, PackageError, Release};

/// The filter's file name in the output folder and in its checksum line.
pub const WASM_FILE_NAME: &str = "secretgate.wasm";
/// The folder of the OCI image layout inside the output folder.
pub const LAYOUT_DIR: &str = "oci";

/// Every file the package consists of, by path inside the output folder.
pub fn release_files(wasm: &[u8], release: &Release) -> Result<Files, PackageError> {
    let abi_versions = wasm_module::proxy_wasm_abi_versions(wasm)?;
    let images = [
        images::oci_variant(wasm, &abi_versions, release)?,
        images::compat_variant(wasm, release)?,
    ];
    let mut files = Files::new();
    files.insert(WASM_FILE_NAME.to_owned(), wasm.to_vec());
    files.insert(
        format!("{WASM_FILE_NAME}.sha256"),
        sha256sum_line(wasm, WASM_FILE_NAME).into_bytes(),
    );
    for (path, bytes) in layout::layout(&images)? {
        files.insert(format!("{LAYOUT_DIR}/{path}"), bytes);
    }
    Ok(files)
}

/// Writes `files` under `out`. A layout already there is replaced whole,
/// so no blob of an earlier version lingers; a folder named `oci` that is
/// not a layout (no `oci-layout` file) is left alone and refused.
pub fn write(out: &Path, files: &Files) -> Result<(), PackageError> {
    let layout_dir = out.join(LAYOUT_DIR);
    if layout_dir.exists() {
        if !layout_dir.join("oci-layout").is_file() {
            return Err(PackageError(format!(
                "{} exists and is not an OCI image layout; not replacing it",
                layout_dir.display()
            )));
        }
        fs::remove_dir_all(&layout_dir)
            .map_err(|e| PackageError::at(&format!("removing {}", layout_dir.display()), e))?;
    }
    for (path, bytes) in files {
        let target = out.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| PackageError::at(&format!("creating {}", parent.display()), e))?;
        }
        fs::write(&target, bytes)
            .map_err(|e| PackageError::at(&format!("writing {}", target.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_package_is_the_wasm_its_checksum_and_the_layout() {
        let files = release_files(WASM, &release()).unwrap();
        assert_eq!(files["secretgate.wasm"], WASM);
        assert!(String::from_utf8(files["secretgate.wasm.sha256"].clone())
            .unwrap()
            .ends_with("  secretgate.wasm\n"));
        assert!(files.contains_key("oci/index.json"));
        assert!(files.contains_key("oci/oci-layout"));
        // oci: manifest, runtime config, wasm; compat: manifest, config, layer.
        assert_eq!(
            files
                .keys()
                .filter(|p| p.starts_with("oci/blobs/sha256/"))
                .count(),
            6
        );
    }

    #[test]
    fn a_file_that_is_not_a_proxy_wasm_module_is_refused() {
        assert!(release_files(b"not wasm", &release()).is_err());
    }

    #[test]
    fn writing_replaces_an_old_layout_and_refuses_a_foreign_oci_folder() {
        let out =
            std::env::temp_dir().join(format!("secretgate-package-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(out.join("oci/blobs/sha256")).unwrap();
        fs::write(out.join("oci/oci-layout"), "{}").unwrap();
        fs::write(out.join("oci/blobs/sha256/stale"), "old").unwrap();
        let files = release_files(WASM, &release()).unwrap();
        write(&out, &files).unwrap();
        assert!(!out.join("oci/blobs/sha256/stale").exists());
        assert_eq!(fs::read(out.join("secretgate.wasm")).unwrap(), WASM);

        fs::remove_file(out.join("oci/oci-layout")).unwrap();
        assert!(write(&out, &files).is_err());
        fs::remove_dir_all(&out).unwrap();
    }
}
