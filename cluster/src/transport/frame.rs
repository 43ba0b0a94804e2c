//! Length-prefixed frames on a byte stream (a QUIC stream, or anything
//! `AsyncRead`/`AsyncWrite`): a u32 big-endian length, then that many bytes.
//!
//! The length comes from the peer, so it is never trusted: a length over the
//! limit is refused before anything is read, and a payload is read into a
//! buffer that grows with the bytes that actually arrive, so a peer that claims
//! 16 MiB and sends ten bytes costs ten bytes (plus slack), not 16 MiB.

use picloud_storage::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default largest frame payload: 16 MiB. Snapshots are streamed as many
/// frames, so no single frame needs to hold a whole state.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The size of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// How much buffer a payload read reserves before bytes arrive.
const READ_RESERVE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced (or we tried to send) a frame over the limit.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    /// The stream ended inside a frame.
    #[error("stream ended after {received} of {expected} frame bytes")]
    Truncated { expected: u64, received: u64 },
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame payload: {0}")]
    Decode(CodecError),
    #[error("encode: {0}")]
    Encode(CodecError),
}

impl FrameError {
    /// Whether the peer broke the framing or sent undecodable bytes (as opposed
    /// to the stream failing): such a peer is disconnected, not believed.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. } | FrameError::Truncated { .. } | FrameError::Decode(_)
        )
    }
}

/// Writes one frame. Refuses (without writing) a payload over `max` bytes, so
/// this side never sends what the other side must reject.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: u32,
) -> Result<(), FrameError> {
    let len = payload.len() as u64;
    if len > u64::from(max) {
        return Err(FrameError::TooLarge { len, max });
    }
    // `len <= max <= u32::MAX`, so the cast cannot truncate.
    writer.write_all(&(len as u32).to_be_bytes()).await?;
    writer.write_all(payload).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut payload = Vec::new();
    match read_frame_into(reader, max, &mut payload).await? {
        true => Ok(Some(payload)),
        false => Ok(None),
    }
}

/// Reads one frame into `payload` (cleared first); `false` on a clean end of stream.
async fn read_frame_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
    payload: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    payload.clear();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(FrameError::Truncated {
                expected: FRAME_HEADER_BYTES as u64,
                received: filled as u64,
            });
        }
        filled += read;
    }
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    let len = u64::from(len);
    // Reserve a little; `read_to_end` grows the buffer as bytes arrive.
    payload.reserve(READ_RESERVE_BYTES.min(len as usize));
    let received = (&mut *reader).take(len).read_to_end(payload).await? as u64;
    if received < len {
        return Err(FrameError::Truncated {
            expected: len,
            received,
        });
    }
    Ok(true)
}

/// Encodes `value` with the project's bincode codec and writes it as one frame.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize + ?Sized>(
    writer: &mut W,
    value: &T,
    max: u32,
) -> Result<(), FrameError> {
    let payload = codec::encode(value).map_err(FrameError::Encode)?;
    write_frame(writer, &payload, max).await
}

/// Reads one frame and decodes it with the project's codec, limited to `max` bytes.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    max: u32,
) -> Result<Option<T>, FrameError> {
    let Some(payload) = read_frame(reader, max).await? else {
        return Ok(None);
    };
    codec::decode(&payload, u64::from(max))
        .map(Some)
        .map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            write_frame(&mut a, b"hello", 100).await.expect("write");
            write_frame(&mut a, b"", 100).await.expect("write empty");
            write_message(&mut a, &("kv", 7u64), 100)
                .await
                .expect("write message");
        });
        assert_eq!(
            read_frame(&mut b, 100).await.expect("read"),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut b, 100).await.expect("read"), Some(vec![]));
        let message: Option<(String, u64)> = read_message(&mut b, 100).await.expect("message");
        assert_eq!(message, Some(("kv".into(), 7)));
        writer.await.expect("writer");
        assert_eq!(read_frame(&mut b, 100).await.expect("eof"), None);
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_payload() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut payload = Vec::new();
        let err = read_frame_into(&mut input, FRAME_BYTES_MAX, &mut payload)
            .await
            .expect_err("too large");
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 0xffff_ffff,
                    max: FRAME_BYTES_MAX
                }
            ),
            "{err}"
        );
        assert!(err.is_protocol_violation());
        assert_eq!(
            payload.capacity(),
            0,
            "nothing was allocated for the payload"
        );
        // The payload bytes were not consumed.
        assert_eq!(input, &[1, 2, 3]);
        // Writers refuse to send what readers would refuse.
        let mut sink = Vec::new();
        let err = write_frame(&mut sink, &[0; 11], 10)
            .await
            .expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len: 11, max: 10 }));
        assert!(sink.is_empty());
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_without_allocating_the_claimed_size() {
        let claimed: u32 = 15 * 1024 * 1024;
        let mut input = claimed.to_be_bytes().to_vec();
        input.extend_from_slice(&[7; 10]);
        let mut reader: &[u8] = &input;
        let mut payload = Vec::new();
        let err = read_frame_into(&mut reader, FRAME_BYTES_MAX, &mut payload)
            .await
            .expect_err("truncated");
        assert!(
            matches!(err, FrameError::Truncated { expected, received: 10 } if expected == u64::from(claimed)),
            "{err}"
        );
        assert!(
            payload.capacity() <= 2 * READ_RESERVE_BYTES,
            "allocated {} bytes for a frame that sent 10",
            payload.capacity()
        );
        // A header cut short is truncated too; an empty stream is a clean end.
        let mut short: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut short, 100).await,
            Err(FrameError::Truncated {
                expected: 4,
                received: 2
            })
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty, 100).await, Ok(None)));
    }

    #[tokio::test]
    async fn undecodable_payloads_are_a_protocol_violation() {
        let mut input = Vec::new();
        write_frame(&mut input, &[0xff; 3], 100)
            .await
            .expect("write");
        let mut reader: &[u8] = &input;
        let err = read_message::<_, String>(&mut reader, 100)
            .await
            .expect_err("decode");
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
        assert!(err.is_protocol_violation());
    }
}
