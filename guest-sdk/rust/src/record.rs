//! Records and batches in the contract's layout (one buffer + metadata).

use crate::bindings::sluice::app::types::{Batch, RecordMeta};

/// `key-len` value meaning "no key".
pub(crate) const NO_KEY: u32 = u32::MAX;
/// `timestamp` value meaning "no timestamp".
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

/// One record, borrowed from the batch it arrived in.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The record's key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: &'a [u8],
    /// Event time in ms since the epoch, if the record has one.
    pub timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// The value as UTF-8 text, or `None` if it is not valid UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.value).ok()
    }
}

/// Iterates over the records of a batch given as buffer + metadata.
pub(crate) fn records<'a>(
    data: &'a [u8],
    meta: &'a [RecordMeta],
) -> impl Iterator<Item = Result<Record<'a>, crate::Error>> + 'a {
    let mut pos = 0usize;
    meta.iter().map(move |m| {
        let key_len = if m.key_len == NO_KEY {
            0
        } else {
            m.key_len as usize
        };
        let end = pos
            .checked_add(key_len)
            .and_then(|k| k.checked_add(m.value_len as usize))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| crate::failed("malformed batch: record lengths exceed the buffer"))?;
        let key = (m.key_len != NO_KEY).then(|| &data[pos..pos + key_len]);
        let value = &data[pos + key_len..end];
        pos = end;
        Ok(Record {
            key,
            value,
            timestamp: (m.timestamp != NO_TIMESTAMP).then_some(m.timestamp),
        })
    })
}

/// Where an operator emits records. Emitted records carry the timestamp of the
/// record being processed (or of the timer firing) unless one is given.
#[derive(Debug, Default)]
pub struct Collector {
    pub(crate) data: Vec<u8>,
    pub(crate) meta: Vec<RecordMeta>,
    pub(crate) timestamp: Option<i64>,
}

impl Collector {
    /// Emits a record without a key.
    pub fn emit(&mut self, value: &[u8]) {
        self.push(None, value, self.timestamp);
    }

    /// Emits a keyed record (a downstream hash edge routes it by `key`).
    pub fn emit_keyed(&mut self, key: &[u8], value: &[u8]) {
        self.push(Some(key), value, self.timestamp);
    }

    /// Emits a record with an explicit event time.
    pub fn emit_at(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        self.push(key, value, Some(timestamp));
    }

    /// Records emitted so far in this call.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether nothing has been emitted in this call.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        let key_len = match key {
            Some(k) => {
                crate::bytes::append(&mut self.data, k);
                k.len() as u32
            }
            None => NO_KEY,
        };
        crate::bytes::append(&mut self.data, value);
        self.meta.push(RecordMeta {
            key_len,
            value_len: value.len() as u32,
            timestamp: timestamp.unwrap_or(NO_TIMESTAMP),
        });
    }

    pub(crate) fn push_record(&mut self, r: &Record<'_>) {
        self.push(r.key, r.value, r.timestamp);
    }

    pub(crate) fn take_batch(&mut self) -> Batch {
        Batch {
            data: core::mem::take(&mut self.data),
            meta: core::mem::take(&mut self.meta),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.meta.clear();
    }
}
