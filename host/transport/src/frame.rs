//! Length-prefixed postcard frames on QUIC streams.
//!
//! A frame is a little-endian `u32` length and that many bytes of postcard.
//! Frames are bounded so that a hostile or confused peer cannot make a
//! process allocate without limit.

use quinn::{RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame accepted: components travel in one frame.
pub const MAX_FRAME: usize = 256 << 20;

/// A framing or stream problem.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream or connection failed (peer gone, reset, timeout).
    /// Retryable on a new connection.
    #[error("the connection failed: {0}")]
    Read(quinn::ReadExactError),
    /// Writing failed (peer gone, stopped the stream).
    #[error("the connection failed: {0}")]
    Write(quinn::WriteError),
    /// The peer sent a frame larger than [`MAX_FRAME`].
    #[error("the peer sent a {0}-byte frame (limit {MAX_FRAME})")]
    TooLarge(usize),
    /// The peer sent bytes that are not a valid message (or a message of
    /// another protocol version).
    #[error("the peer sent a malformed message: {0}")]
    Malformed(postcard::Error),
}

// The causes are in the messages above, so they are not also `source`s
// (an error chain would say them twice).
impl From<quinn::ReadExactError> for FrameError {
    fn from(e: quinn::ReadExactError) -> Self {
        FrameError::Read(e)
    }
}

impl From<quinn::WriteError> for FrameError {
    fn from(e: quinn::WriteError) -> Self {
        FrameError::Write(e)
    }
}

impl From<postcard::Error> for FrameError {
    fn from(e: postcard::Error) -> Self {
        FrameError::Malformed(e)
    }
}

/// Encodes one frame into a buffer, ready to write.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Writes one message as a frame.
pub async fn write<T: Serialize>(send: &mut SendStream, msg: &T) -> Result<(), FrameError> {
    let buf = encode(msg)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame; `None` when the peer finished the stream cleanly
/// between frames.
pub async fn read<T: DeserializeOwned>(recv: &mut RecvStream) -> Result<Option<T>, FrameError> {
    read_max(recv, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes: for peers that have not
/// authenticated, so they cannot make the process allocate much.
pub async fn read_max<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    Ok(Some(postcard::from_bytes(&buf)?))
}
