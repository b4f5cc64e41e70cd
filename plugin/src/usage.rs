//! Per-principal read counts over a sliding window, for `context.recent_reads`:
//! a policy can require approval or deny when a workload suddenly reads far
//! more secrets than usual.
//!
//! Counts live in the host's shared data (one store for every worker's VM)
//! in at most [`SLOTS`] slots, so memory stays bounded however many
//! principals there are. The promise is that a count is never low: every
//! read a request made within the window is in the count the next request
//! of the same principal sees, or that request is denied. Concretely:
//!
//! - **Slot choice is keyed.** A principal may use [`PROBES`] slots, chosen
//!   by HMAC-SHA256 under a random 256-bit key, so nobody can pick a name
//!   that lands on another principal's slots. The key is made once per
//!   Envoy process (per `vm_id`) by whichever VM needs it first, stored in
//!   shared data with the race-free creation below, and read by every other
//!   VM, so all workers agree on it. It is not derived from the audit
//!   `hmac_key`: that key is optional (redaction mode has none), and
//!   rotating it would move every count to new slots, resetting them.
//! - **A slot names its principal** by a 128-bit tag from the same HMAC,
//!   compared on every read: another principal's counts are never added to
//!   this one's, and a slot with another principal's live reads is never
//!   written. A slot is taken over only when its reads have all left the
//!   window (or it is unreadable), so nothing that still counts is lost.
//! - **When all of a principal's slots hold other principals' live reads**
//!   its read is refused (the filter denies it, `host_error`) rather than
//!   left uncounted. Its other requests still see its (zero) count.
//! - **Writes are compare-and-swap**, retried [`ATTEMPTS`] times on a
//!   conflict, then refused. Creating a missing key cannot overwrite a
//!   concurrent creation: see [`SharedCounter::create`].
//! - **Races that place one principal in two slots** (two workers each
//!   creating a slot for it at once, in different free slots) are harmless:
//!   every slot with its tag is summed.
//!
//! What can still make a count high: a bucket that is partly outside the
//! window counts whole, so the window slides in tenths of its length. What
//! can make it low, outside this module's control: a new `recent_reads.
//! window_s` prunes with the new window (a longer window only fills up after
//! it has passed once), and counts start at zero in a new Envoy process.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Slots in the shared table (at most about 150 bytes each).
pub const SLOTS: u32 = 4096;
/// Slots one principal may use, tried in order.
pub const PROBES: usize = 4;
/// Conflicting concurrent writes are retried this many times, then refused.
pub const ATTEMPTS: usize = 8;
/// The slot layout changed with keyed slots; a new prefix means a filter
/// upgraded in a running Envoy never decodes the old layout's slots.
const KEY_PREFIX: &str = "secretgate.recent_reads.v2.";
const HASH_KEY: &str = "secretgate.recent_reads.v2.hash_key";
/// Written only to obtain a fresh CAS token; see [`SharedCounter::create`].
const CAS_SOURCE: &str = "secretgate.recent_reads.v2.cas_source";
const TAKEN: &str = "every slot this principal may use holds other principals' recent reads";
/// The window is kept as this many buckets, each `window / BUCKETS` long.
const BUCKETS: u64 = 10;
const TAG_BYTES: usize = 16;
const BUCKET_BYTES: usize = 12;

/// The key slot choice and principal tags are computed under.
pub type HashKey = [u8; 32];
type Tag = [u8; TAG_BYTES];
type HmacSha256 = Hmac<Sha256>;

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

/// Why a shared-data call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The key's CAS token was no longer the one given: someone wrote it.
    CasMismatch,
    /// Any other failure.
    Host(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("shared data CAS mismatch"),
            StoreError::Host(e) => f.write_str(e),
        }
    }
}

