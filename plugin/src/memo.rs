//! A bounded memo table: values that are pure functions of their key and
//! costly to build, kept for the requests that follow.
//!
//! Bounded by emptying it when full, so memory never grows with the number
//! of distinct keys ever seen, and no bookkeeping is paid per hit. A memo
//! belongs to one loaded configuration and is dropped with it, so a new
//! policy bundle never sees values built for the old one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::sync::Mutex;

pub struct Memo<K, V> {
    capacity: usize,
    table: Mutex<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Memo<K, V> {
        Memo {
            capacity,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`, built by `build` and kept if it is not there.
    pub fn get_or_insert(&self, key: K, build: impl FnOnce() -> V) -> V {
        match self.get_or_try_insert(key, || Ok::<V, Infallible>(build())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`Memo::get_or_insert`] for a build that can fail.
    /// A failed build is not kept, so an error is never served from memory.
    pub fn get_or_try_insert<E>(
        &self,
        key: K,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        // The lock is held only to look up and to store, never while
        // building. A poisoned lock (a panic elsewhere, never in the filter,
        // which aborts) only means building without the memo.
        if let Ok(table) = self.table.lock() {
            if let Some(value) = table.get(&key) {
                return Ok(value.clone());
            }
        }
        let value = build()?;
        if let Ok(mut table) = self.table.lock() {
            if table.len() >= self.capacity {
                table.clear();
            }
            table.insert(key, value.clone());
        }
        Ok(value)
    }

    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn builds_once_per_key_and_never_keeps_a_failure() {
        let memo: Memo<&str, u32> = Memo::new(8);
        let builds = Cell::new(0);
        let build = |v| {
            builds.set(builds.get() + 1);
            Ok::<_, ()>(v)
        };
        assert_eq!(memo.get_or_try_insert("a", || build(1)), Ok(1));
        assert_eq!(memo.get_or_try_insert("a", || build(2)), Ok(1));
        assert_eq!(builds.get(), 1);
        assert_eq!(
            memo.get_or_try_insert("b", || Err::<u32, _>("no")),
            Err("no")
        );
        assert_eq!(memo.get_or_try_insert("b", || build(3)), Ok(3));
        assert_eq!(builds.get(), 2);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let memo: Memo<u32, u32> = Memo::new(4);
        for key in 0..100 {
            assert_eq!(
                memo.get_or_try_insert(key, || Ok::<_, ()>(key * 2)),
                Ok(key * 2)
            );
            assert!(memo.len() <= 4);
        }
        // Still right after being emptied.
        assert_eq!(memo.get_or_try_insert(3, || Ok::<_, ()>(6)), Ok(6));
    }
}
