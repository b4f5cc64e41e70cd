//! The compat variant's one layer: a gzip-compressed tar holding
//! `plugin.wasm`, the name Istio's fetcher looks for. Every header field
//! that could carry the build machine's state (mtime, owner, mode, names)
//! is fixed, and the gzip header carries no time or file name, so the same
//! .wasm always gives the same layer bytes and digest.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::PackageError;

/// The file name the compat variant's layer must hold (Wasm image spec,
/// compat variant; Istio's `extractWasmPluginBinary`).
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";

/// Mode of `plugin.wasm` in the layer: readable by all, written by none but
/// its owner; the same on every build machine whatever its umask.
pub const PLUGIN_FILE_MODE: u32 = 0o644;

/// The layer in both forms an image needs: the uncompressed tar (its
/// digest is the image configuration's `diff_id`) and the gzip of it (the
/// blob the manifest points at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatLayer {
    pub tar: Vec<u8>,
    pub tar_gzip: Vec<u8>,
}

/// A tar with the single entry `plugin.wasm` (owner 0:0, no owner names,
/// mode 0644, modified at `mtime`, seconds since the epoch: the commit time),
/// and its gzip with mtime 0 and no file name in the header.
pub fn build(wasm: &[u8], mtime: u64) -> Result<CompatLayer, PackageError> {
    let tar = plugin_tar(wasm, mtime)?;
    let tar_gzip = gzip(&tar)?;
    Ok(CompatLayer { tar, tar_gzip })
}

fn plugin_tar(wasm: &[u8], mtime: u64) -> Result<Vec<u8>, PackageError> {
    let size = u64::try_from(wasm.len()).map_err(|e| PackageError::at("plugin.wasm size", e))?;
    let mut header = Header::new_ustar();
    header
        .set_path(PLUGIN_FILE_NAME)
        .map_err(|e| PackageError::at("tar header", e))?;
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(PLUGIN_FILE_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header
        .set_username("")
        .map_err(|e| PackageError::at("tar header", e))?;
    header
        .set_groupname("")
        .map_err(|e| PackageError::at("tar header", e))?;
    header.set_mtime(mtime);
    header.set_cksum();

    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(&header, wasm)
        .map_err(|e| PackageError::at("writing the tar", e))?;
    builder
        .into_inner()
        .map_err(|e| PackageError::at("finishing the tar", e))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, PackageError> {
    // GzBuilder writes no file name and no comment unless asked; mtime 0
    // means "no time stamp" in the gzip format.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .map_err(|e| PackageError::at("compressing the layer", e))?;
    encoder
        .finish()
        .map_err(|e| PackageError::at("compressing the layer", e))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0 a tiny stand-in module";
    const COMMIT_TIME: u64 = 1_764_720_000;

    #[test]
    fn the_layer_holds_plugin_wasm_with_fixed_metadata() {
        let layer = build(WASM, COMMIT_TIME).unwrap();
        let mut archive = tar::Archive::new(layer.tar.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let header = entry.header().clone();
        assert_eq!(header.path().unwrap().to_str(), Some("plugin.wasm"));
        assert_eq!(header.entry_type(), EntryType::Regular);
        assert_eq!(header.mode().unwrap(), 0o644);
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), COMMIT_TIME);
        assert_eq!(header.username().unwrap(), Some(""));
        assert_eq!(header.groupname().unwrap(), Some(""));
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert_eq!(content, WASM);
        drop(entry);
        assert!(entries.next().is_none(), "plugin.wasm is the only entry");
    }

    #[test]
    fn the_gzip_unpacks_to_the_tar() {
        let layer = build(WASM, COMMIT_TIME).unwrap();
        let mut unpacked = Vec::new();
        GzDecoder::new(layer.tar_gzip.as_slice())
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, layer.tar);
    }

    #[test]
    fn the_gzip_header_has_no_time_and_no_name() {
        let layer = build(WASM, COMMIT_TIME).unwrap();
        let header = &layer.tar_gzip[..10];
        assert_eq!(&header[..3], &[0x1f, 0x8b, 8], "gzip magic, deflate");
        assert_eq!(header[3], 0, "FLG: no name, comment or extra field");
        assert_eq!(&header[4..8], &[0, 0, 0, 0], "MTIME 0");
    }

    #[test]
    fn the_same_input_gives_the_same_bytes_and_another_time_other_bytes() {
        let first = build(WASM, COMMIT_TIME).unwrap();
        let second = build(WASM, COMMIT_TIME).unwrap();
        assert_eq!(first, second);
        let later = build(WASM, COMMIT_TIME + 1).unwrap();
        assert_ne!(first.tar, later.tar, "the commit time is the entry's mtime");
    }
}
