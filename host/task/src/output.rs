//! Routing a chain's output records to output channels, in batches.

use sluice_types::{Batch, BatchBuilder, Partitioning, keygroup};

/// When a pending output batch is sent.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Send once a batch holds this many records.
    pub records: usize,
    /// Send once a batch holds this many bytes of keys and values.
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            records: 1024,
            bytes: 256 * 1024,
        }
    }
}

/// Why a record could not be routed.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingKey;

struct Output {
    partitioning: Partitioning,
    /// Channel ids, indexed by target subtask (one for forward).
    channels: Vec<u32>,
    pending: Vec<BatchBuilder>,
    next: usize,
}

/// Partitions records among a subtask's output edges.
///
/// ```
/// use sluice_task::{BatchLimits, OutputRouter};
/// use sluice_types::{BatchBuilder, Partitioning};
///
/// // One hash edge to 2 subtasks on channels 7 and 8; max parallelism 128.
/// let mut r = OutputRouter::new(128, BatchLimits { records: 2, bytes: 1 << 20 });
/// r.add_output(Partitioning::Hash, vec![7, 8]);
/// let mut b = BatchBuilder::new();
/// for w in ["a", "b", "c", "a"] { b.push(Some(w.as_bytes()), b"", None); }
/// let mut sent = Vec::new();
/// r.route(&b.take(), &mut |ch, batch| sent.push((ch, batch.len()))).unwrap();
/// r.flush(&mut |ch, batch| sent.push((ch, batch.len())));
/// assert_eq!(sent.iter().map(|(_, n)| n).sum::<usize>(), 4);
/// ```
pub struct OutputRouter {
    outputs: Vec<Output>,
    max_parallelism: u32,
    limits: BatchLimits,
}

impl OutputRouter {
    /// A router with no outputs yet.
    pub fn new(max_parallelism: u32, limits: BatchLimits) -> Self {
        OutputRouter {
            outputs: Vec::new(),
            max_parallelism,
            limits,
        }
    }

    /// Adds an output edge whose channels are indexed by target subtask.
    pub fn add_output(&mut self, partitioning: Partitioning, channels: Vec<u32>) {
        let pending = channels.iter().map(|_| BatchBuilder::new()).collect();
        self.outputs.push(Output {
            partitioning,
            channels,
            pending,
            next: 0,
        });
    }

    /// Every output channel id.
    pub fn channels(&self) -> impl Iterator<Item = u32> + '_ {
        self.outputs.iter().flat_map(|o| o.channels.iter().copied())
    }

    /// Routes `batch`; full pending batches go to `send(channel, batch)`.
    /// Fails if a hash edge receives a record without a key.
    pub fn route(
        &mut self,
        batch: &Batch,
        send: &mut dyn FnMut(u32, Batch),
    ) -> Result<(), MissingKey> {
        let limits = self.limits;
        for o in &mut self.outputs {
            let n = o.channels.len();
            for r in batch.iter() {
                let targets = match o.partitioning {
                    Partitioning::Forward => 0..1,
                    Partitioning::Hash => {
                        let key = r.key.ok_or(MissingKey)?;
                        let kg = keygroup::key_group(key, self.max_parallelism);
                        let t = keygroup::owner(kg, self.max_parallelism, n as u32) as usize;
                        t..t + 1
                    }
                    Partitioning::Rebalance => {
                        let t = o.next;
                        o.next = (o.next + 1) % n;
                        t..t + 1
                    }
                    Partitioning::Broadcast => 0..n,
                };
                for t in targets {
                    let b = &mut o.pending[t];
                    b.push_record(&r);
                    if b.len() >= limits.records || b.bytes() >= limits.bytes {
                        send(o.channels[t], b.take());
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends every non-empty pending batch.
    pub fn flush(&mut self, send: &mut dyn FnMut(u32, Batch)) {
        for o in &mut self.outputs {
            for (t, b) in o.pending.iter_mut().enumerate() {
                if !b.is_empty() {
                    send(o.channels[t], b.take());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hash_routing_sends_each_key_to_the_subtask_owning_its_key_group() {
        let mut r = OutputRouter::new(
            128,
            BatchLimits {
                records: 3,
                bytes: 1 << 20,
            },
        );
        r.add_output(Partitioning::Hash, vec![10, 11, 12, 13]);
        let mut b = BatchBuilder::new();
        let words: Vec<String> = (0..500).map(|i| format!("w{}", i % 37)).collect();
        for w in &words {
            b.push(Some(w.as_bytes()), b"", None);
        }
        let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut total = 0;
        let mut check = |ch: u32, batch: Batch| {
            for rec in batch.iter() {
                let key = rec.key.expect("keyed").to_vec();
                let want = keygroup::owner(keygroup::key_group(&key, 128), 128, 4) + 10;
                assert_eq!(ch, want);
                assert_eq!(*seen.entry(key).or_insert(ch), ch);
                total += 1;
            }
        };
        r.route(&b.take(), &mut check).expect("keys present");
        r.flush(&mut check);
        assert_eq!(total, 500);
    }

    #[test]
    fn rebalance_spreads_evenly_and_broadcast_copies_to_all() {
        let mut r = OutputRouter::new(128, BatchLimits::default());
        r.add_output(Partitioning::Rebalance, vec![0, 1, 2]);
        r.add_output(Partitioning::Broadcast, vec![3, 4]);
        let mut b = BatchBuilder::new();
        for i in 0..9u8 {
            b.push(None, &[i], None);
        }
        let mut counts: HashMap<u32, usize> = HashMap::new();
        r.route(&b.take(), &mut |ch, batch| {
            *counts.entry(ch).or_default() += batch.len()
        })
        .expect("no hash edge");
        r.flush(&mut |ch, batch| *counts.entry(ch).or_default() += batch.len());
        assert_eq!(
            counts,
            HashMap::from([(0, 3), (1, 3), (2, 3), (3, 9), (4, 9)])
        );
    }

    #[test]
    fn a_record_without_a_key_on_a_hash_edge_is_an_error() {
        let mut r = OutputRouter::new(128, BatchLimits::default());
        r.add_output(Partitioning::Hash, vec![0, 1]);
        let mut b = BatchBuilder::new();
        b.push(None, b"x", None);
        assert_eq!(r.route(&b.take(), &mut |_, _| {}), Err(MissingKey));
    }
}
