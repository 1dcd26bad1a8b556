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

/// Why a batch could not be routed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A record without a key met a hash edge.
    #[error("a record without a key met a hash edge")]
    MissingKey,
    /// The batch's metadata does not fit its data (a bug upstream: batches
    /// from guests and peers are validated before they get here).
    #[error("a malformed batch reached the router")]
    Malformed,
}

struct Output {
    partitioning: Partitioning,
    /// Channel ids, indexed by target subtask (one for forward).
    channels: Vec<u32>,
    pending: Vec<BatchBuilder>,
    next: usize,
}

impl Output {
    /// Passes all of `batch` to the only target (see
    /// [`OutputRouter::route`]).
    fn take_whole(
        &mut self,
        mut batch: Batch,
        limits: BatchLimits,
        send: &mut dyn FnMut(u32, Batch),
    ) -> Result<(), RouteError> {
        if self.partitioning == Partitioning::Hash
            && batch.meta.iter().any(|m| m.key_len == sluice_types::NO_KEY)
        {
            return Err(RouteError::MissingKey);
        }
        // Bytes past the last record would shift every record appended
        // after them.
        let used: u64 = batch.meta.iter().map(|m| m.data_len()).sum();
        let used = usize::try_from(used)
            .ok()
            .filter(|&n| n <= batch.data.len())
            .ok_or(RouteError::Malformed)?;
        batch.data.truncate(used);
        if batch.len() <= limits.records && used <= limits.bytes {
            // Within one batch: what is pending goes first if the two do
            // not fit together, and the batch is moved in, not copied.
            let pending = &mut self.pending[0];
            if pending.len() + batch.len() > limits.records || pending.bytes() + used > limits.bytes
            {
                send(self.channels[0], pending.take());
            }
            self.pending[0].append(batch);
            self.send_if_full(0, limits, send);
            return Ok(());
        }
        // Past the limits: in runs that fill the pending batch up to them,
        // so that, as record by record, no batch sent holds more than the
        // record limit or more than one record past the byte limit.
        let (mut first, mut byte) = (0, 0);
        while first < batch.len() {
            let pending = &self.pending[0];
            let records = limits.records.saturating_sub(pending.len());
            let bytes = limits.bytes.saturating_sub(pending.bytes()) as u64;
            let (mut end, mut run) = (first, 0u64);
            while end < batch.len() && end - first < records {
                let len = batch.meta[end].data_len();
                // At least one record per run, however large.
                if end > first && run + len > bytes {
                    break;
                }
                run += len;
                end += 1;
            }
            let end = end.max(first + 1);
            byte = self.pending[0]
                .extend_from(&batch, first..end, byte)
                .ok_or(RouteError::Malformed)?;
            first = end;
            self.send_if_full(0, limits, send);
        }
        Ok(())
    }

