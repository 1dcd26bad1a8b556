//! Record batches in the contract's layout: one byte buffer plus one
//! fixed-size metadata entry per record. The host hands a batch to a guest
//! (and back) with two copies, never one allocation per record.

use serde::{Deserialize, Serialize};

/// `key_len` meaning "this record has no key".
pub const NO_KEY: u32 = u32::MAX;
/// `timestamp` meaning "this record has no event time".
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// Metadata of one record (the WIT contract's 16 bytes of `batch.meta` per
/// record; 0.1.0's `record-meta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Key length in bytes, or [`NO_KEY`].
    pub key_len: u32,
    /// Value length in bytes.
    pub value_len: u32,
    /// Event time (ms), or [`NO_TIMESTAMP`].
    pub timestamp: i64,
}

impl RecordMeta {
    /// Bytes per record in the contract's packed metadata.
    pub const PACKED: usize = 16;

    /// `meta` packed as the contract carries it: per record, key length and
    /// value length (u32), then event time (i64), little-endian.
    pub fn pack(meta: &[RecordMeta]) -> Vec<u8> {
        let mut out = Vec::with_capacity(meta.len() * Self::PACKED);
        for m in meta {
            out.extend_from_slice(&m.key_len.to_le_bytes());
            out.extend_from_slice(&m.value_len.to_le_bytes());
            out.extend_from_slice(&m.timestamp.to_le_bytes());
        }
        out
    }

    /// Records packed by [`RecordMeta::pack`] (e.g. by a guest), or why
    /// they are not: a length that is not a whole number of records.
    pub fn unpack(packed: &[u8]) -> Result<Vec<RecordMeta>, MalformedMeta> {
        let (records, rest) = packed.as_chunks::<{ Self::PACKED }>();
        if !rest.is_empty() {
            return Err(MalformedMeta { len: packed.len() });
        }
        Ok(records
            .iter()
            .map(|r| {
                let [k0, k1, k2, k3, v0, v1, v2, v3, t @ ..] = *r;
                RecordMeta {
                    key_len: u32::from_le_bytes([k0, k1, k2, k3]),
                    value_len: u32::from_le_bytes([v0, v1, v2, v3]),
                    timestamp: i64::from_le_bytes(t),
                }
            })
            .collect())
    }

    /// Bytes of key and value data this record holds.
    pub fn data_len(&self) -> u64 {
        let key = if self.key_len == NO_KEY {
            0
        } else {
            u64::from(self.key_len)
        };
        key + u64::from(self.value_len)
    }
}

/// A batch of records: keys and values back to back in `data`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Key then value bytes of each record, in order.
    pub data: Vec<u8>,
    /// One entry per record.
    pub meta: Vec<RecordMeta>,
}

/// One record borrowed from a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Event time (ms), if any.
    pub timestamp: Option<i64>,
}

/// Packed metadata that is not a whole number of records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "malformed batch: its metadata has {len} bytes, not a multiple of the {} per record",
    RecordMeta::PACKED
)]
pub struct MalformedMeta {
    len: usize,
}

/// A batch whose metadata does not fit its buffer (e.g. from a buggy guest).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed batch: record {index} ends at byte {end} but the buffer has {len} bytes")]
pub struct MalformedBatch {
    index: usize,
    end: u64,
    len: usize,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the batch holds no records.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Checks that every record lies inside the buffer, so that iterating
    /// cannot fail. Call it on batches from an untrusted source.
    pub fn validate(&self) -> Result<(), MalformedBatch> {
        let mut end = 0u64;
        for (index, m) in self.meta.iter().enumerate() {
            end += m.data_len();
            if end > self.data.len() as u64 {
                return Err(MalformedBatch {
                    index,
                    end,
                    len: self.data.len(),
                });
            }
        }
        Ok(())
    }

    /// Iterates over the records. The batch must be valid (see [`Batch::validate`]);
    /// iteration stops early at the first record that does not fit.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        let mut pos = 0usize;
        self.meta.iter().map_while(move |m| {
            let key_len = if m.key_len == NO_KEY {
                0
            } else {
                m.key_len as usize
            };
            let end = pos
                .checked_add(key_len)?
                .checked_add(m.value_len as usize)?;
            let key = (m.key_len != NO_KEY)
                .then(|| self.data.get(pos..pos + key_len))
                .flatten();
            let value = self.data.get(pos + key_len..end)?;
            pos = end;
            Some(Record {
                key,
                value,
                timestamp: (m.timestamp != NO_TIMESTAMP).then_some(m.timestamp),
            })
        })
    }
}

