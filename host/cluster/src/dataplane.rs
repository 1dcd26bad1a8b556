//! The wire form of a channel's events between TaskManagers.
//!
//! A data stream starts with a postcard [`DataHeader`](crate::protocol::DataHeader)
//! frame naming its channel; every later frame carries one [`Event`] in a
//! fixed layout, so that a batch crosses the network as two memory blocks
//! rather than one serde call per byte:
//!
//! ```text
//! u32 length of what follows (little-endian, as every integer here)
//! u8  kind: 0 records, 1 watermark, 2 end of input, 3 barrier
//! records:   u32 n, then n × (u32 key_len, u32 value_len, i64 timestamp),
//!            then the batch's data (keys and values back to back)
//! watermark: i64     barrier: u64     end of input: nothing
//! ```
//!
//! The sender hands quinn the metadata block and the batch's own buffer
//! as two chunks (the record bytes are not copied); the receiver reads
//! straight into the new batch's buffers. A frame that does not add up
//! (lengths past its end, bytes left over, an unknown kind) is refused
//! with the reason, never trusted.

use std::future::Future;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use sluice_types::{Batch, Event, RecordMeta};

/// The largest data frame accepted (a batch holding one huge record may
/// be far larger than the usual 256 KiB).
pub const MAX_DATA_FRAME: usize = sluice_transport::frame::MAX_FRAME;

const RECORDS: u8 = 0;
const WATERMARK: u8 = 1;
const END_OF_INPUT: u8 = 2;
const BARRIER: u8 = 3;
/// Bytes of one record's metadata on the wire.
const META_BYTES: usize = 16;
/// Kind byte plus record count.
const RECORDS_HEAD: usize = 5;

/// Why a data frame could not be sent or read.
#[derive(Debug, thiserror::Error)]
pub enum DataFrameError {
    /// Reading failed (peer gone, stream reset, timeout). The channel is
    /// lost; the job's failover takes over.
    #[error("the data stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed (peer gone, stream stopped).
    #[error("the data stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream ended inside a frame.
    #[error("the data stream ended inside a frame")]
    Truncated,
    /// A frame larger than [`MAX_DATA_FRAME`] (sent or received).
    #[error("a {0}-byte data frame (limit {MAX_DATA_FRAME})")]
    TooLarge(usize),
    /// The frame's contents do not add up.
    #[error("a malformed data frame: {0}")]
    Malformed(String),
}

/// One event as the chunks of its frame: the header (with a batch's
/// metadata) and, for records, the batch's data buffer, moved not copied.
pub fn encode(event: Event) -> Result<(Bytes, Option<Bytes>), DataFrameError> {
    let (mut head, data) = match event {
        Event::Records(batch) => {
            let n = u32::try_from(batch.meta.len())
                .map_err(|_| DataFrameError::TooLarge(batch.meta.len()))?;
            let mut head = Vec::with_capacity(4 + RECORDS_HEAD + META_BYTES * batch.meta.len());
            head.extend_from_slice(&[0; 4]);
            head.push(RECORDS);
            head.extend_from_slice(&n.to_le_bytes());
            for m in &batch.meta {
                head.extend_from_slice(&m.key_len.to_le_bytes());
                head.extend_from_slice(&m.value_len.to_le_bytes());
                head.extend_from_slice(&m.timestamp.to_le_bytes());
            }
            (head, Some(batch.data))
        }
        Event::Watermark(t) => (tagged(WATERMARK, &t.to_le_bytes()), None),
        Event::EndOfInput => (tagged(END_OF_INPUT, &[]), None),
        Event::Barrier(id) => (tagged(BARRIER, &id.to_le_bytes()), None),
    };
    let len = head.len() - 4 + data.as_ref().map_or(0, Vec::len);
    if len > MAX_DATA_FRAME {
        return Err(DataFrameError::TooLarge(len));
    }
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok((Bytes::from(head), data.map(Bytes::from)))
}

fn tagged(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0; 4];
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// Writes one event to a data stream.
pub async fn write(send: &mut SendStream, event: Event) -> Result<(), DataFrameError> {
    let (head, data) = encode(event)?;
    match data {
        Some(data) => send.write_all_chunks(&mut [head, data]).await?,
        None => send.write_chunk(head).await?,
    }
    Ok(())
}

/// Where frames are read from: a QUIC stream, or in tests any split of
/// the bytes into chunks.
pub trait ChunkSource {
    /// The next bytes of the stream, at most `max` of them; `None` at its
    /// end.
    fn chunk(&mut self, max: usize) -> impl Future<Output = Result<Option<Bytes>, DataFrameError>>;
}

