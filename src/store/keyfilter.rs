//! A Bloom filter over the SQLite intake's stored idempotency keys: a key it has never
//! seen is new without a lookup in the key index.
//!
//! GitLab's keys are random UUIDs, so each lookup in `delivery_keys` (or the older rows'
//! `dedupe_key`) lands on a random leaf of an index far larger than the connection's page
//! cache: a read from the file for nearly every delivery, on the intake's thread, only
//! to learn that a fresh key is fresh (docs/operations.md, "Intake benchmark"). The
//! filter answers "maybe" for every key added to it and "no" for almost every other
//! one (at most about 1 % answer "maybe" and are looked up). It only ever has to be a superset
//! of the stored keys: keys that retention deleted, or that a rolled-back transaction
//! never stored, cost a lookup when they come back, nothing more.
//!
//! It grows as keys come: when the newest filter holds its capacity, a filter of twice
//! that is added (a scalable Bloom filter), so memory stays at 1.25 to 2.5 bytes per key
//! (each filter's bits are rounded up to a power of two) and a small store's filter
//! stays small.

use std::hash::BuildHasher;

/// Bits per key a filter is sized for at least: with [`HASHES`] probes, at most about
/// 0.8 % false "maybe".
const BITS_PER_KEY: usize = 10;

/// Bits probed per key.
const HASHES: u64 = 7;

/// The first filter's capacity in keys (128 KB of bits, touched only as keys come): room
/// for a quiet store's keys of months without a second filter.
const FIRST_CAPACITY: usize = 65_536;

/// Every key the intake stored since it opened, and every one stored before (added at
/// open), as a list of Bloom filters of growing capacity.
pub struct KeyFilter {
    hasher: std::hash::RandomState,
    filters: Vec<Bits>,
}

/// One Bloom filter: a power of two of bits, and how many keys went in.
struct Bits {
    words: Vec<u64>,
    /// The number of bits less one (a power of two less one: a mask).
    mask: u64,
    keys: usize,
    capacity: usize,
}

impl Bits {
    fn with_capacity(capacity: usize) -> Bits {
        let bits = (capacity * BITS_PER_KEY).next_power_of_two().max(64);
        Bits {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
            keys: 0,
            capacity,
        }
    }

    /// The bits of a key with hash `hash` (double hashing: `h1 + i·h2`, `h2` odd).
    fn positions(&self, hash: u64) -> impl Iterator<Item = u64> + use<> {
        let (h1, h2) = (hash, hash.rotate_left(32) | 1);
        let mask = self.mask;
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }

    fn insert(&mut self, hash: u64) {
        for bit in self.positions(hash) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.keys += 1;
    }

    fn contains(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

impl KeyFilter {
    /// An empty filter sized for `expected` keys (those about to be added at open).
    pub fn with_capacity(expected: usize) -> KeyFilter {
        KeyFilter {
            hasher: std::hash::RandomState::new(),
            filters: vec![Bits::with_capacity(expected.max(FIRST_CAPACITY))],
        }
    }

    /// Adds `key`.
    pub fn insert(&mut self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let full = self
            .filters
            .last()
            .is_none_or(|last| last.keys >= last.capacity);
        if full {
            let capacity = self
                .filters
                .last()
                .map_or(FIRST_CAPACITY, |last| last.capacity * 2);
            self.filters.push(Bits::with_capacity(capacity));
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert(hash);
        }
    }

    /// False when `key` was certainly never added; true when it may have been.
    pub fn may_contain(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.filters.iter().any(|f| f.contains(hash))
    }

    /// The filters' bytes (for tests and the docs' memory figures).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.filters.iter().map(|f| f.words.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_added_may_be_there_and_few_others_seem_to_be() {
        let mut filter = KeyFilter::with_capacity(0);
        // Past the first filter's capacity, so a second one is added and asked too.
        let added = FIRST_CAPACITY + 20_000;
        for i in 0..added {
            filter.insert(&format!("key-{i}"));
        }
        assert_eq!(
            filter.filters.len(),
            2,
            "a second filter once the first is full"
        );
        for i in 0..added {
            assert!(filter.may_contain(&format!("key-{i}")), "key-{i} was added");
        }
        let others = 100_000;
        let maybe = (0..others)
            .filter(|i| filter.may_contain(&format!("other-{i}")))
            .count();
        // At most about 0.8 % per filter, two filters asked.
        assert!(
            maybe < others / 50,
            "{maybe} of {others} unseen keys answered maybe"
        );
        assert!(
            maybe > 0,
            "a Bloom filter of this size answers maybe for some"
        );
    }

    #[test]
    fn sized_for_the_keys_at_open_and_small_when_there_are_few() {
        assert_eq!(KeyFilter::with_capacity(0).bytes(), 128 * 1024);
        let big = KeyFilter::with_capacity(1_000_000);
        assert_eq!(big.filters.len(), 1);
        assert!(big.bytes() <= 2 * 1_000_000 * BITS_PER_KEY / 8);
    }
}
