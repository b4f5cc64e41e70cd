//! Per-principal read counts over a sliding window, for `context.recent_reads`:
//! a policy can require approval or deny when a workload suddenly reads far
//! more secrets than usual.
//!
//! Counts live in the host's shared data (shared by every worker's VM) in a
//! fixed number of slots, so memory stays bounded however many principals
//! there are. A principal hashes to one slot; a slot still holding another
//! principal's live counts is shared with it, which can only over-count:
//! the limit may trip early for two busy principals, never late.

use std::time::Duration;

/// Slots in the shared table (about 200 bytes each at most).
pub const SLOTS: u32 = 4096;
const KEY_PREFIX: &str = "secretgate.recent_reads.";
/// The window is kept as this many buckets, each `window / BUCKETS` long.
const BUCKETS: u64 = 10;
const MAX_PRINCIPAL_BYTES: usize = 1024;

/// The shared-data key of a principal's slot.
pub fn slot_key(principal: &str) -> String {
    // FNV-1a: stable across VMs and builds, unlike std's randomised hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in principal.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{KEY_PREFIX}{}", hash % SLOTS)
}

/// Where read counts are kept: the host's shared data in the filter.
pub trait ReadCounter {
    /// Counts one request of `principal` (when `is_read`) and returns its
    /// reads within `window`.
    fn recent_reads(
        &mut self,
        principal: &str,
        now: Duration,
        window: Duration,
        is_read: bool,
    ) -> Result<u64, String>;
}

/// For callers without shared storage: a schema that declares
/// `recent_reads` then fails closed.
pub struct NoReadCounter;

impl ReadCounter for NoReadCounter {
    fn recent_reads(&mut self, _: &str, _: Duration, _: Duration, _: bool) -> Result<u64, String> {
        Err("no read counter on this host".into())
    }
}

/// A slot's content: the last principal counted there and its buckets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Slot {
    principal: String,
    /// (bucket start in seconds, reads in that bucket), oldest first.
    buckets: Vec<(u64, u32)>,
}

impl Slot {
    fn decode(bytes: &[u8]) -> Option<Slot> {
        let (length, rest) = bytes.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_le_bytes(*length));
        let principal = std::str::from_utf8(rest.get(..length)?).ok()?.to_owned();
        let mut rest = rest.get(length..)?;
        let mut buckets = Vec::new();
        while !rest.is_empty() {
            let (start, tail) = rest.split_first_chunk::<8>()?;
            let (count, tail) = tail.split_first_chunk::<4>()?;
            buckets.push((u64::from_le_bytes(*start), u32::from_le_bytes(*count)));
            rest = tail;
        }
        Some(Slot { principal, buckets })
    }

    fn encode(&self) -> Vec<u8> {
        let name = self.principal.as_bytes();
        let name = &name[..name.len().min(MAX_PRINCIPAL_BYTES)];
        let mut out = Vec::with_capacity(2 + name.len() + self.buckets.len() * 12);
        // At most 1024 bytes: fits in u16.
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        for (start, count) in &self.buckets {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }
}

/// What counting one request did to a slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Counted {
    /// Reads in the window, this one included when it was counted.
    pub recent_reads: u64,
    /// The slot's new content to store (`None`: unchanged).
    pub store: Option<Vec<u8>>,
}

/// Counts a request in a slot. `count` is false for requests that are not
/// reads: they see the count without adding to it.
pub fn count(
    stored: Option<&[u8]>,
    principal: &str,
    now: Duration,
    window: Duration,
    count: bool,
) -> Counted {
    let bucket_len = (window.as_secs() / BUCKETS).max(1);
    let now_s = now.as_secs();
    let current = now_s - now_s % bucket_len;
    let oldest = now_s.saturating_sub(window.as_secs().max(1));
    // An unreadable slot is started afresh rather than trusted.
    let mut slot = stored.and_then(Slot::decode).unwrap_or_default();
    slot.buckets
        .retain(|(start, _)| *start + bucket_len > oldest);
    if count {
        match slot.buckets.last_mut() {
            Some((start, reads)) if *start == current => *reads = reads.saturating_add(1),
            _ => slot.buckets.push((current, 1)),
        }
        principal.clone_into(&mut slot.principal);
    }
    let recent_reads = slot
        .buckets
        .iter()
        .map(|(_, reads)| u64::from(*reads))
        .sum();
    Counted {
        recent_reads,
        store: count.then(|| slot.encode()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(1_700_000_000 + seconds)
    }

    /// Counts `reads` reads, one per `every` seconds, returning the last count.
    fn burst(
        slot: &mut Option<Vec<u8>>,
        principal: &str,
        start: u64,
        reads: u64,
        every: u64,
    ) -> u64 {
        let mut last = 0;
        for i in 0..reads {
            let counted = count(
                slot.as_deref(),
                principal,
                at(start + i * every),
                MINUTE,
                true,
            );
            *slot = counted.store;
            last = counted.recent_reads;
        }
        last
    }

    #[test]
    fn counts_reads_within_the_window_and_forgets_older_ones() {
        let mut slot = None;
        assert_eq!(burst(&mut slot, "ci", 0, 30, 1), 30);
        // Looking without counting changes nothing.
        let seen = count(slot.as_deref(), "ci", at(30), MINUTE, false);
        assert_eq!((seen.recent_reads, seen.store), (30, None));
        // Two minutes later the burst has left the window.
        assert_eq!(
            count(slot.as_deref(), "ci", at(150), MINUTE, true).recent_reads,
            1
        );
        // Halfway, about half of it remains (bucket granularity: a tenth of the window).
        let half = count(slot.as_deref(), "ci", at(75), MINUTE, false).recent_reads;
        assert!((10..=20).contains(&half), "{half}");
    }

    #[test]
    fn a_steady_rate_stays_bounded() {
        let mut slot = None;
        let last = burst(&mut slot, "ci", 0, 600, 1);
        assert!((60..=66).contains(&last), "{last}");
        assert!(slot.unwrap().len() <= 2 + 2 + 11 * 12);
    }

    #[test]
    fn a_shared_slot_can_only_over_count() {
        let mut slot = None;
        burst(&mut slot, "alice", 0, 5, 1);
        let bob = count(slot.as_deref(), "bob", at(6), MINUTE, true);
        assert_eq!(bob.recent_reads, 6);
    }

    #[test]
    fn garbage_in_a_slot_starts_afresh() {
        for garbage in [&b""[..], b"\xff", b"\x05\x00ab", b"\x01\x00a\x01\x02"] {
            assert_eq!(
                count(Some(garbage), "ci", at(0), MINUTE, true).recent_reads,
                1
            );
        }
    }

    #[test]
    fn slot_keys_are_stable_and_bounded() {
        assert_eq!(slot_key("repo:acme/api"), slot_key("repo:acme/api"));
        assert_ne!(slot_key("repo:acme/api"), slot_key("repo:acme/web"));
        let n: u32 = slot_key("x")
            .trim_start_matches(KEY_PREFIX)
            .parse()
            .unwrap();
        assert!(n < SLOTS);
    }
}