/// Accumulates records into a batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: Batch,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        self.push_with(key, timestamp, |data| data.extend_from_slice(value));
    }

    /// Appends a record whose value `write_value` appends to the batch's
    /// buffer, in place rather than through a buffer of the caller's. It
    /// must only append: what it leaves past the key is the value.
    pub fn push_with(
        &mut self,
        key: Option<&[u8]>,
        timestamp: Option<i64>,
        write_value: impl FnOnce(&mut Vec<u8>),
    ) {
        let key_len = match key {
            Some(k) => {
                self.batch.data.extend_from_slice(k);
                u32::try_from(k.len()).unwrap_or(NO_KEY - 1)
            }
            None => NO_KEY,
        };
        let start = self.batch.data.len();
        write_value(&mut self.batch.data);
        debug_assert!(
            self.batch.data.len() >= start,
            "push_with's writer removed bytes of earlier records"
        );
        let value_len = self.batch.data.len().saturating_sub(start);
        self.batch.meta.push(RecordMeta {
            key_len,
            value_len: u32::try_from(value_len).unwrap_or(u32::MAX),
            timestamp: timestamp.unwrap_or(NO_TIMESTAMP),
        });
    }

    /// Appends a record borrowed from another batch.
    pub fn push_record(&mut self, r: &Record<'_>) {
        self.push(r.key, r.value, r.timestamp);
    }

    /// Appends the run of consecutive `records` of `batch` whose data
    /// starts at byte `start` of it, with two copies rather than one per
    /// record; the byte just past the run. `None`, appending nothing, if
    /// the run does not lie inside the batch.
    pub fn extend_from(
        &mut self,
        batch: &Batch,
        records: std::ops::Range<usize>,
        start: usize,
    ) -> Option<usize> {
        let meta = batch.meta.get(records)?;
        let len: u64 = meta.iter().map(RecordMeta::data_len).sum();
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let data = batch.data.get(start..end)?;
        self.batch.data.extend_from_slice(data);
        self.batch.meta.extend_from_slice(meta);
        Some(end)
    }

    /// Appends a whole batch: taken as it is when nothing was added yet
    /// (no copy), copied after what was otherwise.
    pub fn append(&mut self, batch: Batch) {
        if self.batch.meta.is_empty() && self.batch.data.is_empty() {
            self.batch = batch;
        } else {
            self.batch.data.extend_from_slice(&batch.data);
            self.batch.meta.extend_from_slice(&batch.meta);
        }
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.batch.meta.len()
    }

    /// Whether no record has been added.
    pub fn is_empty(&self) -> bool {
        self.batch.meta.is_empty()
    }

    /// Bytes of key and value data so far.
    pub fn bytes(&self) -> usize {
        self.batch.data.len()
    }

    /// Takes the batch, leaving the builder empty but with room for a
    /// batch as large as this one, so that a builder filled again and
    /// again does not grow its buffers from nothing each time.
    pub fn take(&mut self) -> Batch {
        let next = Batch {
            data: Vec::with_capacity(self.batch.data.len()),
            meta: Vec::with_capacity(self.batch.meta.len()),
        };
        std::mem::replace(&mut self.batch, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn built_batches_iterate_back_to_what_was_pushed(
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                 proptest::collection::vec(any::<u8>(), 0..16),
                 proptest::option::of(any::<i64>().prop_filter("not the sentinel", |t| *t != NO_TIMESTAMP))),
                0..50)
        ) {
            let mut b = BatchBuilder::new();
            for (i, (k, v, t)) in recs.iter().enumerate() {
                // Every other record's value written in place, in two pieces.
                if i % 2 == 0 {
                    b.push(k.as_deref(), v, *t);
                } else {
                    let (head, tail) = v.split_at(v.len() / 2);
                    b.push_with(k.as_deref(), *t, |data| {
                        data.extend_from_slice(head);
                        data.extend_from_slice(tail);
                    });
                }
            }
            let batch = b.take();
            prop_assert!(batch.validate().is_ok());
            let back: Vec<_> = batch.iter().map(|r| (r.key.map(<[u8]>::to_vec), r.value.to_vec(), r.timestamp)).collect();
            prop_assert_eq!(back, recs);
        }

        #[test]
        fn packed_metadata_unpacks_to_what_was_packed(
            meta in proptest::collection::vec(
                (any::<u32>(), any::<u32>(), any::<i64>()).prop_map(|(key_len, value_len, timestamp)| {
                    RecordMeta { key_len, value_len, timestamp }
                }),
                0..40),
        ) {
            let packed = RecordMeta::pack(&meta);
            prop_assert_eq!(packed.len(), meta.len() * RecordMeta::PACKED);
            prop_assert_eq!(RecordMeta::unpack(&packed), Ok(meta));
        }
    }

    #[test]
    fn packed_metadata_is_little_endian_in_the_contracts_order() {
        let packed = RecordMeta::pack(&[RecordMeta {
            key_len: NO_KEY,
            value_len: 0x0102_0304,
            timestamp: -2,
        }]);
        assert_eq!(
            packed,
            [
                0xff, 0xff, 0xff, 0xff, 4, 3, 2, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]
        );
    }

    #[test]
    fn packed_metadata_of_a_partial_record_is_refused_with_its_length() {
        let err = RecordMeta::unpack(&[0u8; 20]).expect_err("20 bytes are no whole record");
        assert_eq!(
            err.to_string(),
            "malformed batch: its metadata has 20 bytes, not a multiple of the 16 per record"
        );
    }

    #[test]
    fn a_batch_whose_lengths_overrun_its_buffer_is_rejected() {
        let batch = Batch {
            data: vec![1, 2, 3],
            meta: vec![RecordMeta {
                key_len: 2,
                value_len: 2,
                timestamp: NO_TIMESTAMP,
            }],
        };
        assert_eq!(
            batch.validate(),
            Err(MalformedBatch {
                index: 0,
                end: 4,
                len: 3
            })
        );
        assert_eq!(batch.iter().count(), 0);
    }
}
