//! hyper's header-read timer for one HTTP/1.1 connection, started by the
//! request head's first byte rather than by hyper's wait for it.
//!
//! hyper arms `header_read_timeout` whenever it begins reading a head, so on
//! a keep-alive connection the wait *between* requests ran on it too: an
//! idle connection was closed after `--header-timeout` (10 s), whatever
//! `--idle-timeout` said. With this timer a head has `--header-timeout` from
//! its first byte (the slowloris bound, as nginx's `client_header_timeout`),
//! and the wait for that byte is the idle watchdog's (`super::server`): from
//! accept to the first head, `--header-timeout`; between requests,
//! `--idle-timeout`. Written here because hyper has no such setting; its
//! `Timer` trait is the seam it offers.
//!
//! "First byte" is the first read after hyper armed the timer. A head whose
//! first bytes came in one read with the request before it (pipelined)
//! starts its timer at its next byte; until then nothing moves, so the
//! idle watchdog bounds it by `--idle-timeout`, as it bounds an idle
//! connection. Holding a connection that way costs a client what holding
//! an idle one does.

use hyper::rt::{Sleep, Timer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Counts the reads of one connection that returned bytes.
#[derive(Debug, Default)]
pub struct Reads(AtomicU64);

impl Reads {
    /// One read returned bytes.
    pub fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether no read has returned bytes yet: the client is silent.
    pub fn none(&self) -> bool {
        self.now() == 0
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The timer given to one connection's HTTP/1.1 server.
#[derive(Debug, Clone)]
pub struct HeadTimer {
    reads: Arc<Reads>,
}

impl HeadTimer {
    /// A timer whose sleeps start at the first read counted in `reads`
    /// after they are armed.
    pub fn new(reads: Arc<Reads>) -> Self {
        Self { reads }
    }
}

impl Timer for HeadTimer {
    /// A plain sleep: hyper's HTTP/1.1 server sleeps only for the head.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(Started {
            sleep: Box::pin(tokio::time::sleep(duration)),
        })
    }

    /// Sleeps for as long as `deadline` is from now, counted from the next
    /// byte the connection reads.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            reads: self.reads.clone(),
            armed_at: self.reads.now(),
            timeout: deadline.saturating_duration_since(Instant::now()),
            running: None,
        })
    }
}

/// A sleep already running.
struct Started {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for Started {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for Started {}

/// A sleep that starts when a read after `armed_at` has returned bytes.
struct HeadSleep {
    reads: Arc<Reads>,
    armed_at: u64,
    timeout: Duration,
    running: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();

    /// Until a byte arrives this registers no wake-up of its own: hyper
    /// polls it after each read of the head that left it incomplete, and
    /// the connection's readiness wakes hyper for that read.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.running.is_none() && self.reads.now() == self.armed_at {
            return Poll::Pending;
        }
        let timeout = self.timeout;
        self.running
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
            .poll(cx)
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sleep_runs_from_the_first_read_after_it_was_armed() {
        let reads = Arc::new(Reads::default());
        reads.count(); // the previous request's bytes
        let timer = HeadTimer::new(reads.clone());
        let mut sleep = timer.sleep_until(Instant::now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll(&mut sleep).is_pending(), "no byte yet: not running");
        reads.count();
        assert!(poll(&mut sleep).is_pending(), "the first byte starts it");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(poll(&mut sleep).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            poll(&mut sleep).is_ready(),
            "ten seconds after the first byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_sleep_runs_at_once() {
        let timer = HeadTimer::new(Arc::new(Reads::default()));
        let mut sleep = timer.sleep(Duration::from_secs(1));
        assert!(poll(&mut sleep).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(poll(&mut sleep).is_ready());
    }
}
