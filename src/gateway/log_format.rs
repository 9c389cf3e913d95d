//! The log's line format: tracing's default full format for every event
//! but the request line, which is written as its message alone.
//!
//! The request line (one per request, [`REQUEST_TARGET`]) is formatted by
//! the gateway in one message whose every part is already inert: the method
//! is an HTTP token, the path has gone through
//! [`crate::shared::outside_text::one_line`], the key hash and the
//! trace-id are hex, the rest are numbers and fixed words. So it skips
//! tracing's per-field machinery and its escaping writer, which together
//! were about a tenth of a memory forward's instructions (callgrind;
//! docs/performance.md). Any other event, whose fields may hold outside
//! text such as an error from a store, keeps the default format and its
//! escaping. The text is the same either way: the timestamp as the default
//! format writes it, the level, then the message.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the request line. `IDEMPOTENCY_GATEWAY_LOG` can name it
/// (`info,idempotency_gateway::request=off` drops request lines alone).
pub const REQUEST_TARGET: &str = "idempotency_gateway::request";

/// The gateway's event format.
pub struct GatewayFormat {
    default: Format,
    ansi: bool,
}

impl GatewayFormat {
    /// The format, with terminal colours when `ansi` (then every line,
    /// the request line too, is written by the default format).
    pub fn new(ansi: bool) -> Self {
        Self {
            default: Format::default().with_target(false).with_ansi(ansi),
            ansi,
        }
    }
}

thread_local! {
    /// This thread's last whole second and its text, for [`write_stamp`].
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes `since_epoch` as tracing's default format does
/// (`2026-12-07T12:41:49.801030Z`: UTC, to the microsecond), the date and
/// time of day from `second`, which holds the text of the last whole second
/// written and is renewed when the second changes. Formatting the date was
/// a twentieth of a replay's instructions (callgrind); the cached text is a
/// copy, and the microseconds six digits.
fn write_stamp(
    since_epoch: Duration,
    second: &mut (u64, String),
    out: &mut impl fmt::Write,
) -> fmt::Result {
    let secs = since_epoch.as_secs();
    if second.0 != secs {
        let time = i64::try_from(secs)
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .unwrap_or_default();
        second.1 = time.format("%Y-%m-%dT%H:%M:%S").to_string();
        second.0 = secs;
    }
    out.write_str(&second.1)?;
    let mut micros = since_epoch.subsec_micros();
    let mut fraction = *b".000000Z";
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// Writes the `message` field as it is.
struct Message<'w, 'a> {
    writer: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

impl<S, N> FormatEvent<S, N> for GatewayFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        if metadata.target() != REQUEST_TARGET || self.ansi {
            return self.default.format_event(ctx, writer, event);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        SECOND.with(|second| write_stamp(now, &mut second.borrow_mut(), &mut writer))?;
        write!(writer, " {:>5} ", metadata.level())?;
        let mut message = Message {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut message);
        message.result?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn lines(format: impl FnOnce(Capture) -> Box<dyn Subscriber + Send + Sync>) -> Vec<String> {
        let capture = Capture::default();
        let subscriber = format(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: REQUEST_TARGET, "request method=POST path=/a status={}", 201);
            tracing::warn!(error = "bad\u{1b}[31m", "store unavailable");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_stamp_is_utc_to_the_microsecond_and_renewed_each_second() {
        let mut second = (u64::MAX, String::new());
        let mut stamp = |since: Duration| {
            let mut out = String::new();
            write_stamp(since, &mut second, &mut out).unwrap();
            out
        };
        for (since, text) in [
            (Duration::ZERO, "1970-01-01T00:00:00.000000Z"),
            (
                Duration::new(1_796_645_309, 801_030_999),
                "2026-12-07T12:08:29.801030Z",
            ),
            (
                Duration::new(1_796_645_309, 5_000),
                "2026-12-07T12:08:29.000005Z",
            ),
            (
                Duration::new(1_796_645_310, 999_999_999),
                "2026-12-07T12:08:30.999999Z",
            ),
            (Duration::new(951_782_400, 0), "2000-02-29T00:00:00.000000Z"),
        ] {
            assert_eq!(stamp(since), text);
        }
    }

    /// Everything after the timestamp: the timestamps differ between runs.
    fn after_timestamp(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }

    #[test]
    fn the_request_line_reads_as_the_default_format_writes_it() {
        let ours = lines(|out| {
            Box::new(
                tracing_subscriber::fmt()
                    .event_format(GatewayFormat::new(false))
                    .with_writer(out)
                    .finish(),
            )
        });
        let default = lines(|out| {
            Box::new(
                tracing_subscriber::fmt()
                    .with_target(false)
                    .with_ansi(false)
                    .with_writer(out)
                    .finish(),
            )
        });
        assert_eq!(ours.len(), 2, "{ours:?}");
        assert_eq!(
            after_timestamp(&ours[0]),
            " INFO request method=POST path=/a status=201"
        );
        for (ours, default) in ours.iter().zip(&default) {
            assert_eq!(after_timestamp(ours), after_timestamp(default));
            let stamp = ours.split(' ').next().unwrap();
            assert!(
                stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
                "{stamp}"
            );
        }
        assert!(
            !ours[1].contains('\u{1b}'),
            "other events keep the default format's escaping: {}",
            ours[1]
        );
    }
}