/// A key-value store shared by every worker, with Envoy's semantics
/// (proxy-wasm-cpp-host `SharedData::get` and `::set`).
pub trait SharedStore {
    /// A value and its CAS token; `(None, 0)` when the key is absent.
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError>;
    /// `cas` 0 writes unconditionally. Otherwise an existing key is written
    /// only while its token is still `cas` ([`StoreError::CasMismatch`]
    /// if not), and an absent key is created *whatever* `cas` is. Every
    /// write gets a new token from one process-wide counter that skips 0.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

impl<S: SharedStore + ?Sized> SharedStore for &mut S {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        (**self).get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        (**self).set(key, value, cas)
    }
}

/// An in-process [`SharedStore`] with exactly Envoy's semantics, for
/// native callers and tests.
#[derive(Debug)]
pub struct MemoryStore {
    entries: std::collections::HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            entries: Default::default(),
            // Envoy's counter starts at 1.
            next_cas: 1,
        }
    }
}

impl MemoryStore {
    /// A store whose next CAS token is `next_cas` (0 is skipped), to test
    /// behaviour when the process-wide counter wraps.
    pub fn with_next_cas(next_cas: u32) -> Self {
        MemoryStore {
            entries: Default::default(),
            next_cas: next_cas.max(1),
        }
    }

    fn issue_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        Ok(match self.entries.get(key) {
            Some((value, cas)) => (Some(value.clone()), *cas),
            None => (None, 0),
        })
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if let Some((_, current)) = self.entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let token = self.issue_cas();
        self.entries.insert(key.to_owned(), (value.to_vec(), token));
        Ok(())
    }
}

/// Read counts in a [`SharedStore`]; see the module documentation for what
/// they promise.
pub struct SharedCounter<S, R> {
    store: S,
    random: R,
    hash_key: Option<HashKey>,
}

impl<S, R> SharedCounter<S, R>
where
    S: SharedStore,
    R: FnMut() -> Result<HashKey, String>,
{
    /// `random` makes a key when this process has none yet; `hash_key` is
    /// the one a previous counter loaded (see [`SharedCounter::hash_key`]),
    /// saving a lookup per request. The stored key never changes once made.
    pub fn new(store: S, random: R, hash_key: Option<HashKey>) -> Self {
        SharedCounter {
            store,
            random,
            hash_key,
        }
    }

    /// The slot key, once loaded or made.
    pub fn hash_key(&self) -> Option<HashKey> {
        self.hash_key
    }

    fn load_hash_key(&mut self) -> Result<HashKey, String> {
        if let Some(key) = self.hash_key {
            return Ok(key);
        }
        for _ in 0..ATTEMPTS {
            let (stored, _) = self.store.get(HASH_KEY).map_err(|e| e.to_string())?;
            let key = match stored {
                Some(bytes) => HashKey::try_from(bytes.as_slice())
                    .map_err(|_| "the shared slot key is malformed".to_owned())?,
                None => {
                    let fresh = (self.random)()?;
                    match self.create(HASH_KEY, &fresh) {
                        Ok(()) => fresh,
                        // Another VM made it first: use that one.
                        Err(StoreError::CasMismatch) => continue,
                        Err(StoreError::Host(e)) => return Err(e),
                    }
                }
            };
            self.hash_key = Some(key);
            return Ok(key);
        }
        Err("the shared slot key kept changing".into())
    }

    /// Creates `key`, which a `get` found absent, failing with
    /// [`StoreError::CasMismatch`] if someone created it meanwhile.
    ///
    /// Envoy has no create-if-absent, and a set with CAS 0 (the token an
    /// absent key reads as) overwrites whatever is there, so two workers
    /// that both found the key absent would both write and one write would
    /// be lost. Instead the set carries a token freshly issued to another
    /// key (written just for that): on an absent key Envoy ignores the
    /// token and creates it; on a key someone created since our `get`, the
    /// key's token was issued after that `get` too, and Envoy issues each
    /// token once, so it differs from ours and the set is refused. (Tokens
    /// repeat only after 2^32 - 1 writes process-wide, which would all have
    /// to happen between two host calls of this one request.)
    fn create(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.set(CAS_SOURCE, b"", 0)?;
        let token = match self.store.get(CAS_SOURCE)? {
            (Some(_), token) if token != 0 => token,
            _ => return Err(StoreError::Host("shared data issued no CAS token".into())),
        };
        self.store.set(key, value, token)
    }
}

