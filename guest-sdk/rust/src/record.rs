//! Records and batches in the contract's layout (one buffer + metadata).

use crate::bindings::sluice::app::types::Batch;

/// `key-len` value meaning "no key".
pub(crate) const NO_KEY: u32 = u32::MAX;
/// `timestamp` value meaning "no timestamp".
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;
/// Bytes of a batch's metadata per record: key length and value length
/// (u32), event time (i64), little-endian (the contract's `batch`).
pub(crate) const META_BYTES: usize = 16;

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

/// Iterates over the records of a batch given as buffer + packed metadata;
/// metadata that is not a whole number of records is an error before any
/// record.
pub(crate) fn records<'a>(
    data: &'a [u8],
    meta: &'a [u8],
) -> impl Iterator<Item = Result<Record<'a>, crate::Error>> + 'a {
    let (whole, rest) = meta.as_chunks::<META_BYTES>();
    let partial = (!rest.is_empty()).then(|| {
        Err(crate::failed(format!(
            "malformed batch: its metadata has {} bytes, not a multiple of the {META_BYTES} per record",
            meta.len()
        )))
    });
    let mut pos = 0usize;
    partial.into_iter().chain(whole.iter().map(move |m| {
        let [k0, k1, k2, k3, v0, v1, v2, v3, t @ ..] = *m;
        let key_len = u32::from_le_bytes([k0, k1, k2, k3]);
        let value_len = u32::from_le_bytes([v0, v1, v2, v3]) as usize;
        let timestamp = i64::from_le_bytes(t);
        let key_bytes = if key_len == NO_KEY {
            0
        } else {
            key_len as usize
        };
        let end = pos
            .checked_add(key_bytes)
            .and_then(|k| k.checked_add(value_len))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| crate::failed("malformed batch: record lengths exceed the buffer"))?;
        let key = (key_len != NO_KEY).then(|| &data[pos..pos + key_bytes]);
        let value = &data[pos + key_bytes..end];
        pos = end;
        Ok(Record {
            key,
            value,
            timestamp: (timestamp != NO_TIMESTAMP).then_some(timestamp),
        })
    }))
}

/// Where an operator emits records. Emitted records carry the timestamp of the
/// record being processed (or of the timer firing) unless one is given.
#[derive(Debug, Default)]
pub struct Collector {
    pub(crate) data: Vec<u8>,
    /// Packed, [`META_BYTES`] per record.
    pub(crate) meta: Vec<u8>,
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

    /// Emits a record without a key whose value `write` builds straight
    /// in the output, saving the copy from a buffer of the operator's.
    ///
    /// ```
    /// # use sluice_sdk::Collector;
    /// # let mut out = Collector::default();
    /// let (id, price) = (42u64, 7u64);
    /// out.emit_with(|v| {
    ///     use std::fmt::Write;
    ///     write!(v, "{id},{price}").expect("writing to memory");
    /// });
    /// assert_eq!(out.len(), 1);
    /// ```
    pub fn emit_with(&mut self, write: impl FnOnce(&mut ValueWriter<'_>)) {
        self.push_with(None, self.timestamp, write);
    }

    /// [`Collector::emit_with`] for a keyed record.
    pub fn emit_keyed_with(&mut self, key: &[u8], write: impl FnOnce(&mut ValueWriter<'_>)) {
        self.push_with(Some(key), self.timestamp, write);
    }

    /// Records emitted so far in this call.
    pub fn len(&self) -> usize {
        self.meta.len() / META_BYTES
    }

    /// Whether nothing has been emitted in this call.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        self.push_with(key, timestamp, |v| v.extend_from_slice(value));
    }

    fn push_with(
        &mut self,
        key: Option<&[u8]>,
        timestamp: Option<i64>,
        write: impl FnOnce(&mut ValueWriter<'_>),
    ) {
        let key_len = match key {
            Some(k) => {
                crate::bytes::append(&mut self.data, k);
                k.len() as u32
            }
            None => NO_KEY,
        };
        let mut value = ValueWriter {
            start: self.data.len(),
            data: &mut self.data,
        };
        write(&mut value);
        let value_len = value.len();
        let mut meta = [0u8; META_BYTES];
        meta[..4].copy_from_slice(&key_len.to_le_bytes());
        meta[4..8].copy_from_slice(&(value_len as u32).to_le_bytes());
        meta[8..].copy_from_slice(&timestamp.unwrap_or(NO_TIMESTAMP).to_le_bytes());
        self.meta.extend_from_slice(&meta);
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

/// The value of a record being emitted by [`Collector::emit_with`]: bytes
/// can only be appended to it. Also a `std::fmt::Write` and
/// `std::io::Write`, so `write!` builds text in it.
pub struct ValueWriter<'a> {
    data: &'a mut Vec<u8>,
    /// Where the value starts in `data`.
    start: usize,
}

impl ValueWriter<'_> {
    /// Appends bytes.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        crate::bytes::append(self.data, bytes);
    }

    /// Appends one byte.
    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.data.push(byte);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }
}

impl std::fmt::Write for ValueWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl std::io::Write for ValueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_what_a_collector_packed() {
        let mut c = Collector::default();
        c.emit_at(Some(b"k"), b"value", -7);
        c.emit(b"");
        let b = c.take_batch();
        assert_eq!(b.meta.len(), 2 * META_BYTES);
        let got: Vec<_> = records(&b.data, &b.meta)
            .map(|r| r.map(|r| (r.key, r.value, r.timestamp)))
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(
            got,
            [
                (Some(b"k".as_slice()), b"value".as_slice(), Some(-7)),
                (None, b"".as_slice(), None)
            ]
        );
    }

    #[test]
    fn values_built_in_place_read_back_like_copied_ones() {
        use std::fmt::Write as _;
        let mut c = Collector::default();
        c.emit_keyed(b"a", b"first");
        c.emit_with(|v| {
            v.extend_from_slice(b"12");
            v.push(b',');
            write!(v, "{}", 345).expect("fmt");
            std::io::Write::write_all(v, b";").expect("io");
            assert_eq!((v.len(), v.as_slice()), (7, b"12,345;".as_slice()));
        });
        c.emit_keyed_with(b"key", |v| assert!(v.is_empty()));
        c.emit(b"last");
        let b = c.take_batch();
        let got: Vec<_> = records(&b.data, &b.meta)
            .map(|r| r.map(|r| (r.key, r.value)))
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(
            got,
            [
                (Some(b"a".as_slice()), b"first".as_slice()),
                (None, b"12,345;".as_slice()),
                (Some(b"key".as_slice()), b"".as_slice()),
                (None, b"last".as_slice()),
            ]
        );
    }

    #[test]
    fn metadata_of_a_partial_record_fails_before_any_record() {
        let mut c = Collector::default();
        c.emit(b"x");
        let mut b = c.take_batch();
        b.meta.extend_from_slice(&[0; 4]);
        let first = records(&b.data, &b.meta).next().expect("an item");
        match first {
            Err(crate::Error::Failed(m)) => assert!(
                m.contains("its metadata has 20 bytes, not a multiple of the 16"),
                "{m}"
            ),
            other => panic!("expected an error first, got {other:?}"),
        }
    }
}
