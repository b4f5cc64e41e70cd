//! The proxy-wasm "pairs" wire format, decoded without trusting the host.
//!
//! Header maps and map/list-valued properties (such as the `jwt_authn`
//! payload Envoy keeps in dynamic metadata) arrive as:
//! `u32 count`, then `count` × (`u32 key_len`, `u32 value_len`), then each key
//! and value followed by a NUL byte. Lengths are little-endian.
//! The SDK's decoder panics on short or non-UTF-8 input; a panic traps the
//! VM, so this one returns `None` instead.

/// Decodes a pairs buffer into borrowed byte slices.
pub fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let count = read_u32(bytes, 0)?;
    let header_len = count.checked_mul(8)?.checked_add(4)?;
    if header_len > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = header_len;
    for index in 0..count {
        let key_len = read_u32(bytes, 4 + index * 8)?;
        let value_len = read_u32(bytes, 8 + index * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len)?;
        if bytes.get(data) != Some(&0) {
            return None;
        }
        data += 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?;
        if bytes.get(data) != Some(&0) {
            return None;
        }
        data += 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// Encodes pairs; the inverse of [`decode`] (used for local replies and tests).
pub fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let data_len: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data_len);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/v1/x"), (b"k", b""), (b"", b"\xff")];
        assert_eq!(decode(&encode(&pairs)).unwrap(), pairs);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<(&[u8], &[u8])>::new());
    }

    #[test]
    fn rejects_every_truncation_and_lying_lengths() {
        let good = encode(&[(b"key", b"value"), (b"a", b"b")]);
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
        let mut missing_nul = good.clone();
        missing_nul[4 + 16 + 3] = b'x';
        assert_eq!(decode(&missing_nul), None);
    }
}
