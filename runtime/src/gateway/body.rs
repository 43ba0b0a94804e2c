//! Request bodies: how long a client may take to send one, and how many body
//! bytes the node buffers at once.
//!
//! ```text
//!   head parsed ─▶ TimedBody (every request, HTTP/1 and HTTP/2)
//!                    cut when the whole body takes longer than http_body_timeout_ms,
//!                    or, after http_header_timeout_ms, arrives slower than
//!                    http_body_rate_bytes_min bytes/s on average
//!              ─▶ receive(): buffered under http_body_buffered_bytes_max (all requests)
//!              ─▶ only then an in-flight permit (admission.rs) and the handler
//! ```
//!
//! A client announcing 1 MB and sending 10 bytes therefore holds a connection
//! and a few bytes of budget until its timeout, never an in-flight permit.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, Sleep};

/// How fast a request body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyTiming {
    /// The whole body must have arrived this long after the head.
    pub timeout: Duration,
    /// Average bytes per second a body must keep up after `grace`; 0 turns
    /// the rate check off.
    pub rate_bytes_min: u64,
    /// How long a body may take before the rate is checked (the header
    /// timeout: a client gets as long to start its body as to send its head).
    pub grace: Duration,
}

impl BodyTiming {
    /// When a body that has delivered `received` bytes `elapsed` after its
    /// head must have delivered more (or be complete).
    fn deadline(&self, received: u64) -> Duration {
        if self.rate_bytes_min == 0 {
            return self.timeout;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.rate_bytes_min as f64);
        self.timeout.min(self.grace.saturating_add(earned))
    }
}

/// Why a body could not be received.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "request body too slow: {received} bytes in {elapsed_ms} ms (http_body_timeout_ms, http_body_rate_bytes_min)"
    )]
    Timeout { received: u64, elapsed_ms: u128 },
    #[error(
        "request bodies being received exceed {budget} bytes (http_body_buffered_bytes_max); retry shortly"
    )]
    BufferFull { budget: usize },
    #[error("reading request body: {message}")]
    Read { message: String },
}

/// The error a [`TimedBody`] yields once its client is too slow; `receive`
/// finds it in the error chain and reports [`BodyError::Timeout`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body too slow: {received} bytes in {elapsed_ms} ms")]
pub struct TooSlow {
    received: u64,
    elapsed_ms: u128,
}

