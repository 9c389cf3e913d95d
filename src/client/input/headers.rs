//! Request header parsing (`Name: value` lines), the headers a user may not
//! set, and the rule for which header values are secrets.
//!
//! Errors name the line and the column, never the text: a malformed line
//! may be a credential written without its name (`Bearer s3cret`).

use crate::shared::secret_names::is_secret_header;
use reqwest::header::{HeaderName, HeaderValue};

/// One parsed request header.
pub type Header = (HeaderName, HeaderValue);

/// Framing and hop-by-hop headers (RFC 9110 §6.4.1, §7.2, §7.6.1): the HTTP
/// stack sets them from the URL and the body, so a user's value would
/// contradict what is sent (a `Content-Length: 3` cuts the body).
pub const NOT_SETTABLE: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

/// Fails for a header the user may not set (see [`NOT_SETTABLE`]).
pub fn check_settable(name: &HeaderName) -> Result<(), String> {
    if NOT_SETTABLE.contains(&name.as_str()) {
        Err(format!(
            "`{name}` is a framing or hop-by-hop header that the HTTP client sets itself \
             (from the URL and the body); remove it"
        ))
    } else {
        Ok(())
    }
}

/// Parses one `Name: value` line. The value is trimmed; the name must be an
/// RFC 9110 token that the user may set, and the value may not hold control
/// characters. Errors give the column (1-based), never the text.
pub fn parse_line(line: &str) -> Result<Header, String> {
    let Some(colon) = line.find(':') else {
        return Err("expected `Name: value`, but the line has no `:`".to_owned());
    };
    let (raw_name, raw_value) = (&line[..colon], &line[colon + 1..]);
    let leading = raw_name.len() - raw_name.trim_start().len();
    let name_text = raw_name.trim();
    if name_text.is_empty() {
        return Err("expected `Name: value`, but the name before `:` is empty".to_owned());
    }
    if let Some(bad) = name_text.bytes().position(|b| !is_token_byte(b)) {
        return Err(format!(
            "the header name has a character that is not allowed at column {} (names are \
             letters, digits and !#$%&'*+-.^_`|~, with no spaces); expected `Name: value`",
            leading + bad + 1
        ));
    }
    let name = HeaderName::from_bytes(name_text.as_bytes())
        .map_err(|_| "the header name is not valid; expected `Name: value`".to_owned())?;
    check_settable(&name)?;
    let value_text = raw_value.trim();
    let mut value = HeaderValue::from_str(value_text).map_err(|_| {
        let offset = raw_value.len() - raw_value.trim_start().len();
        let bad = value_text
            .char_indices()
            .find(|&(_, c)| c != '\t' && c.is_ascii_control())
            .map_or(0, |(i, _)| value_text[..i].chars().count());
        format!(
            "the value of `{name}` has a character a header value cannot hold (a control \
             character) at column {}",
            line[..colon + 1 + offset].chars().count() + bad + 1
        )
    })?;
    value.set_sensitive(is_secret(&name, None));
    Ok((name, value))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `Name: value` lines, one per line; blank lines are ignored.
/// Errors start with the line number (`line 2: …`).
pub fn parse_lines(text: &str) -> Result<Vec<Header>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| parse_line(line).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// Parses a header name (RFC 9110 token), lower-casing it.
pub fn parse_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

/// Whether a header's value is a credential that must be masked
/// ([`crate::shared::secret_names::is_secret_header`]), except the idempotency key header
/// itself.
pub fn is_secret(name: &HeaderName, key_header: Option<&HeaderName>) -> bool {
    key_header != Some(name) && is_secret_header(name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_and_blank_lines_skipped() {
        let headers = parse_lines("\n  X-One:  a b  \n\nAccept: text/plain\n").unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].0, "x-one");
        assert_eq!(headers[0].1, "a b");
        assert_eq!(headers[1].1, "text/plain");
    }

    #[test]
    fn values_may_hold_text_beyond_ascii() {
        let (_, value) = parse_line("X-Name: caf\u{e9}").unwrap();
        assert_eq!(value.as_bytes(), "caf\u{e9}".as_bytes());
    }

    #[test]
    fn value_may_contain_colons() {
        let (_, value) = parse_line("Link: <https://a/b>; rel=x").unwrap();
        assert_eq!(value, "<https://a/b>; rel=x");
    }

    #[test]
    fn malformed_lines_are_rejected_by_position_without_quoting() {
        let cases = [
            ("Bearer s3cret", "no `:`"),
            ("Bearer s3cret: x", "column 7"),
            (": empty name", "empty"),
            ("X: a\u{7}s3cret", "column 5"),
            // Text beyond ASCII is allowed (obs-text); the control character
            // after it is the one named.
            ("X: caf\u{e9} s3cret\u{7f}", "column 15"),
            ("X-\u{e9}t\u{e9}: x", "column 3"),
        ];
        for (line, expected) in cases {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(expected), "{line:?}: {err}");
            assert!(!err.contains("s3cret") && !err.contains("Bearer"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_lines("Accept: a\n\nAuthorization Bearer s3cret\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_refused() {
        for name in NOT_SETTABLE {
            let err = parse_line(&format!("{name}: 3")).unwrap_err();
            assert!(err.contains("sets itself"), "{name}: {err}");
        }
        assert!(parse_line("Content-Length: 3").is_err());
        assert!(parse_line("X-Content-Length: 3").is_ok());
    }

    #[test]
    fn credentials_are_secret_but_the_key_header_is_not() {
        let key = HeaderName::from_static("idempotency-key");
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "private-token",
            "x-client-secret",
            "x-password",
            "x-session-id",
        ] {
            assert!(
                is_secret(&HeaderName::from_static(name), Some(&key)),
                "{name}"
            );
        }
        assert!(!is_secret(&key, Some(&key)));
        assert!(!is_secret(&HeaderName::from_static("accept"), Some(&key)));
        assert!(
            parse_line("Authorization: Bearer x")
                .unwrap()
                .1
                .is_sensitive()
        );
    }
}
