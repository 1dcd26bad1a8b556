//! A data generator: `count` records in all, split across subtasks.

use serde::{Deserialize, Serialize};
use sluice_types::BatchBuilder;

use crate::{ConnectorError, Poll, Source};

/// One arithmetic sequence of indices: `next, next + step, ... < count`,
/// the position of a generating source (`datagen`, `nexmark`). Subtask `s`
/// of `p` starts with `s, s + p, ...`; restored at another parallelism, a
/// subtask continues each sequence it was given, one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Split {
    next: u64,
    step: u64,
}

impl Split {
    /// Subtask `subtask` of `parallelism`'s share.
    pub(crate) fn new(subtask: u32, parallelism: u32) -> Self {
        Split {
            next: u64::from(subtask),
            step: u64::from(parallelism.max(1)),
        }
    }

    /// The next index below `count`, taken.
    pub(crate) fn take(&mut self, count: u64) -> Option<u64> {
        (self.next < count).then(|| {
            let i = self.next;
            // A restored position is data: never overflow on it.
            self.next = self.next.saturating_add(self.step);
            i
        })
    }

    /// The next index it would take.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Whether every index below `count` was taken.
    pub(crate) fn done(&self, count: u64) -> bool {
        self.next >= count
    }

    /// Whether the split is usable (a restored one might not be).
    pub(crate) fn valid(&self) -> bool {
        self.step > 0
    }

    /// `Finished` once all `splits` took every index below `count`.
    pub(crate) fn poll(splits: &[Split], count: u64) -> Poll {
        if splits.iter().all(|s| s.done(count)) {
            Poll::Finished
        } else {
            Poll::More
        }
    }

    /// The position of a source made of `splits`.
    pub(crate) fn snapshot(splits: &[Split]) -> Vec<u8> {
        postcard::to_allocvec(splits).expect("invariant: splits serialise")
    }
}

/// Subtask `s` of `p` emits indices `s, s+p, s+2p, ... < count`; the value is
/// the index in decimal, right-padded with `.` to `value_bytes` when that is
/// longer; the key `k{index % keys}` when `keys > 0`. Restored from a
/// checkpoint taken at another parallelism, a subtask continues every
/// sequence it was given, one after the other. With a `rate`, a subtask
/// emits at most that many records per second.
pub(crate) struct DataGen {
    splits: Vec<Split>,
    count: u64,
    keys: u64,
    value_bytes: usize,
    rate: u64,
    /// When pacing started, and records emitted since.
    paced: Option<(std::time::Instant, u64)>,
}

impl DataGen {
    pub(crate) fn new(
        count: u64,
        keys: u64,
        value_bytes: usize,
        subtask: u32,
        parallelism: u32,
    ) -> Self {
        Self::resume(
            count,
            keys,
            value_bytes,
            vec![Split::new(subtask, parallelism)],
        )
    }

    pub(crate) fn resume(count: u64, keys: u64, value_bytes: usize, splits: Vec<Split>) -> Self {
        DataGen {
            splits: splits.into_iter().filter(Split::valid).collect(),
            count,
            keys,
            value_bytes,
            rate: 0,
            paced: None,
        }
    }

    /// The same generator, emitting at most `rate` records per second (0:
    /// as fast as it can).
    pub(crate) fn with_rate(mut self, rate: u64) -> Self {
        self.rate = rate;
        self
    }

    /// How many records may go now without exceeding the rate; waits (at
    /// most a few milliseconds, so the task stays responsive) when none may.
    fn allowance(&mut self, max: usize) -> usize {
        if self.rate == 0 {
            return max;
        }
        let (start, sent) = *self
            .paced
            .get_or_insert_with(|| (std::time::Instant::now(), 0));
        let due = (start.elapsed().as_secs_f64() * self.rate as f64) as u64;
        if due > sent {
            return max.min((due - sent) as usize);
        }
        let wait = std::time::Duration::from_secs_f64((sent + 1 - due) as f64 / self.rate as f64);
        sluice_share::blocking(|| {
            std::thread::sleep(wait.min(std::time::Duration::from_millis(5)))
        });
        0
    }
}