/// A request body that fails with [`TooSlow`] when its client falls behind
/// [`BodyTiming`]. The timer is made only once the body waits for the
/// network, so a body already in the read buffer costs no timer at all.
pub struct TimedBody<B> {
    inner: B,
    timing: BodyTiming,
    started: Instant,
    received: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timing: BodyTiming) -> Self {
        TimedBody {
            inner,
            timing,
            started: Instant::now(),
            received: 0,
            sleep: None,
            failed: false,
        }
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(sleep) = this.sleep.as_mut() {
                        let deadline = this.started + this.timing.deadline(this.received);
                        sleep.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.started + this.timing.deadline(this.received);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.failed = true;
                Poll::Ready(Some(Err(Box::new(TooSlow {
                    received: this.received,
                    elapsed_ms: this.started.elapsed().as_millis(),
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Body bytes buffered now across all requests, bounded.
pub struct BodyBudget {
    bytes: Semaphore,
    bytes_max: usize,
}

/// Bytes of [`BodyBudget`] held until the request is answered.
pub struct BodyPermit<'a> {
    _bytes: Option<SemaphorePermit<'a>>,
}

impl BodyBudget {
    pub fn new(bytes_max: usize) -> Self {
        BodyBudget {
            bytes: Semaphore::new(bytes_max.min(Semaphore::MAX_PERMITS)),
            bytes_max,
        }
    }

    /// Reads `body` up to `limit` bytes, charging every chunk to the budget
    /// as it arrives (a body announcing 1 MB holds only what it has sent).
    pub async fn receive(
        &self,
        body: Body,
        limit: usize,
    ) -> Result<(Bytes, BodyPermit<'_>), BodyError> {
        let mut held: Option<SemaphorePermit<'_>> = None;
        if body.size_hint().exact() == Some(0) {
            return Ok((Bytes::new(), BodyPermit { _bytes: held }));
        }
        // A declared length above the limit is refused before any byte is read.
        if body.size_hint().lower() > limit as u64 {
            return Err(BodyError::TooLarge { limit });
        }
        let mut body = body;
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        let mut length = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| classify(&error))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            length += data.len();
            if length > limit {
                return Err(BodyError::TooLarge { limit });
            }
            let chunk = u32::try_from(data.len())
                .ok()
                .and_then(|size| self.bytes.try_acquire_many(size).ok())
                .ok_or(BodyError::BufferFull {
                    budget: self.bytes_max,
                })?;
            match held.as_mut() {
                Some(permit) => permit.merge(chunk),
                None => held = Some(chunk),
            }
            // One chunk is kept as it came; a second starts a copy.
            match first.take() {
                None if rest.is_empty() => first = Some(data),
                None => rest.extend_from_slice(&data),
                Some(earlier) => {
                    rest.reserve(earlier.len() + data.len());
                    rest.extend_from_slice(&earlier);
                    rest.extend_from_slice(&data);
                }
            }
        }
        let bytes = match first {
            Some(only) => only,
            None => Bytes::from(rest),
        };
        Ok((bytes, BodyPermit { _bytes: held }))
    }
}

/// A body read error is a timeout when a [`TooSlow`] is anywhere in its chain.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> BodyError {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(slow) = error.downcast_ref::<TooSlow>() {
            return BodyError::Timeout {
                received: slow.received,
                elapsed_ms: slow.elapsed_ms,
            };
        }
        current = error.source();
    }
    BodyError::Read {
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> BodyTiming {
        BodyTiming {
            timeout: Duration::from_secs(10),
            rate_bytes_min: 1000,
            grace: Duration::from_secs(2),
        }
    }

    #[test]
    fn deadline_grows_with_bytes_received_up_to_the_timeout() {
        let timing = timing();
        assert_eq!(timing.deadline(0), Duration::from_secs(2));
        assert_eq!(timing.deadline(3000), Duration::from_secs(5));
        assert_eq!(timing.deadline(1_000_000), Duration::from_secs(10));
        let no_rate = BodyTiming {
            rate_bytes_min: 0,
            ..timing
        };
        assert_eq!(no_rate.deadline(0), Duration::from_secs(10));
    }

    /// A body that sends `chunks` then never ends.
    fn stalled(chunks: Vec<&'static [u8]>) -> Body {
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c)))),
        )
        .chain(futures::stream::pending());
        Body::new(http_body_util::StreamBody::new(frames))
    }

    use futures::StreamExt;

    #[tokio::test]
    async fn a_stalled_body_is_cut_at_its_deadline() {
        let budget = BodyBudget::new(1 << 20);
        let timing = BodyTiming {
            timeout: Duration::from_secs(10),
            rate_bytes_min: 100,
            grace: Duration::from_millis(100),
        };
        let body = Body::new(TimedBody::new(stalled(vec![b"0123456789"]), timing));
        let started = Instant::now();
        let error = budget.receive(body, 1 << 20).await.err().expect("cut");
        // 10 bytes at 100 B/s earn 100 ms beyond the 100 ms grace: the rate,
        // not the 10 s timeout, cuts it.
        let elapsed = started.elapsed();
        assert!(
            (Duration::from_millis(200)..Duration::from_secs(5)).contains(&elapsed),
            "{elapsed:?}"
        );
        assert!(
            matches!(error, BodyError::Timeout { received: 10, .. }),
            "{error}"
        );
        // Nothing stays charged once the failed request is gone.
        assert_eq!(budget.bytes.available_permits(), 1 << 20);
    }

    #[tokio::test]
    async fn bodies_are_bounded_by_limit_and_budget() {
        let budget = BodyBudget::new(15);
        let (bytes, permit) = budget
            .receive(Body::from("0123456789"), 100)
            .await
            .expect("fits");
        assert_eq!(&bytes[..], b"0123456789");
        let error = budget
            .receive(Body::from("0123456789"), 100)
            .await
            .err()
            .expect("budget full");
        assert!(matches!(error, BodyError::BufferFull { budget: 15 }));
        drop(permit);
        let error = budget
            .receive(Body::from("0123456789"), 5)
            .await
            .err()
            .expect("too large");
        assert!(matches!(error, BodyError::TooLarge { limit: 5 }));
    }

    #[tokio::test]
    async fn chunks_are_joined_in_order() {
        let budget = BodyBudget::new(1 << 20);
        let body = futures::stream::iter(
            ["ab", "cd", "ef"]
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c.as_bytes())))),
        );
        let (bytes, _permit) = budget
            .receive(Body::new(http_body_util::StreamBody::new(body)), 100)
            .await
            .expect("read");
        assert_eq!(&bytes[..], b"abcdef");
    }
}