impl<S, R> ReadCounter for SharedCounter<S, R>
where
    S: SharedStore,
    R: FnMut() -> Result<HashKey, String>,
{
    fn recent_reads(
        &mut self,
        principal: &str,
        now: Duration,
        window: Duration,
        is_read: bool,
    ) -> Result<u64, String> {
        let hash_key = self.load_hash_key()?;
        let (slots, tag) = placement(&hash_key, principal)?;
        let window = Window::new(now, window);
        for _ in 0..ATTEMPTS {
            let scan = self.scan(&slots, &tag, &window)?;
            let elsewhere = scan.elsewhere;
            if !is_read {
                return Ok(scan.mine.map_or(0, |mine| mine.slot.reads()) + elsewhere);
            }
            let (key, mut slot, write) = match (scan.mine, scan.free) {
                (Some(mine), _) => (mine.key, mine.slot, Some(mine.cas)),
                (None, Some(free)) => (free.key, Slot::new(tag), free.cas),
                (None, None) => return Err(TAKEN.into()),
            };
            slot.add(&window);
            let value = slot.encode();
            let written = match write {
                Some(cas) => self.store.set(&key, &value, cas),
                None => self.create(&key, &value),
            };
            match written {
                Ok(()) => return Ok(slot.reads() + elsewhere),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Host(e)) => return Err(e),
            }
        }
        Err("shared read counts kept changing under concurrent updates".into())
    }
}

/// What one pass over a principal's slots found.
struct Scan {
    /// The first slot with the principal's tag.
    mine: Option<Found>,
    /// Live reads in its other slots (left by a creation race).
    elsewhere: u64,
    /// The first slot free to take.
    free: Option<Free>,
}

struct Found {
    key: String,
    slot: Slot,
    cas: u32,
}

struct Free {
    key: String,
    /// `None`: the key is absent and has to be created.
    cas: Option<u32>,
}

impl<S, R> SharedCounter<S, R>
where
    S: SharedStore,
{
    fn scan(&mut self, slots: &[u32], tag: &Tag, window: &Window) -> Result<Scan, String> {
        let mut scan = Scan {
            mine: None,
            elsewhere: 0,
            free: None,
        };
        for index in slots {
            let key = format!("{KEY_PREFIX}{index}");
            let (stored, cas) = self.store.get(&key).map_err(|e| e.to_string())?;
            // A present key always has a token; writing with 0 would be
            // unconditional and could erase someone's count.
            if stored.is_some() && cas == 0 {
                return Err("shared data returned a value without a CAS token".into());
            }
            let slot = stored.as_deref().and_then(Slot::decode).map(|mut slot| {
                slot.prune(window);
                slot
            });
            match slot {
                Some(slot) if slot.tag == *tag => match scan.mine {
                    None => scan.mine = Some(Found { key, slot, cas }),
                    Some(_) => scan.elsewhere += slot.reads(),
                },
                // Another principal's reads that still count: never touched.
                Some(slot) if slot.reads() > 0 => {}
                // Absent, unreadable, or only reads that left the window.
                _ => {
                    if scan.free.is_none() {
                        let cas = stored.is_some().then_some(cas);
                        scan.free = Some(Free { key, cas });
                    }
                }
            }
        }
        Ok(scan)
    }
}

/// The slots a principal may use (distinct, in probe order) and its tag.
fn placement(key: &HashKey, principal: &str) -> Result<(Vec<u32>, Tag), String> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| "unusable slot key".to_owned())?;
    mac.update(principal.as_bytes());
    let digest: [u8; 32] = mac.finalize().into_bytes().into();
    let (indexes, tag) = digest.split_at(TAG_BYTES);
    let mut slots = Vec::with_capacity(PROBES);
    for word in indexes.chunks_exact(4).take(PROBES) {
        let word = <[u8; 4]>::try_from(word).map_err(|_| "slot index of the wrong size")?;
        let index = u32::from_le_bytes(word) % SLOTS;
        if !slots.contains(&index) {
            slots.push(index);
        }
    }
    let tag = Tag::try_from(tag).map_err(|_| "slot tag of the wrong size".to_owned())?;
    Ok((slots, tag))
}