    fn send_if_full(&mut self, t: usize, limits: BatchLimits, send: &mut dyn FnMut(u32, Batch)) {
        let b = &mut self.pending[t];
        if b.len() >= limits.records || b.bytes() >= limits.bytes {
            send(self.channels[t], b.take());
        }
    }
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
/// r.route(b.take(), &mut |ch, batch| sent.push((ch, batch.len()))).unwrap();
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
    ///
    /// Forward and broadcast edges take the batch whole; a rebalance edge
    /// cuts it into one run of consecutive records per target subtask,
    /// equal but for one record, and the targets that get the extra record
    /// rotate from batch to batch, so the spread stays even; a hash edge
    /// routes record by record. Fails if a hash edge receives a record
    /// without a key.
    ///
    /// With a single output edge to a single subtask (a forward edge, or
    /// any edge into parallelism 1) the batch is moved on rather than copied record by
    /// record: what is pending is sent first if the two would not fit in
    /// one batch, and a batch past the limits is cut into runs.
    pub fn route(
        &mut self,
        batch: Batch,
        send: &mut dyn FnMut(u32, Batch),
    ) -> Result<(), RouteError> {
        let limits = self.limits;
        if let [o] = self.outputs.as_mut_slice()
            && let [_] = o.channels.as_slice()
        {
            return o.take_whole(batch, limits, send);
        }
        let batch = &batch;
        let total = batch.len();
        for o in &mut self.outputs {
            let n = o.channels.len();
            match o.partitioning {
                Partitioning::Hash => {
                    for r in batch.iter() {
                        let key = r.key.ok_or(RouteError::MissingKey)?;
                        let kg = keygroup::key_group(key, self.max_parallelism);
                        let t = keygroup::owner(kg, self.max_parallelism, n as u32) as usize;
                        o.pending[t].push_record(&r);
                        o.send_if_full(t, limits, send);
                    }
                }
                Partitioning::Forward | Partitioning::Broadcast => {
                    for t in 0..n {
                        o.pending[t]
                            .extend_from(batch, 0..total, 0)
                            .ok_or(RouteError::Malformed)?;
                        o.send_if_full(t, limits, send);
                    }
                }
                Partitioning::Rebalance => {
                    let (mut record, mut byte) = (0, 0);
                    for i in 0..n {
                        let t = (o.next + i) % n;
                        let run = total / n + usize::from(i < total % n);
                        if run == 0 {
                            continue;
                        }
                        byte = o.pending[t]
                            .extend_from(batch, record..record + run, byte)
                            .ok_or(RouteError::Malformed)?;
                        record += run;
                        o.send_if_full(t, limits, send);
                    }
                    o.next = (o.next + total % n) % n;
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
    fn hash_routing_places_the_golden_keys_where_every_sdk_expects_them() {
        // guest-sdk/golden: the placements the SDKs' keyed state assumes.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../guest-sdk/golden/vectors.json"
        ))
        .expect("golden vectors");
        let vectors: serde_json::Value = serde_json::from_str(&text).expect("json");
        let mut checked = 0;
        for case in vectors["key_groups"].as_array().expect("cases") {
            let key = hex::decode(case["key_hex"].as_str().expect("key")).expect("hex");
            for g in case["groups"].as_array().expect("groups") {
                let max = g["max_parallelism"].as_u64().expect("max") as u32;
                for (p, want) in g["owner_by_parallelism"].as_object().expect("owners") {
                    let p: u32 = p.parse().expect("parallelism");
                    let mut r = OutputRouter::new(
                        max,
                        BatchLimits {
                            records: 1,
                            bytes: 1 << 20,
                        },
                    );
                    r.add_output(Partitioning::Hash, (100..100 + p).collect());
                    let mut b = BatchBuilder::new();
                    b.push(Some(&key), b"", None);
                    let mut to = Vec::new();
                    r.route(b.take(), &mut |ch, _| to.push(ch)).expect("keyed");
                    r.flush(&mut |ch, _| to.push(ch));
                    let want = want.as_u64().expect("owner") as u32;
                    assert_eq!(to, [100 + want], "max {max} parallelism {p}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked} placements");
    }

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
        r.route(b.take(), &mut check).expect("keys present");
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
        r.route(b.take(), &mut |ch, batch| {
            *counts.entry(ch).or_default() += batch.len()
        })
        .expect("no hash edge");
        r.flush(&mut |ch, batch| *counts.entry(ch).or_default() += batch.len());
        assert_eq!(
            counts,
            HashMap::from([(0, 3), (1, 3), (2, 3), (3, 9), (4, 9)])
        );
    }

    proptest::proptest! {
        #[test]
        fn rebalance_delivers_every_record_once_in_runs_and_stays_even(
            batches in proptest::collection::vec(0usize..40, 0..12),
            targets in 1usize..5,
            limit in 1usize..20,
        ) {
            let mut r = OutputRouter::new(128, BatchLimits { records: limit, bytes: 1 << 20 });
            r.add_output(Partitioning::Rebalance, (0..targets as u32).collect());
            let mut got: Vec<Vec<u32>> = vec![Vec::new(); targets];
            let mut keep = |ch: u32, batch: Batch| {
                got[ch as usize].extend(batch.iter().map(|rec| {
                    u32::from_le_bytes(rec.value.try_into().expect("4 bytes"))
                }));
            };
            let mut next = 0u32;
            for size in &batches {
                let mut b = BatchBuilder::new();
                for _ in 0..*size {
                    b.push(None, &next.to_le_bytes(), None);
                    next += 1;
                }
                r.route(b.take(), &mut keep).expect("no hash edge");
            }
            r.flush(&mut keep);
            let counts: Vec<usize> = got.iter().map(Vec::len).collect();
            let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
            proptest::prop_assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1, "{:?}", counts);
            for channel in &got {
                proptest::prop_assert!(channel.windows(2).all(|w| w[0] < w[1]), "order kept");
            }
            let mut all: Vec<u32> = got.concat();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, (0..next).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_batch_whose_metadata_overruns_its_data_is_refused_not_sliced() {
        let mut r = OutputRouter::new(128, BatchLimits::default());
        r.add_output(Partitioning::Rebalance, vec![0, 1]);
        let bad = Batch {
            data: vec![1, 2],
            meta: vec![
                sluice_types::RecordMeta {
                    key_len: sluice_types::NO_KEY,
                    value_len: 2,
                    timestamp: sluice_types::NO_TIMESTAMP,
                };
                2
            ],
        };
        assert_eq!(
            r.route(bad.clone(), &mut |_, _| {}),
            Err(RouteError::Malformed)
        );
        // The same through the whole-batch path of a single target.
        let mut single = OutputRouter::new(128, BatchLimits::default());
        single.add_output(Partitioning::Forward, vec![0]);
        let mut sent = 0;
        assert_eq!(
            single.route(bad, &mut |_, _| sent += 1),
            Err(RouteError::Malformed)
        );
        single.flush(&mut |_, _| sent += 1);
        assert_eq!(sent, 0);
    }

    #[test]
    fn a_record_without_a_key_on_a_hash_edge_is_an_error() {
        for targets in [vec![0, 1], vec![0]] {
            let mut r = OutputRouter::new(128, BatchLimits::default());
            r.add_output(Partitioning::Hash, targets);
            let mut b = BatchBuilder::new();
            b.push(Some(b"k"), b"keyed", None);
            b.push(None, b"x", None);
            assert_eq!(
                r.route(b.take(), &mut |_, _| {}),
                Err(RouteError::MissingKey)
            );
        }
    }

    #[test]
    fn a_single_target_gets_the_batch_itself_when_nothing_is_pending() {
        let mut r = OutputRouter::new(
            128,
            BatchLimits {
                records: 3,
                bytes: 1 << 20,
            },
        );
        r.add_output(Partitioning::Hash, vec![5]);
        let mut b = BatchBuilder::new();
        for w in ["a", "b", "c"] {
            b.push(Some(w.as_bytes()), b"v", None);
        }
        let batch = b.take();
        let data = batch.data.as_ptr();
        let mut sent = Vec::new();
        r.route(batch, &mut |ch, b| sent.push((ch, b)))
            .expect("keyed");
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].0, sent[0].1.len()), (5, 3));
        assert_eq!(sent[0].1.data.as_ptr(), data, "moved, not copied");
    }

    proptest::proptest! {
        #[test]
        fn a_single_target_gets_every_record_once_in_order_whatever_trails_the_data(
            batches in proptest::collection::vec((0usize..40, 0usize..4), 0..12),
            hash in proptest::bool::ANY,
            limit in 1usize..50,
            byte_limit in 1usize..200,
        ) {
            let mut r = OutputRouter::new(128, BatchLimits { records: limit, bytes: byte_limit });
            let edge = if hash { Partitioning::Hash } else { Partitioning::Forward };
            r.add_output(edge, vec![3]);
            let mut got = Vec::new();
            let mut keep = |ch: u32, batch: Batch| {
                assert_eq!(ch, 3);
                batch.validate().expect("valid");
                let used: u64 = batch.meta.iter().map(|m| m.data_len()).sum();
                assert_eq!(used, batch.data.len() as u64, "no stray bytes");
                // Within the limits (one 5-byte record may cross the byte limit).
                assert!(batch.len() <= limit, "{} records", batch.len());
                assert!(batch.data.len() < byte_limit + 5, "{} bytes", batch.data.len());
                got.extend(batch.iter().map(|rec| {
                    assert_eq!(rec.key, Some(&b"k"[..]));
                    u32::from_le_bytes(rec.value.try_into().expect("4 bytes"))
                }));
            };
            let mut next = 0u32;
            for (size, junk) in &batches {
                let mut b = BatchBuilder::new();
                for _ in 0..*size {
                    b.push(Some(b"k"), &next.to_le_bytes(), None);
                    next += 1;
                }
                let mut batch = b.take();
                // Bytes past the last record (a guest may leave some).
                batch.data.extend(std::iter::repeat_n(0xEE, *junk));
                r.route(batch, &mut keep).expect("routes");
            }
            r.flush(&mut keep);
            proptest::prop_assert_eq!(got, (0..next).collect::<Vec<_>>());
        }
    }
}
