//! The log's writer: lines are gathered in memory and written by a thread
//! of their own at most [`FLUSH_EVERY`] after the first of them, in one
//! `write`, instead of one `write` per request on the request's thread (a
//! `write` into a file or a pipe per request was about 5% of a forward's
//! CPU time; docs/performance.md).
//!
//! A warning or an error, and a line that finds the buffer past
//! [`FLUSH_AT`], is written at once, after the lines gathered before it, so
//! the log keeps its order and its memory is bounded. The binary stops the
//! writer on every way out ([`Flusher`]'s drop, the panic hook), which
//! writes what is left: a shutdown loses no line; a `SIGKILL` loses at most
//! the last [`FLUSH_EVERY`] of them. An idle gateway's writer thread sleeps
//! until a line comes.
//!
//! Written here because the tracing ecosystem's non-blocking writer hands
//! each line to its thread (a wake-up per line, which costs what the
//! `write` saved: measured, docs/performance.md).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the first of the gathered lines waits at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Gathered bytes past which a line is written at once.
pub const FLUSH_AT: usize = 64 << 10;

struct State {
    gathered: Vec<u8>,
    stopping: bool,
}

struct Shared<W> {
    state: Mutex<State>,
    /// Locked after `state` and before letting it go (see
    /// [`Shared::write_out`]), never the other way round.
    out: Mutex<W>,
    /// Wakes the writer thread: a first line gathered, or stopping.
    wake: Condvar,
}

impl<W: Write> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what is gathered and writes it. The output is locked before
    /// the buffer is let go, so batches are written in the order they were
    /// taken, and the buffer is free for new lines during the `write`. A
    /// failed write drops the batch: there is nowhere else to say so.
    fn write_out(&self, mut state: MutexGuard<'_, State>) {
        if state.gathered.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut state.gathered);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        drop(state);
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

/// The `tracing_subscriber` writer (see the module documentation).
pub struct LogWriter<W> {
    shared: Arc<Shared<W>>,
}

/// The writer thread; dropping it (or [`Flusher::stop`]) writes what is
/// gathered and ends the thread.
pub struct Flusher<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a writer to `out` and its thread.
pub fn start<W: Write + Send + 'static>(out: W) -> std::io::Result<(LogWriter<W>, Flusher<W>)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            gathered: Vec::new(),
            stopping: false,
        }),
        out: Mutex::new(out),
        wake: Condvar::new(),
    });
    let thread = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn({
            let shared = shared.clone();
            move || write_gathered(&shared)
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: waits for a first line, gathers for [`FLUSH_EVERY`],
/// writes, again; writes what is left and ends when stopped.
fn write_gathered<W: Write>(shared: &Shared<W>) {
    loop {
        let mut state = shared
            .wake
            .wait_while(shared.lock(), |s| s.gathered.is_empty() && !s.stopping)
            .unwrap_or_else(|p| p.into_inner());
        if !state.stopping {
            state = shared
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| !s.stopping)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let stopping = state.stopping;
        shared.write_out(state);
        if stopping {
            return;
        }
    }
}

impl<W: Write + Send + 'static> Flusher<W> {
    /// Writes what is gathered and ends the thread; later lines are
    /// written at once, each by its caller.
    pub fn stop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<W: Write + Send + 'static> Drop for Flusher<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<W: Write> LogWriter<W> {
    /// Writes what is gathered, on this thread: for the panic hook. Skips
    /// it when the buffer is locked, which could be by the panicking
    /// thread itself (waiting for it would never end).
    pub fn write_now(&self) {
        let Some(mut state) = try_lock(&self.shared.state) else {
            return;
        };
        // The same for the output: a thread writing a batch gets to finish.
        let Some(mut out) = try_lock(&self.shared.out) else {
            return;
        };
        let _ = out.write_all(&std::mem::take(&mut state.gathered));
        let _ = out.flush();
    }

    /// The writer for one line at `level`: WARN and ERROR are written at
    /// once (`Level` orders the more verbose as greater).
    fn line(&self, level: Level) -> Line<'_, W> {
        Line {
            shared: &self.shared,
            at_once: level <= Level::WARN,
        }
    }
}