/// The buckets a request at `now` sees.
struct Window {
    bucket_len: u64,
    /// Start of the bucket `now` falls in.
    current: u64,
    /// Reads before this second have left the window.
    oldest: u64,
}

impl Window {
    fn new(now: Duration, window: Duration) -> Self {
        let bucket_len = (window.as_secs() / BUCKETS).max(1);
        let now = now.as_secs();
        Window {
            bucket_len,
            current: now - now % bucket_len,
            oldest: now.saturating_sub(window.as_secs().max(1)),
        }
    }
}

/// A slot's content: whose it is, and its reads.
#[derive(Debug, PartialEq, Eq)]
struct Slot {
    tag: Tag,
    /// (bucket start in seconds, reads in that bucket), oldest first.
    buckets: Vec<(u64, u32)>,
}

impl Slot {
    fn new(tag: Tag) -> Self {
        Slot {
            tag,
            buckets: Vec::new(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Slot> {
        let (tag, rest) = bytes.split_first_chunk::<TAG_BYTES>()?;
        let chunks = rest.chunks_exact(BUCKET_BYTES);
        if !chunks.remainder().is_empty() {
            return None;
        }
        let mut buckets = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let (start, count) = chunk.split_first_chunk::<8>()?;
            let count = <[u8; 4]>::try_from(count).ok()?;
            buckets.push((u64::from_le_bytes(*start), u32::from_le_bytes(count)));
        }
        Some(Slot { tag: *tag, buckets })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG_BYTES + self.buckets.len() * BUCKET_BYTES);
        out.extend_from_slice(&self.tag);
        for (start, count) in &self.buckets {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    /// Drops buckets wholly outside the window; one partly inside stays
    /// whole, so a count errs high.
    fn prune(&mut self, window: &Window) {
        self.buckets
            .retain(|(start, _)| start.saturating_add(window.bucket_len) > window.oldest);
    }

    fn add(&mut self, window: &Window) {
        match self.buckets.last_mut() {
            Some((start, reads)) if *start == window.current => *reads = reads.saturating_add(1),
            _ => self.buckets.push((window.current, 1)),
        }
    }

    fn reads(&self) -> u64 {
        self.buckets
            .iter()
            .map(|(_, reads)| u64::from(*reads))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    const MINUTE: Duration = Duration::from_secs(60);
    const KEY_A: HashKey = [7; 32];

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(1_700_000_000 + seconds)
    }

    fn no_random() -> Result<HashKey, String> {
        Err("no randomness needed: the key is given".into())
    }

    /// A worker's counter with the slot key already loaded.
    fn counter(
        store: &mut MemoryStore,
    ) -> SharedCounter<&mut MemoryStore, fn() -> Result<HashKey, String>> {
        store.set(HASH_KEY, &KEY_A, 0).unwrap();
        SharedCounter::new(store, no_random, None)
    }

    fn read(store: &mut MemoryStore, who: &str, second: u64) -> Result<u64, String> {
        counter(store).recent_reads(who, at(second), MINUTE, true)
    }

    fn look(store: &mut MemoryStore, who: &str, second: u64) -> Result<u64, String> {
        counter(store).recent_reads(who, at(second), MINUTE, false)
    }

    /// Another principal whose first slot is `who`'s first slot.
    fn collider(who: &str) -> String {
        let (target, _) = placement(&KEY_A, who).unwrap();
        (0..1_000_000)
            .map(|i| format!("attacker-{i}"))
            .find(|name| placement(&KEY_A, name).unwrap().0[0] == target[0])
            .unwrap()
    }

    fn slot_keys(who: &str) -> Vec<String> {
        let (slots, _) = placement(&KEY_A, who).unwrap();
        slots.iter().map(|i| format!("{KEY_PREFIX}{i}")).collect()
    }

    /// A slot of some other principal with `reads` reads at `second`.
    fn foreign_slot(seed: u8, second: u64, reads: u32) -> Vec<u8> {
        Slot {
            tag: [seed; TAG_BYTES],
            buckets: vec![(at(second).as_secs(), reads)],
        }
        .encode()
    }

    /// Envoy shared by several workers; `before_set` runs another worker's
    /// code between this worker's last `get` and its next `set`, which is
    /// exactly where a lost update or a creation race happens.
    struct Interleaved {
        envoy: Rc<RefCell<MemoryStore>>,
        before_set: Option<(String, Box<dyn FnOnce()>)>,
        sets: Vec<(String, u32)>,
    }

    impl Interleaved {
        fn new(envoy: &Rc<RefCell<MemoryStore>>) -> Self {
            Interleaved {
                envoy: envoy.clone(),
                before_set: None,
                sets: Vec::new(),
            }
        }
    }

    impl SharedStore for Interleaved {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
            self.envoy.borrow_mut().get(key)
        }

        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.before_set.as_ref().is_some_and(|(k, _)| k == key) {
                if let Some((_, other_worker)) = self.before_set.take() {
                    other_worker();
                }
            }
            self.sets.push((key.to_owned(), cas));
            self.envoy.borrow_mut().set(key, value, cas)
        }
    }

    fn worker_read(envoy: &Rc<RefCell<MemoryStore>>, who: &str, second: u64) -> u64 {
        SharedCounter::new(Interleaved::new(envoy), no_random, Some(KEY_A))
            .recent_reads(who, at(second), MINUTE, true)
            .unwrap()
    }

    #[test]
    fn the_memory_store_has_envoys_cas_semantics() {
        let mut store = MemoryStore::default();
        // An absent key is created whatever the token.
        store.set("k", b"1", 12345).unwrap();
        let (value, cas) = store.get("k").unwrap();
        assert_eq!((value.as_deref(), cas), (Some(&b"1"[..]), 1));
        assert_eq!(store.set("k", b"2", cas + 1), Err(StoreError::CasMismatch));
        store.set("k", b"2", cas).unwrap();
        // Tokens come from one counter for all keys.
        store.set("j", b"", 0).unwrap();
        assert_eq!(store.get("j").unwrap().1, 3);
        // 0 means unconditional.
        store.set("k", b"3", 0).unwrap();
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"3"[..]));
        assert_eq!(store.get("absent").unwrap(), (None, 0));
        // The counter skips 0 when it wraps.
        let mut wrapping = MemoryStore::with_next_cas(u32::MAX);
        wrapping.set("a", b"", 0).unwrap();
        wrapping.set("b", b"", 0).unwrap();
        assert_eq!(wrapping.get("a").unwrap().1, u32::MAX);
        assert_eq!(wrapping.get("b").unwrap().1, 1);
    }

    #[test]
    fn counts_reads_within_the_window_and_forgets_older_ones() {
        let mut store = MemoryStore::default();
        for second in 0..30 {
            assert_eq!(read(&mut store, "ci", second), Ok(second + 1));
        }
        // Looking without counting changes nothing.
        assert_eq!(look(&mut store, "ci", 30), Ok(30));
        assert_eq!(look(&mut store, "ci", 30), Ok(30));
        // Halfway, about half of it remains (bucket granularity: a tenth of the window).
        let half = look(&mut store, "ci", 75).unwrap();
        assert!((10..=20).contains(&half), "{half}");
        // Two minutes later the burst has left the window.
        assert_eq!(read(&mut store, "ci", 150), Ok(1));
    }

    #[test]
    fn a_steady_rate_stays_bounded() {
        let mut store = MemoryStore::default();
        let mut last = 0;
        for second in 0..600 {
            last = read(&mut store, "ci", second).unwrap();
        }
        assert!((60..=66).contains(&last), "{last}");
        let (stored, _) = store.get(&slot_keys("ci")[0]).unwrap();
        assert!(stored.unwrap().len() <= TAG_BYTES + 11 * BUCKET_BYTES);
    }

    #[test]
    fn looking_never_writes() {
        let envoy = Rc::new(RefCell::new(MemoryStore::default()));
        worker_read(&envoy, "ci", 0);
        let mut store = Interleaved::new(&envoy);
        let mut counter = SharedCounter::new(&mut store, no_random, Some(KEY_A));
        assert_eq!(counter.recent_reads("ci", at(1), MINUTE, false), Ok(1));
        assert_eq!(counter.recent_reads("new", at(1), MINUTE, false), Ok(0));
        assert!(store.sets.is_empty(), "{:?}", store.sets);
    }

    /// The bug in issue #15: both workers found the slot absent and both
    /// wrote with CAS 0, so one read vanished.
    #[test]
    fn two_workers_creating_one_slot_both_count() {
        // The other worker creates the slot before or after this one takes
        // its creation token.
        for interrupted in [CAS_SOURCE.to_owned(), slot_keys("ci")[0].clone()] {
            let envoy = Rc::new(RefCell::new(MemoryStore::default()));
            let mut first = Interleaved::new(&envoy);
            let other = envoy.clone();
            first.before_set = Some((
                interrupted.clone(),
                Box::new(move || assert_eq!(worker_read(&other, "ci", 0), 1)),
            ));
            let seen = SharedCounter::new(&mut first, no_random, Some(KEY_A))
                .recent_reads("ci", at(0), MINUTE, true)
                .unwrap();
            assert!(first.before_set.is_none(), "the other worker never ran");
            assert_eq!(seen, 2, "interrupted at {interrupted}");
            assert_eq!(worker_read(&envoy, "ci", 1), 3);
            // Nothing the filter wrote to a slot was unconditional.
            assert!(first
                .sets
                .iter()
                .all(|(key, cas)| *cas != 0 || key == CAS_SOURCE));
        }
    }

    #[test]
    fn a_conflicting_update_is_retried_not_lost() {
        let envoy = Rc::new(RefCell::new(MemoryStore::default()));
        for second in 0..3 {
            worker_read(&envoy, "ci", second);
        }
        let mut first = Interleaved::new(&envoy);
        let other = envoy.clone();
        first.before_set = Some((
            slot_keys("ci")[0].clone(),
            Box::new(move || assert_eq!(worker_read(&other, "ci", 3), 4)),
        ));
        let seen = SharedCounter::new(&mut first, no_random, Some(KEY_A))
            .recent_reads("ci", at(3), MINUTE, true)
            .unwrap();
        assert_eq!(seen, 5);
        let slot_sets = first.sets.iter().filter(|(k, _)| k != CAS_SOURCE).count();
        assert_eq!(slot_sets, 2, "one refused write, one retried");
    }

    #[test]
    fn endless_conflicts_are_refused_not_ignored() {
        struct AlwaysConflicts(MemoryStore);
        impl SharedStore for AlwaysConflicts {
            fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
                self.0.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                if key.starts_with(KEY_PREFIX) && key != CAS_SOURCE && key != HASH_KEY {
                    return Err(StoreError::CasMismatch);
                }
                self.0.set(key, value, cas)
            }
        }
        let mut counter = SharedCounter::new(
            AlwaysConflicts(MemoryStore::default()),
            no_random,
            Some(KEY_A),
        );
        let err = counter.recent_reads("ci", at(0), MINUTE, true).unwrap_err();
        assert!(err.contains("kept changing"), "{err}");
    }

    #[test]
    fn host_errors_fail_the_count() {
        struct Broken;
        impl SharedStore for Broken {
            fn get(&mut self, _: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
                Err(StoreError::Host("proxy_get_shared_data failed".into()))
            }
            fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let err = SharedCounter::new(Broken, no_random, Some(KEY_A))
            .recent_reads("ci", at(0), MINUTE, false)
            .unwrap_err();
        assert!(err.contains("proxy_get_shared_data"), "{err}");
    }

    #[test]
    fn a_value_without_a_cas_token_is_not_overwritten() {
        struct NoTokens(MemoryStore);
        impl SharedStore for NoTokens {
            fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
                Ok((self.0.get(key)?.0, 0))
            }
            fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                self.0.set(key, value, cas)
            }
        }
        let mut store = MemoryStore::default();
        read(&mut store, "ci", 0).unwrap();
        let err = SharedCounter::new(NoTokens(store), no_random, Some(KEY_A))
            .recent_reads("ci", at(1), MINUTE, true)
            .unwrap_err();
        assert!(err.contains("CAS token"), "{err}");
    }

    /// FNV-1a slots could be collided on purpose, and a shared slot added
    /// the other principal's reads to this one's count.
    #[test]
    fn a_colliding_principal_neither_borrows_nor_erases_a_count() {
        let mut store = MemoryStore::default();
        let attacker = collider("victim");
        assert_eq!(slot_keys(&attacker)[0], slot_keys("victim")[0]);
        for second in 0..5 {
            read(&mut store, "victim", second).unwrap();
        }
        assert_eq!(read(&mut store, &attacker, 5), Ok(1));
        assert_eq!(look(&mut store, "victim", 6), Ok(5));
        assert_eq!(read(&mut store, "victim", 6), Ok(6));
        assert_eq!(look(&mut store, &attacker, 7), Ok(1));
    }

    #[test]
    fn a_principal_whose_slots_are_all_taken_is_refused() {
        let mut store = MemoryStore::default();
        for (i, key) in slot_keys("ci").iter().enumerate() {
            store.set(key, &foreign_slot(i as u8 + 1, 0, 9), 0).unwrap();
        }
        let err = read(&mut store, "ci", 10).unwrap_err();
        assert!(err.contains("other principals"), "{err}");
        // Looking still works: it has no reads.
        assert_eq!(look(&mut store, "ci", 10), Ok(0));
        // Nobody's reads were touched.
        for (i, key) in slot_keys("ci").iter().enumerate() {
            let stored = store.get(key).unwrap().0.unwrap();
            assert_eq!(stored, foreign_slot(i as u8 + 1, 0, 9));
        }
        // Once the other reads leave the window, a slot is taken over.
        assert_eq!(read(&mut store, "ci", 200), Ok(1));
    }

    #[test]
    fn a_slot_is_taken_over_only_when_its_reads_have_expired() {
        let mut store = MemoryStore::default();
        let keys = slot_keys("ci");
        store.set(&keys[0], &foreign_slot(1, 0, 9), 0).unwrap();
        store.set(&keys[1], b"garbage", 0).unwrap();
        // The live slot is skipped; the unreadable one is taken.
        assert_eq!(read(&mut store, "ci", 30), Ok(1));
        assert_eq!(
            store.get(&keys[0]).unwrap().0.unwrap(),
            foreign_slot(1, 0, 9)
        );
        let (taken, _) = store.get(&keys[1]).unwrap();
        assert_eq!(Slot::decode(&taken.unwrap()).unwrap().buckets.len(), 1);
        // Later, with the first slot's reads expired, the count stays where it is.
        assert_eq!(read(&mut store, "ci", 70), Ok(2));
        assert_eq!(
            store.get(&keys[0]).unwrap().0.unwrap(),
            foreign_slot(1, 0, 9)
        );
    }

    #[test]
    fn a_principal_found_in_two_slots_is_counted_in_both() {
        let mut store = MemoryStore::default();
        let keys = slot_keys("ci");
        let (_, tag) = placement(&KEY_A, "ci").unwrap();
        let mut slot = Slot::new(tag);
        slot.buckets.push((at(0).as_secs(), 3));
        store.set(&keys[0], &slot.encode(), 0).unwrap();
        slot.buckets[0].1 = 4;
        store.set(&keys[2], &slot.encode(), 0).unwrap();
        assert_eq!(look(&mut store, "ci", 1), Ok(7));
        assert_eq!(read(&mut store, "ci", 1), Ok(8));
    }

    #[test]
    fn slot_choice_depends_on_the_key() {
        let (slots_a, tag_a) = placement(&KEY_A, "repo:acme/api").unwrap();
        let (slots_b, tag_b) = placement(&[8; 32], "repo:acme/api").unwrap();
        assert_ne!(slots_a, slots_b);
        assert_ne!(tag_a, tag_b);
        assert_eq!(placement(&KEY_A, "repo:acme/api").unwrap().0, slots_a);
        let (others, _) = placement(&KEY_A, "repo:acme/web").unwrap();
        assert_ne!(others, slots_a);
        assert_eq!(slots_a.len(), PROBES);
        assert!(slots_a.iter().all(|i| *i < SLOTS));
    }

    #[test]
    fn workers_racing_to_make_the_key_agree_on_one() {
        let envoy = Rc::new(RefCell::new(MemoryStore::default()));
        let mut first = Interleaved::new(&envoy);
        let other = envoy.clone();
        first.before_set = Some((
            HASH_KEY.to_owned(),
            Box::new(move || {
                let mut second =
                    SharedCounter::new(Interleaved::new(&other), || Ok::<_, String>([2; 32]), None);
                assert_eq!(second.recent_reads("ci", at(0), MINUTE, true), Ok(1));
                assert_eq!(second.hash_key(), Some([2; 32]));
            }),
        ));
        let mut counter = SharedCounter::new(&mut first, || Ok::<_, String>([1; 32]), None);
        // Counted in the slot the other worker used, under its key.
        assert_eq!(counter.recent_reads("ci", at(0), MINUTE, true), Ok(2));
        assert_eq!(counter.hash_key(), Some([2; 32]));
        assert_eq!(
            envoy.borrow_mut().get(HASH_KEY).unwrap().0.as_deref(),
            Some(&[2u8; 32][..])
        );
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let mut store = MemoryStore::default();
        let mut made = 0;
        {
            let mut counter = SharedCounter::new(
                &mut store,
                || {
                    made += 1;
                    Ok([9; 32])
                },
                None,
            );
            counter.recent_reads("ci", at(0), MINUTE, true).unwrap();
            counter.recent_reads("ci", at(1), MINUTE, true).unwrap();
            assert_eq!(counter.hash_key(), Some([9; 32]));
        }
        assert_eq!(made, 1);
        // A later worker reads it instead of making one.
        let mut later = SharedCounter::new(&mut store, || Err("must not be called".into()), None);
        assert_eq!(later.recent_reads("ci", at(2), MINUTE, true), Ok(3));
        // No randomness, no key, no count: refused.
        let mut empty = MemoryStore::default();
        let err = SharedCounter::new(&mut empty, || Err("random_get failed".into()), None)
            .recent_reads("ci", at(0), MINUTE, true)
            .unwrap_err();
        assert!(err.contains("random_get"), "{err}");
        let mut bad = MemoryStore::default();
        bad.set(HASH_KEY, b"short", 0).unwrap();
        assert!(SharedCounter::new(&mut bad, no_random, None)
            .recent_reads("ci", at(0), MINUTE, false)
            .is_err());
    }

    /// No fixed token is safe for creation: every value but 0 is issued
    /// eventually. Here the competing creation gets `u32::MAX`, and the
    /// retried update makes the counter wrap.
    #[test]
    fn creation_never_overwrites_whatever_token_the_slot_has() {
        // Ours: the creation token, then the other worker's token and slot.
        let envoy = Rc::new(RefCell::new(MemoryStore::with_next_cas(u32::MAX - 2)));
        let mut first = Interleaved::new(&envoy);
        let other = envoy.clone();
        first.before_set = Some((
            slot_keys("ci")[0].clone(),
            Box::new(move || assert_eq!(worker_read(&other, "ci", 0), 1)),
        ));
        let seen = SharedCounter::new(&mut first, no_random, Some(KEY_A))
            .recent_reads("ci", at(0), MINUTE, true)
            .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(envoy.borrow_mut().get(&slot_keys("ci")[0]).unwrap().1, 1);
    }

    #[test]
    fn garbage_in_a_slot_starts_afresh() {
        for garbage in [&b""[..], b"\xff", &[0; TAG_BYTES + 5]] {
            let mut store = MemoryStore::default();
            store.set(&slot_keys("ci")[0], garbage, 0).unwrap();
            assert_eq!(read(&mut store, "ci", 0), Ok(1));
        }
    }
}
