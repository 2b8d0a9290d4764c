//! A Bloom filter over the SQLite intake's stored idempotency keys: a key it has never
//! seen is new without a lookup in the key index.
//!
//! GitLab's keys are random UUIDs, so each lookup in `delivery_keys` (or the older rows'
//! `dedupe_key`) lands on a random leaf of an index far larger than the connection's page
//! cache: a read from the file for nearly every delivery, on the intake's thread, only
//! to learn that a fresh key is fresh (docs/operations.md, "Intake benchmark"). The
//! filter answers "maybe" for every key added to it and "no" for almost every other
//! one (at most about 1 % answer "maybe" and are looked up). It only ever has to be a
//! superset of the stored keys: keys that retention deleted, or that a rolled-back
//! transaction never stored, cost a lookup when they come back, nothing more.
//!
//! At open the stored keys are read once and hashed (8 bytes each, for the moment it
//! takes), and the first filter is sized for them. It grows as keys come: when the
//! newest filter holds its capacity, a filter of twice that is added (a scalable Bloom
//! filter), so memory stays at 1.25 to 2.5 bytes per key (each filter's bits are
//! rounded up to a power of two) and a small store's filter stays small.

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
/// open), as Bloom filters of growing capacity: the one keys go into, and full ones.
pub struct KeyFilter {
    hasher: std::hash::RandomState,
    newest: Bits,
    full: Vec<Bits>,
}

/// The keys stored at open, hashed in the one pass over them, so that the first filter
/// is sized for them without counting them first ([`KeyFilter::build`]).
pub struct Stored {
    hasher: std::hash::RandomState,
    hashes: Vec<u64>,
}

impl Stored {
    /// Hashes a stored key.
    pub fn add(&mut self, key: &str) {
        self.hashes.push(self.hasher.hash_one(key));
    }
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
    /// Where the keys stored at open go before the filter is built.
    pub fn stored() -> Stored {
        Stored {
            hasher: std::hash::RandomState::new(),
            hashes: Vec::new(),
        }
    }

    /// A filter of the `stored` keys, sized for them (and at least [`FIRST_CAPACITY`]).
    pub fn build(stored: Stored) -> KeyFilter {
        let mut filter = KeyFilter {
            hasher: stored.hasher,
            newest: Bits::with_capacity(stored.hashes.len().max(FIRST_CAPACITY)),
            full: Vec::new(),
        };
        for hash in stored.hashes {
            filter.add(hash);
        }
        filter
    }

    /// Adds `key`.
    pub fn insert(&mut self, key: &str) {
        self.add(self.hasher.hash_one(key));
    }

    /// Adds a key's hash; once the newest filter holds its capacity, into one of twice that.
    fn add(&mut self, hash: u64) {
        if self.newest.keys >= self.newest.capacity {
            let next = Bits::with_capacity(self.newest.capacity * 2);
            self.full.push(std::mem::replace(&mut self.newest, next));
        }
        self.newest.insert(hash);
    }

    /// False when `key` was certainly never added; true when it may have been.
    pub fn may_contain(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.newest.contains(hash) || self.full.iter().any(|f| f.contains(hash))
    }

    /// The filters' bytes (for tests and the docs' memory figures).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        std::iter::once(&self.newest)
            .chain(&self.full)
            .map(|f| f.words.len() * 8)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_added_may_be_there_and_few_others_seem_to_be() {
        let mut filter = KeyFilter::build(KeyFilter::stored());
        // Past the first filter's capacity, so a second one is added and asked too.
        let added = FIRST_CAPACITY + 20_000;
        for i in 0..added {
            filter.insert(&format!("key-{i}"));
        }
        assert_eq!(
            filter.full.len(),
            1,
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
        assert_eq!(KeyFilter::build(KeyFilter::stored()).bytes(), 128 * 1024);
        let mut stored = KeyFilter::stored();
        for i in 0..1_000_000 {
            stored.add(&format!("stored-{i}"));
        }
        let big = KeyFilter::build(stored);
        assert!(
            big.full.is_empty(),
            "one filter holds the keys stored at open"
        );
        assert!(big.bytes() <= 2 * 1_000_000 * BITS_PER_KEY / 8);
        assert!(big.may_contain("stored-999999"));
    }
}
