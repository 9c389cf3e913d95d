//! The log's writer: lines are gathered in memory and written by a thread
//! of their own at most [`FLUSH_EVERY`] after the first of them, in one
//! `write`, instead of one `write` per request on the request's thread (a
//! `write` into a file or a pipe per request was about 5% of a forward's
//! CPU time; docs/performance.md).
//!
//! A warning or an error, and a line that finds the buffer past
//! [`FLUSH_AT`], wakes the thread to write at once, after the lines
//! gathered before it, so the log keeps its order. No request's thread
//! ever writes: an output that blocks (a pipe nobody reads) stalls only
//! the writer thread, and once [`MAX_GATHERED`] bytes wait, further lines
//! are dropped and counted, and the count is written when the output takes
//! lines again. The binary stops the writer on every way out ([`Flusher`]'s
//! drop, the panic hook), which writes what is left: a shutdown loses no
//! line; a `SIGKILL` loses at most the last [`FLUSH_EVERY`] of them. An idle
//! gateway's writer thread sleeps until a line comes.
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

/// Bytes waiting for an output that does not take them, past which lines
/// are dropped (and counted) rather than held.
pub const MAX_GATHERED: usize = 4 << 20;

struct State {
    gathered: Vec<u8>,
    /// Write without waiting for [`FLUSH_EVERY`]: a warning, or a full
    /// buffer.
    urgent: bool,
    /// Lines dropped since the last write, the buffer being full.
    dropped: u64,
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
        state.urgent = false;
        if state.gathered.is_empty() && state.dropped == 0 {
            return;
        }
        let mut batch = std::mem::take(&mut state.gathered);
        let dropped = std::mem::take(&mut state.dropped);
        if dropped > 0 {
            batch.extend_from_slice(
                format!(
                    "idempotency-gateway: {dropped} log lines dropped: the log output did not take them \
                     while {MAX_GATHERED} bytes were waiting\n"
                )
                .as_bytes(),
            );
        }
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
            urgent: false,
            dropped: 0,
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
            .wait_while(shared.lock(), |s| {
                s.gathered.is_empty() && s.dropped == 0 && !s.stopping
            })
            .unwrap_or_else(|p| p.into_inner());
        if !state.stopping && !state.urgent {
            state = shared
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| !s.stopping && !s.urgent)
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
    /// once by the writer thread (`Level` orders the more verbose as
    /// greater).
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
        if state.stopping {
            // The writer thread is gone (the process is exiting): the
            // caller writes.
            state.gathered.extend_from_slice(bytes);
            self.shared.write_out(state);
            return Ok(bytes.len());
        }
        if state.gathered.len() + bytes.len() > MAX_GATHERED {
            state.dropped += 1;
            return Ok(bytes.len());
        }
        let first = state.gathered.is_empty();
        state.gathered.extend_from_slice(bytes);
        let urgent = self.at_once || state.gathered.len() >= FLUSH_AT;
        if urgent && !state.urgent {
            state.urgent = true;
            self.shared.wake.notify_one();
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

    /// Waits for the writer thread to write `expected` (the wait is a
    /// safety net that only turns a missing write into a failure).
    fn written(out: &Out, expected: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.text().len() < expected {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        out.text()
    }

    /// A warning wakes the writer thread at once, which writes it in one
    /// batch with the lines gathered before it.
    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let out = Out::default();
        let (writer, _flusher) = start(out.clone()).unwrap();
        line(&writer, Level::INFO, "first\n");
        line(&writer, Level::WARN, "warning\n");
        assert_eq!(written(&out, 14), "first\nwarning\n");
        assert_eq!(out.writes(), 1, "one batch");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let out = Out::default();
        let (writer, _flusher) = start(out.clone()).unwrap();
        let long = "x".repeat(FLUSH_AT);
        line(&writer, Level::INFO, &long);
        assert_eq!(written(&out, FLUSH_AT).len(), FLUSH_AT);
    }

    /// An output that takes nothing (a pipe nobody reads) blocks only the
    /// writer thread: lines, warnings included, still return at once, at
    /// most MAX_GATHERED bytes wait, and the count of the dropped lines is
    /// written when the output takes lines again.
    #[test]
    fn a_blocked_output_never_blocks_a_caller_and_drops_what_does_not_fit() {
        #[derive(Clone)]
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Out);
        impl Write for Gate {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, opened) = &*self.0;
                drop(
                    opened
                        .wait_while(open.lock().unwrap(), |open| !*open)
                        .unwrap(),
                );
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Out::default();
        let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())), out.clone());
        let (writer, mut flusher) = start(gate.clone()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let caller = writer.clone();
        std::thread::spawn(move || {
            let long = "y".repeat(1023) + "\n";
            for _ in 0..10_000 {
                line(&caller, Level::INFO, &long);
            }
            line(&caller, Level::WARN, "a warning\n");
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the callers returned while the output was blocked");
        let (open, opened) = &*gate.0;
        *open.lock().unwrap() = true;
        opened.notify_all();
        flusher.stop();
        let text = out.text();
        let kept = text.lines().filter(|l| l.starts_with('y')).count();
        // What waited, and the batch the writer thread held (itself taken
        // from a buffer of at most MAX_GATHERED).
        assert!(kept <= 2 * MAX_GATHERED / 1024, "{kept} lines were held");
        assert!(kept < 10_000, "some lines were dropped");
        // One notice per batch that had drops: two when the writer thread
        // took its first batch only after the buffer had filled.
        let notices: Vec<usize> = text
            .lines()
            .filter(|l| l.contains("log lines dropped"))
            .map(|notice| {
                notice
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap()
            })
            .collect();
        assert!(!notices.is_empty(), "the drop is reported");
        let dropped: usize = notices.iter().sum();
        let warned = usize::from(text.contains("a warning"));
        assert_eq!(
            kept + dropped + warned,
            10_001,
            "every line kept or counted"
        );
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
