//! Parsing of the scalar value syntaxes users write in the client's inputs
//! and the gateway's flags: durations, byte sizes, booleans and counts.
//!
//! Each parser returns a plain message describing the accepted syntax; the
//! caller adds which input or flag was wrong.

use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds (`2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration such as 500ms, 30s, 5m, 1h or a number of seconds";
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(HINT.to_owned()),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| HINT.to_owned())?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| HINT.to_owned())
}

/// Parses `512KiB`, `1MiB`, `2GiB`, `10KB`, `1MB` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const HINT: &str = "expected a size such as 512KiB, 1MiB, 1GiB or a number of bytes";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(HINT.to_owned()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| HINT.to_owned())
}

/// Parses `true` or `false` (any case), the values GitHub Actions passes.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// Parses a whole number within `min..=max`.
pub fn parse_count(text: &str, min: u32, max: u32) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
}

/// Formats a duration for log lines: `250ms`, `1.5s`, `90s`, `2.5h`,
/// `3 days`; anything from a year on (a hostile `Retry-After`, say) as
/// `more than a year`, never as a twenty-digit number of seconds.
pub fn show(duration: Duration) -> String {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let secs = duration.as_secs();
    let with_tenths = |tenths: u128, unit: &str| {
        if tenths.is_multiple_of(10) {
            format!("{}{unit}", tenths / 10)
        } else {
            format!("{}.{}{unit}", tenths / 10, tenths % 10)
        }
    };
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else if secs < HOUR {
        with_tenths(duration.as_millis().div_ceil(100), "s")
    } else if secs < 2 * DAY {
        with_tenths(u128::from(secs.div_ceil(HOUR / 10)), "h")
    } else if secs < 365 * DAY {
        format!("{} days", secs / DAY)
    } else {
        "more than a year".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_every_documented_form() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_junk() {
        for junk in ["", "s", "ten", "5 minutes", "-1s", "1d", "1..2s", "1e400"] {
            assert!(parse_duration(junk).is_err(), "{junk:?} was accepted");
        }
    }

    #[test]
    fn sizes_accept_every_documented_form() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("1234"), Ok(1234));
    }

    #[test]
    fn sizes_reject_junk_and_overflow() {
        for junk in ["", "MiB", "1.5MiB", "1 TB", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(junk).is_err(), "{junk:?} was accepted");
        }
    }

    #[test]
    fn bools_are_true_or_false_only() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn show_is_short() {
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_secs(3599)), "3599s");
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(5400)), "1.5h");
        assert_eq!(show(Duration::from_secs(3 * 86_400 + 5)), "3 days");
        assert_eq!(show(Duration::from_secs(u64::MAX)), "more than a year");
        assert_eq!(show(Duration::MAX), "more than a year");
    }

    #[test]
    fn counts_respect_bounds() {
        assert_eq!(parse_count("5", 1, 100), Ok(5));
        assert!(parse_count("0", 1, 100).is_err());
        assert!(parse_count("101", 1, 100).is_err());
        assert!(parse_count("five", 1, 100).is_err());
    }
}