impl Source for DataGen {
    fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError> {
        let max = self.allowance(max);
        let mut digits = itoa::Buffer::new();
        let mut key = Vec::new();
        let mut emitted = 0;
        for split in &mut self.splits {
            while emitted < max
                && let Some(i) = split.take(self.count)
            {
                let key = (self.keys > 0).then(|| {
                    key.clear();
                    key.push(b'k');
                    key.extend_from_slice(digits.format(i % self.keys).as_bytes());
                    key.as_slice()
                });
                out.push_with(key, None, |data| {
                    let start = data.len();
                    data.extend_from_slice(digits.format(i).as_bytes());
                    let end = start + self.value_bytes;
                    if data.len() < end {
                        data.resize(end, b'.');
                    }
                });
                emitted += 1;
            }
        }
        if let Some((_, sent)) = self.paced.as_mut() {
            *sent += emitted as u64;
        }
        Ok(Split::poll(&self.splits, self.count))
    }

    fn snapshot(&self) -> Vec<u8> {
        Split::snapshot(&self.splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(g: &mut DataGen, max: usize) -> Vec<u64> {
        let mut b = BatchBuilder::new();
        g.poll(max, &mut b).expect("no io");
        b.take()
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r.value)
                    .trim_end_matches('.')
                    .parse::<u64>()
                    .expect("num")
            })
            .collect()
    }

    #[test]
    fn subtasks_together_emit_every_index_once() {
        let mut all = Vec::new();
        for s in 0..3 {
            let mut g = DataGen::new(10, 0, 0, s, 3);
            let mut b = BatchBuilder::new();
            while g.poll(2, &mut b).expect("no io") == Poll::More {}
            all.extend(b.take().iter().map(|r| {
                String::from_utf8_lossy(r.value)
                    .parse::<u64>()
                    .expect("num")
            }));
        }
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn values_are_padded_to_the_requested_size() {
        let mut g = DataGen::new(12, 0, 4, 0, 1);
        let mut b = BatchBuilder::new();
        while g.poll(100, &mut b).expect("no io") == Poll::More {}
        let values: Vec<Vec<u8>> = b.take().iter().map(|r| r.value.to_vec()).collect();
        assert_eq!(values[0], b"0...");
        assert_eq!(values[11], b"11..");
        assert!(values.iter().all(|v| v.len() == 4));
    }

    #[test]
    fn a_snapshot_resumes_exactly_after_the_last_record_even_at_another_parallelism() {
        // Two subtasks emit a little, snapshot, and three new ones take over.
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for s in 0..2 {
            let mut g = DataGen::new(50, 0, 0, s, 2);
            seen.extend(values(&mut g, 7));
            states.push(g.snapshot());
        }
        for s in 0..3usize {
            let mine: Vec<Split> = states
                .iter()
                .enumerate()
                .filter(|(old, _)| old % 3 == s)
                .flat_map(|(_, st)| postcard::from_bytes::<Vec<Split>>(st).expect("state"))
                .collect();
            let mut g = DataGen::resume(50, 0, 0, mine);
            seen.extend(values(&mut g, 1000));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_rate_caps_what_is_emitted_by_the_time_elapsed() {
        let mut g = DataGen::new(1_000_000, 0, 0, 0, 1).with_rate(2000);
        let start = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..50 {
            n += values(&mut g, 1000).len();
            // Never ahead of the rate, however fast or slow the machine is.
            let allowed = start.elapsed().as_secs_f64() * 2000.0;
            assert!(
                n as f64 <= allowed + 1.0,
                "{n} records after allowing {allowed}"
            );
        }
        assert!(n > 0);
    }
}
