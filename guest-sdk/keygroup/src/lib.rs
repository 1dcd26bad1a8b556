//! Key groups: how Sluice maps a record's key to state and to a subtask.
//!
//! A job has a fixed number of key groups (its *max-parallelism*). A key
//! belongs to key group `xxh3_64(key) % max_parallelism`; subtask `i` of an
//! operator with parallelism `p` owns a contiguous range of key groups. Keyed
//! state is snapshotted per key group, so a job restored at another
//! parallelism hands whole key groups to new owners.
//!
//! The host (which routes records by key) and the guest SDK (which partitions
//! state) both use this crate, so they can never disagree. It has no
//! dependency on either.
//!
//! ```
//! use sluice_keygroup::{key_group, owner, range};
//! let (max_par, par) = (128, 4);
//! let kg = key_group(b"hello", max_par);
//! let subtask = owner(kg, max_par, par);
//! assert!(range(subtask, max_par, par).contains(&kg));
//! ```
#![no_std]
#![warn(missing_docs)]

use core::ops::Range;

/// The default number of key groups when a job does not set one.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// Hash of a key, as used for routing and state placement.
#[inline]
pub fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The key group of `key` among `max_parallelism` groups (`max_parallelism > 0`).
#[inline]
pub fn key_group(key: &[u8], max_parallelism: u32) -> u32 {
    (hash(key) % u64::from(max_parallelism.max(1))) as u32
}

/// The subtask (of `parallelism`) that owns key group `kg`.
#[inline]
pub fn owner(kg: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    let max = u64::from(max_parallelism.max(1));
    (u64::from(kg) * u64::from(parallelism) / max) as u32
}

/// The key groups owned by `subtask` of `parallelism`: exactly those `kg` with
/// `owner(kg, ..) == subtask`.
pub fn range(subtask: u32, max_parallelism: u32, parallelism: u32) -> Range<u32> {
    let (s, m, p) = (
        u64::from(subtask),
        u64::from(max_parallelism.max(1)),
        u64::from(parallelism.max(1)),
    );
    // The first kg with kg * p / m >= s is ceil(s * m / p).
    let start = (s * m).div_ceil(p);
    let end = ((s + 1) * m).div_ceil(p);
    (start as u32)..(end.min(m) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_consistently_with_owner() {
        for m in [1u32, 2, 7, 128, 1000] {
            for p in 1..=m.min(33) {
                let mut next = 0;
                for s in 0..p {
                    let r = range(s, m, p);
                    assert_eq!(r.start, next, "m={m} p={p} s={s}");
                    for kg in r.clone() {
                        assert_eq!(owner(kg, m, p), s, "m={m} p={p} kg={kg}");
                    }
                    next = r.end;
                }
                assert_eq!(next, m);
            }
        }
    }
}
