//! Request header parsing (`Name: value` lines) and the rule for which
//! header values are secrets.

use reqwest::header::{HeaderName, HeaderValue};

/// One parsed request header.
pub type Header = (HeaderName, HeaderValue);

/// Parses one `Name: value` line. The value is trimmed; names are checked
/// against RFC 9110's token syntax and values may not hold control characters.
pub fn parse_line(line: &str) -> Result<Header, String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| "expected `Name: value`".to_owned())?;
    let name = parse_name(name.trim())?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of `{name}` holds a control character"))?;
    value.set_sensitive(is_secret(&name, None));
    Ok((name, value))
}

/// Parses `Name: value` lines, one per line; blank lines are ignored.
pub fn parse_lines(text: &str) -> Result<Vec<Header>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(parse_line)
        .collect()
}

/// Parses a header name (RFC 9110 token), lower-casing it.
pub fn parse_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

/// Whether a header's value is a credential that must be masked: the
/// well-known credential headers, and any whose name mentions a token,
/// secret, key or password, except the idempotency key header itself.
pub fn is_secret(name: &HeaderName, key_header: Option<&HeaderName>) -> bool {
    const EXACT: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
    const WORDS: [&str; 4] = ["token", "secret", "key", "password"];
    let name_str = name.as_str();
    if key_header == Some(name) {
        return false;
    }
    EXACT.contains(&name_str) || WORDS.iter().any(|word| name_str.contains(word))
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
    fn value_may_contain_colons() {
        let (_, value) = parse_line("Link: <https://a/b>; rel=x").unwrap();
        assert_eq!(value, "<https://a/b>; rel=x");
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(parse_line("no colon here").is_err());
        assert!(parse_line("Bad Name: x").is_err());
        assert!(parse_line(": empty name").is_err());
        assert!(parse_line("X: a\u{7}b").is_err());
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