impl ChunkSource for RecvStream {
    async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, DataFrameError> {
        Ok(self.read_chunk(max, true).await?.map(|c| c.bytes))
    }
}

/// Appends exactly `n` bytes of the stream to `out`. `Ok(false)` if the
/// stream ended before the first of them.
async fn fill<S: ChunkSource>(
    src: &mut S,
    out: &mut Vec<u8>,
    n: usize,
) -> Result<bool, DataFrameError> {
    let mut left = n;
    while left > 0 {
        match src.chunk(left).await? {
            Some(c) => {
                // A source that returns more than asked is a bug; never
                // read past the frame because of it.
                let take = c.len().min(left);
                out.extend_from_slice(&c[..take]);
                left -= take;
            }
            None if left == n => return Ok(false),
            None => return Err(DataFrameError::Truncated),
        }
    }
    Ok(true)
}

/// Reads the next event; `None` when the stream ended cleanly between
/// frames.
pub async fn read<S: ChunkSource>(src: &mut S) -> Result<Option<Event>, DataFrameError> {
    let mut head = Vec::with_capacity(4 + RECORDS_HEAD);
    if !fill(src, &mut head, 5).await? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_DATA_FRAME {
        return Err(DataFrameError::TooLarge(len));
    }
    let fixed = |want: usize| {
        if len == want {
            Ok(())
        } else {
            Err(DataFrameError::Malformed(format!(
                "kind {} needs {want} bytes, the frame has {len}",
                head[4]
            )))
        }
    };
    let mut body = Vec::with_capacity(8);
    match head[4] {
        RECORDS => {}
        WATERMARK => {
            fixed(9)?;
            need(fill(src, &mut body, 8).await?)?;
            return Ok(Some(Event::Watermark(i64::from_le_bytes(eight(&body)))));
        }
        BARRIER => {
            fixed(9)?;
            need(fill(src, &mut body, 8).await?)?;
            return Ok(Some(Event::Barrier(u64::from_le_bytes(eight(&body)))));
        }
        END_OF_INPUT => {
            fixed(1)?;
            return Ok(Some(Event::EndOfInput));
        }
        other => {
            return Err(DataFrameError::Malformed(format!(
                "unknown event kind {other}"
            )));
        }
    }
    if len < RECORDS_HEAD {
        return Err(DataFrameError::Malformed(format!(
            "a {len}-byte records frame has no record count"
        )));
    }
    need(fill(src, &mut body, 4).await?)?;
    let n = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let meta_len = n
        .checked_mul(META_BYTES)
        .filter(|m| *m <= len - RECORDS_HEAD)
        .ok_or_else(|| {
            DataFrameError::Malformed(format!(
                "{n} records do not fit a {len}-byte frame's metadata"
            ))
        })?;
    let mut raw = Vec::with_capacity(meta_len);
    need(fill(src, &mut raw, meta_len).await?)?;
    let mut meta = Vec::with_capacity(n);
    let mut total = 0u64;
    for m in raw.chunks_exact(META_BYTES) {
        let key_len = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        let value_len = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
        let timestamp = i64::from_le_bytes(eight(&m[8..]));
        let m = RecordMeta {
            key_len,
            value_len,
            timestamp,
        };
        total += m.data_len();
        meta.push(m);
    }
    let data_len = len - RECORDS_HEAD - meta_len;
    if total != data_len as u64 {
        return Err(DataFrameError::Malformed(format!(
            "{n} records hold {total} bytes but the frame carries {data_len}"
        )));
    }
    let mut data = Vec::with_capacity(data_len);
    need(fill(src, &mut data, data_len).await?)?;
    Ok(Some(Event::Records(Batch { data, meta })))
}

