//! Parsing of the `Retry-After` response header (RFC 9110 §10.2.3): either
//! delta-seconds or an HTTP-date. The current time is passed in, so the
//! parser is pure.

use crate::shared::protocol::delta_seconds;
use std::time::{Duration, SystemTime};

/// The wait a `Retry-After` value asks for, measured from `now`. A date in
/// the past means "now" (zero). An unparsable value yields `None` and is
/// ignored by the caller, as RFC 9110 allows.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(seconds) = delta_seconds(value) {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let in_a_minute = Some(Duration::from_secs(60));
        assert_eq!(parse("Sun, 06 Nov 1994 08:50:37 GMT", now()), in_a_minute);
        assert_eq!(parse("Sunday, 06-Nov-94 08:50:37 GMT", now()), in_a_minute);
        assert_eq!(parse("Sun Nov  6 08:50:37 1994", now()), in_a_minute);
    }

    #[test]
    fn past_dates_mean_now() {
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn junk_is_ignored() {
        for junk in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 32 Nov 1994 08:50:37 GMT",
            "5s",
        ] {
            assert_eq!(parse(junk, now()), None, "{junk:?}");
        }
    }
}
