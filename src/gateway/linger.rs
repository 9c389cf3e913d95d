//! Lingering over an unread HTTP/1.1 request body, as nginx's
//! `lingering_close` does.
//!
//! The gateway answers some requests before their body has arrived: a
//! declared `Content-Length` over `--max-body` (`413`), a spent body
//! budget (`503`), an invalid key or caller (`400`, `401`), an upstream
//! that answers a pass-through early. If the body were then dropped, hyper
//! would close the connection with the client's bytes unread, the kernel
//! would answer them with a reset, and a client still uploading would see
//! a broken pipe or a reset instead of the answer. So a request body
//! dropped before its end goes on being read, and thrown away, in a task
//! of its own until `--body-timeout` (at most [`LINGER`]) after its
//! request's head, the time the whole body had anyway: the answer goes out
//! meanwhile, a client that sends the rest of its body keeps its
//! connection, and one cut off by `--body-timeout` (`408`) is not read on.
//! What a connection reads at a time is bounded by hyper's buffer
//! (`super::server::MAX_HEAD`), so reading on costs no more memory than
//! reading a body.
//!
//! HTTP/2 needs none of this: hyper ends such a stream with `RST_STREAM`
//! (`NO_ERROR`) after the answer, which stops the upload.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The longest an unread body is read on after its request was answered.
pub const LINGER: Duration = Duration::from_secs(30);

/// A request body that, dropped before its end, is read to its end (and
/// discarded) in the background within its time. Passes every frame
/// through unchanged.
pub struct Lingering<B: Body<Data = Bytes> + Send + Unpin + 'static> {
    /// `None` once dropped.
    inner: Option<B>,
    /// Seen its end, or an error: nothing left to read.
    done: bool,
    /// Until when the rest may arrive.
    deadline: Instant,
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Lingering<B> {
    /// `body`, read on until `time` (at most [`LINGER`]) from now if
    /// dropped before its end.
    pub fn new(body: B, time: Duration) -> Self {
        Self {
            inner: Some(body),
            done: false,
            deadline: Instant::now() + time.min(LINGER),
        }
    }
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Body for Lingering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if self.done || inner.is_end_stream() {
            return;
        }
        // Only inside the runtime (a body dropped at its teardown has no
        // connection left to read from).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let deadline = self.deadline;
        if deadline <= Instant::now() {
            return;
        }
        runtime.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(Ok(_)) = inner.frame().await {}
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    type Sent = Result<Frame<Bytes>, std::convert::Infallible>;

    /// A body fed by the test through a channel; counts frames taken, and
    /// the returned `Arc` has a second owner while the body exists.
    fn fed() -> (
        mpsc::UnboundedSender<Sent>,
        impl Body<Data = Bytes, Error = std::convert::Infallible> + Send + Unpin + 'static,
        Arc<AtomicUsize>,
    ) {
        let (send, mut receive) = mpsc::unbounded_channel::<Sent>();
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let stream = futures_util::stream::poll_fn(move |cx| {
            let polled = receive.poll_recv(cx);
            if let Poll::Ready(Some(_)) = &polled {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            polled
        });
        (send, StreamBody::new(stream), taken)
    }

    fn data(text: &'static str) -> Sent {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn frames_pass_through_unchanged() {
        let (send, body, _) = fed();
        let mut body = Lingering::new(body, Duration::from_secs(1));
        send.send(data("abc")).unwrap();
        drop(send);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_read_to_its_end() {
        let (send, body, taken) = fed();
        let mut body = Lingering::new(body, Duration::from_secs(30));
        send.send(data("head")).unwrap();
        body.frame().await.unwrap().unwrap();
        drop(body);
        for _ in 0..3 {
            send.send(data("rest")).unwrap();
        }
        drop(send);
        // The lingering reader takes it all, then drops the body.
        while Arc::strong_count(&taken) == 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(taken.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lingering_read_stops_at_its_time() {
        let (send, body, _) = fed();
        drop(Lingering::new(body, Duration::from_secs(5)));
        // Nothing more arrives; the body is dropped when its time is up.
        tokio::time::timeout(Duration::from_secs(6), send.closed())
            .await
            .expect("dropped within its time");
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_counts_from_the_request_not_from_the_drop() {
        let (send, body, taken) = fed();
        let body = Lingering::new(body, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Answered when its time was up (a `408`): not read on.
        drop(body);
        assert_eq!(Arc::strong_count(&taken), 1);
        assert!(send.is_closed());
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_leaves_nothing_behind() {
        let (send, body, taken) = fed();
        let mut body = Lingering::new(body, Duration::from_secs(30));
        send.send(data("all")).unwrap();
        drop(send);
        body.frame().await.unwrap().unwrap();
        assert!(body.frame().await.is_none());
        drop(body);
        // The body went at once: no task holds it.
        assert_eq!(Arc::strong_count(&taken), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_early_is_held_until_read() {
        let (send, body, taken) = fed();
        drop(Lingering::new(body, Duration::from_secs(30)));
        assert_eq!(Arc::strong_count(&taken), 2, "held by the reader");
        drop(send);
        while Arc::strong_count(&taken) == 2 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_is_capped() {
        let (_send, body, _) = fed();
        let body = Lingering::new(body, Duration::from_secs(3600));
        assert_eq!(body.deadline, Instant::now() + LINGER);
    }
}