fn need(got: bool) -> Result<(), DataFrameError> {
    if got {
        Ok(())
    } else {
        Err(DataFrameError::Truncated)
    }
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_types::{BatchBuilder, NO_KEY, NO_TIMESTAMP};
    use std::collections::VecDeque;

    /// A stream delivered in the given chunks, honouring `max` as quinn does.
    struct Chunks(VecDeque<Bytes>);

    impl ChunkSource for Chunks {
        async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, DataFrameError> {
            let Some(mut c) = self.0.pop_front() else {
                return Ok(None);
            };
            if c.len() > max {
                self.0.push_front(c.split_off(max));
            }
            Ok(Some(c))
        }
    }

    fn wire(events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            let (head, data) = encode(e.clone()).expect("encodes");
            out.extend_from_slice(&head);
            out.extend_from_slice(data.as_deref().unwrap_or_default());
        }
        out
    }

    /// `bytes` split at the given cut points.
    fn split(bytes: &[u8], cuts: &[usize]) -> Chunks {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = VecDeque::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            if c > at {
                chunks.push_back(Bytes::copy_from_slice(&bytes[at..c]));
                at = c;
            }
        }
        Chunks(chunks)
    }

    fn read_all(src: &mut Chunks) -> Result<Vec<Event>, DataFrameError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut events = Vec::new();
            while let Some(e) = read(src).await? {
                events.push(e);
            }
            Ok(events)
        })
    }

    fn event() -> impl Strategy<Value = Event> {
        let record = (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::option::of(
                any::<i64>().prop_filter("not the sentinel", |t| *t != NO_TIMESTAMP),
            ),
        );
        prop_oneof![
            proptest::collection::vec(record, 0..20).prop_map(|recs| {
                let mut b = BatchBuilder::new();
                for (k, v, t) in &recs {
                    b.push(k.as_deref(), v, *t);
                }
                Event::Records(b.take())
            }),
            any::<i64>().prop_map(Event::Watermark),
            any::<u64>().prop_map(Event::Barrier),
            Just(Event::EndOfInput),
        ]
    }

    proptest! {
        #[test]
        fn events_come_back_whole_however_the_stream_is_chunked(
            events in proptest::collection::vec(event(), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let bytes = wire(&events);
            let back = read_all(&mut split(&bytes, &cuts)).expect("reads");
            prop_assert_eq!(back, events);
        }

        #[test]
        fn a_stream_cut_inside_a_frame_is_truncated_not_shortened(
            events in proptest::collection::vec(event(), 1..6),
            cut in any::<usize>(),
        ) {
            let bytes = wire(&events);
            let ends: Vec<usize> = events.iter().scan(0, |at, e| {
                *at += wire(std::slice::from_ref(e)).len();
                Some(*at)
            }).collect();
            let cut = cut % bytes.len();
            prop_assume!(cut > 0 && !ends.contains(&cut));
            let got = read_all(&mut split(&bytes[..cut], &[]));
            prop_assert!(matches!(got, Err(DataFrameError::Truncated)), "{:?}", got);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_is_consistent(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(events) = read_all(&mut split(&bytes, &[])) {
                for e in events {
                    if let Event::Records(b) = e {
                        prop_assert!(b.validate().is_ok());
                    }
                }
            }
        }
    }

    fn records_frame(n: u32, metas: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut body = vec![RECORDS];
        body.extend_from_slice(&n.to_le_bytes());
        for (k, v) in metas {
            body.extend_from_slice(&k.to_le_bytes());
            body.extend_from_slice(&v.to_le_bytes());
            body.extend_from_slice(&NO_TIMESTAMP.to_le_bytes());
        }
        body.extend_from_slice(data);
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    }

    fn malformed(bytes: &[u8]) -> String {
        match read_all(&mut split(bytes, &[])) {
            Err(DataFrameError::Malformed(why)) => why,
            other => panic!("expected a malformed frame, got {other:?}"),
        }
    }

    #[test]
    fn records_whose_lengths_overrun_the_frame_are_refused() {
        let why = malformed(&records_frame(1, &[(NO_KEY, 10)], b"abc"));
        assert!(
            why.contains("hold 10 bytes but the frame carries 3"),
            "{why}"
        );
    }

    #[test]
    fn bytes_left_over_after_the_records_are_refused() {
        let why = malformed(&records_frame(1, &[(1, 1)], b"abc"));
        assert!(
            why.contains("hold 2 bytes but the frame carries 3"),
            "{why}"
        );
    }

    #[test]
    fn a_record_count_larger_than_the_frame_is_refused_before_allocating() {
        let why = malformed(&records_frame(u32::MAX, &[], b""));
        assert!(why.contains("do not fit"), "{why}");
    }

    #[test]
    fn an_unknown_kind_and_a_wrong_fixed_size_are_refused() {
        let why = malformed(&[1, 0, 0, 0, 9]);
        assert!(why.contains("unknown event kind 9"), "{why}");
        let why = malformed(&[2, 0, 0, 0, WATERMARK, 0]);
        assert!(why.contains("needs 9 bytes"), "{why}");
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_reading_it() {
        let len = (MAX_DATA_FRAME as u32 + 1).to_le_bytes();
        let got = read_all(&mut split(&[len[0], len[1], len[2], len[3], RECORDS], &[]));
        assert!(matches!(got, Err(DataFrameError::TooLarge(n)) if n == MAX_DATA_FRAME + 1));
    }
}
