//! A data generator: `count` records in all, split across subtasks.

use sluice_types::BatchBuilder;

use crate::{ConnectorError, Poll, Source};

/// Subtask `s` of `p` emits indices `s, s+p, s+2p, ... < count`; the value is
/// the index in decimal, right-padded with `.` to `value_bytes` when that is
/// longer; the key `k{index % keys}` when `keys > 0`.
pub(crate) struct DataGen {
    next: u64,
    step: u64,
    count: u64,
    keys: u64,
    value_bytes: usize,
}

impl DataGen {
    pub(crate) fn new(
        count: u64,
        keys: u64,
        value_bytes: usize,
        subtask: u32,
        parallelism: u32,
    ) -> Self {
        DataGen {
            next: u64::from(subtask),
            step: u64::from(parallelism.max(1)),
            count,
            keys,
            value_bytes,
        }
    }
}

impl Source for DataGen {
    fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError> {
        let mut key = String::new();
        let mut value = String::new();
        for _ in 0..max {
            if self.next >= self.count {
                return Ok(Poll::Finished);
            }
            value.clear();
            value.push_str(&self.next.to_string());
            while value.len() < self.value_bytes {
                value.push('.');
            }
            if self.keys > 0 {
                key.clear();
                key.push('k');
                key.push_str(&(self.next % self.keys).to_string());
                out.push(Some(key.as_bytes()), value.as_bytes(), None);
            } else {
                out.push(None, value.as_bytes(), None);
            }
            self.next += self.step;
        }
        Ok(if self.next >= self.count {
            Poll::Finished
        } else {
            Poll::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
