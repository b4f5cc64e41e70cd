//! The proxy-wasm "pairs" encoding (header maps, map-valued properties):
//! `u32 count`, `count` × (`u32 key_len`, `u32 value_len`), then each key and
//! value followed by a NUL byte; little-endian.
//!
//! Deliberately not the filter's own `secretgate::pairs`: the host plays
//! Envoy's side of the ABI, and a host sharing the filter's codec would hide
//! a codec bug on both sides at once.

pub fn encode(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let key_len = word(4 + index * 8)?;
        let value_len = word(8 + index * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?.to_vec();
        data += key_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?.to_vec();
        data += value_len + 1;
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let pairs = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"".to_vec(), b"xyz".to_vec()),
        ];
        assert_eq!(super::decode(&super::encode(&pairs)), Some(pairs));
    }
}