/// `mutex` locked if it is free (poisoned or not), else `None`.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

impl<W> Clone for LogWriter<W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// One event's line, handed over in one `write_all` by the formatter.
pub struct Line<'a, W> {
    shared: &'a Shared<W>,
    at_once: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        let first = state.gathered.is_empty();
        state.gathered.extend_from_slice(bytes);
        if self.at_once || state.stopping || state.gathered.len() >= FLUSH_AT {
            self.shared.write_out(state);
        } else if first {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for LogWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        // Without a level: at once, like a warning.
        self.line(Level::ERROR)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.line(*meta.level())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into a shared buffer, counting its `write` calls.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Out {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut out = self.0.lock().unwrap();
            out.0.extend_from_slice(bytes);
            out.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn line<W: Write>(writer: &LogWriter<W>, level: Level, text: &str) {
        writer.line(level).write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_written_together_and_all_of_them_on_stop() {
        let out = Out::default();
        let (writer, mut flusher) = start(out.clone()).unwrap();
        for n in 0..100 {
            line(&writer, Level::INFO, &format!("line {n}\n"));
        }
        flusher.stop();
        let expected: String = (0..100).map(|n| format!("line {n}\n")).collect();
        assert_eq!(out.text(), expected);
        assert!(out.writes() < 100, "{} writes for 100 lines", out.writes());
    }

    /// Threads logging at once, past FLUSH_AT (so batches are written both
    /// by callers and by the writer thread): every line whole, once, and
    /// each thread's lines in its order.
    #[test]
    fn lines_from_many_threads_are_written_whole_once_and_in_order() {
        let out = Out::default();
        let (writer, mut flusher) = start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..2_000 {
                        line(&writer, Level::INFO, &format!("thread {t} line {n:04}\n"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        flusher.stop();
        let text = out.text();
        assert!(
            text.len() > 2 * FLUSH_AT,
            "the buffer filled more than once"
        );
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..2_000)
                .map(|n| format!("thread {t} line {n:04}"))
                .collect();
            assert_eq!(mine, expected);
        }
        assert_eq!(text.lines().count(), 8_000);
    }

    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let out = Out::default();
        let (writer, _flusher) = start(out.clone()).unwrap();
        line(&writer, Level::INFO, "first\n");
        line(&writer, Level::WARN, "warning\n");
        assert_eq!(out.text(), "first\nwarning\n");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let out = Out::default();
        let (writer, _flusher) = start(out.clone()).unwrap();
        let long = "x".repeat(FLUSH_AT);
        line(&writer, Level::INFO, &long);
        assert_eq!(out.text().len(), FLUSH_AT);
    }

    /// The thread writes by itself, without a stop: the wait is a safety
    /// net that only turns a missing write into a failure.
    #[test]
    fn gathered_lines_are_written_without_a_stop() {
        let out = Out::default();
        let (writer, _flusher) = start(out.clone()).unwrap();
        line(&writer, Level::INFO, "by itself\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.text().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        assert_eq!(out.text(), "by itself\n");
    }

    #[test]
    fn write_now_writes_what_is_gathered() {
        let out = Out::default();
        let (writer, mut flusher) = start(out.clone()).unwrap();
        line(&writer, Level::INFO, "before the panic\n");
        writer.write_now();
        assert_eq!(out.text(), "before the panic\n");
        flusher.stop();
        assert_eq!(out.text(), "before the panic\n", "written once");
    }

    #[test]
    fn after_the_stop_each_line_is_written_at_once() {
        let out = Out::default();
        let (writer, mut flusher) = start(out.clone()).unwrap();
        flusher.stop();
        line(&writer, Level::INFO, "late\n");
        assert_eq!(out.text(), "late\n");
    }
}
