//! The `Idempotency-Key` request header as the gateway reads it
//! (draft-ietf-httpapi-idempotency-key-header): an RFC 8941 sf-string
//! (`"abc"`) or, as many clients send it, the bare key (`abc`). Both forms
//! name the same key.

use axum::http::{HeaderMap, HeaderName};

/// What the request says about its key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyHeader {
    /// No key header.
    Missing,
    /// A valid key, unquoted.
    Key(String),
    /// Unusable; the message says why.
    Invalid(String),
}

/// Reads the key header `name` from `headers`.
pub fn read(headers: &HeaderMap, name: &HeaderName) -> KeyHeader {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return KeyHeader::Missing;
    };
    if values.next().is_some() {
        return KeyHeader::Invalid(format!("the {name} header is given more than once"));
    }
    let Ok(text) = value.to_str() else {
        return KeyHeader::Invalid(format!("the {name} header is not visible ASCII"));
    };
    match parse(text.trim()) {
        Ok(key) => KeyHeader::Key(key),
        Err(why) => KeyHeader::Invalid(format!("the {name} header {why}")),
    }
}

/// Parses one header value: unquotes an sf-string, then checks the key is
/// 1-255 characters of visible ASCII (0x21-0x7E).
pub fn parse(text: &str) -> Result<String, String> {
    let key = match text.strip_prefix('"') {
        Some(rest) => unquote(rest)?,
        None => text.to_owned(),
    };
    if key.is_empty() || key.len() > 255 {
        return Err("must hold a key of 1 to 255 characters".to_owned());
    }
    if !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("may hold only visible ASCII characters (no spaces)".to_owned());
    }
    Ok(key)
}

/// Unquotes an RFC 8941 sf-string body (after the opening quote).
fn unquote(rest: &str) -> Result<String, String> {
    let mut key = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => return Err("has an invalid escape in its quoted string".to_owned()),
            },
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(key)
                } else {
                    Err("has text after its quoted string".to_owned())
                };
            }
            c => key.push(c),
        }
    }
    Err("has an unterminated quoted string".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bare_and_structured_forms_are_the_same_key() {
        assert_eq!(parse("abc-123"), Ok("abc-123".to_owned()));
        assert_eq!(parse("\"abc-123\""), Ok("abc-123".to_owned()));
        assert_eq!(parse(r#""a\"b\\c""#), Ok(r#"a"b\c"#.to_owned()));
    }

    #[test]
    fn invalid_keys_are_rejected() {
        for bad in [
            "",
            "\"\"",
            "has space",
            "\"unterminated",
            "\"a\"b",
            "\"bad\\x\"",
            &"k".repeat(256),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn a_repeated_header_is_invalid() {
        let name = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        assert_eq!(read(&headers, &name), KeyHeader::Missing);
        headers.append("idempotency-key", HeaderValue::from_static("a"));
        assert_eq!(read(&headers, &name), KeyHeader::Key("a".to_owned()));
        headers.append("idempotency-key", HeaderValue::from_static("b"));
        assert!(matches!(read(&headers, &name), KeyHeader::Invalid(_)));
    }
}
