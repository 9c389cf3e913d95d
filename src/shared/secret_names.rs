//! The one rule for which names mark a value as a credential: header names
//! (the client masks their values in the log, the gateway takes them as a
//! caller's identity) and URL query parameter names (their values never
//! feed the client's idempotency key, because tokens in URLs change from
//! attempt to attempt).
//!
//! A name is a credential's when, compared without letter case, it is one
//! of [`EXACT`] or contains one of [`WORDS`]. Percent-encoding is decoded
//! first, so `access%5Ftoken` is `access_token`. A header name is also a
//! credential's when it contains one of [`HEADER_WORDS`] (session ids);
//! query parameter names keep the rule without them, because that rule is
//! part of the client's key derivation (v1) and must not move.

/// Names that are credentials as a whole.
pub const EXACT: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "auth",
    "sig",
    "pwd",
];

/// Words that make any name containing them a credential's
/// (`x-api-key`, `access_token`, `X-Amz-Signature`, `client_secret`).
pub const WORDS: &[&str] = &[
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "signature",
    "credential",
];

/// Words that make a header name a credential's besides [`WORDS`]: session
/// identifiers (`X-Session-Id`, `JSESSIONID`, `PHPSESSID`), which servers
/// that issue them treat as the caller's credential.
pub const HEADER_WORDS: &[&str] = &["session", "sessid"];

/// Whether a value under the header `name` is a credential: the rule of
/// [`is_secret_name`], with [`HEADER_WORDS`] among its words.
pub fn is_secret_header(name: &str) -> bool {
    is_secret_with(name, HEADER_WORDS)
}

/// Whether a query parameter's (or any other name's) value is a credential.
pub fn is_secret_name(name: &str) -> bool {
    is_secret_with(name, &[])
}

/// The one rule, with `more` words besides [`WORDS`]: decoded and
/// lower-cased once, whichever words it is asked about.
fn is_secret_with(name: &str, more: &[&str]) -> bool {
    // Without a `%` there is nothing to decode, and a name already in lower
    // case (as the HTTP stack holds header names) is not copied: no
    // allocation for the gateway, which asks this for every header of
    // every request.
    let decoded = if name.contains('%') {
        std::borrow::Cow::Owned(percent_decode(name))
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    if decoded.bytes().any(|b| b.is_ascii_uppercase()) {
        matches_lower(&decoded.to_ascii_lowercase(), more)
    } else {
        matches_lower(&decoded, more)
    }
}

/// `name` in lower case against [`EXACT`], [`WORDS`] and `more`.
fn matches_lower(name: &str, more: &[&str]) -> bool {
    // Byte windows, not `str::contains`: names are a few dozen bytes, and
    // setting up `contains`'s substring searcher for each of the words cost
    // more than the comparisons (a third of the gateway's caller scoping,
    // counted with callgrind; docs/performance.md).
    EXACT.contains(&name) || WORDS.iter().chain(more).any(|word| contains(name, word))
}

/// Whether `word` occurs in `name`, by byte windows.
fn contains(name: &str, word: &str) -> bool {
    name.as_bytes()
        .windows(word.len())
        .any(|window| window == word.as_bytes())
}

/// Percent-decodes `text` (invalid escapes stay as they are); non-UTF-8
/// results are decoded lossily, which cannot hide an ASCII word.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_by_name() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "x-api-key",
            "PRIVATE-TOKEN",
            "access_token",
            "access%5Ftoken",
            "client_secret",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "sig",
            "password",
            "passwd",
            "pwd",
            "auth",
            "apikey",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn session_headers_are_credentials_but_session_query_names_are_not() {
        for name in [
            "X-Session-Id",
            "jsessionid",
            "PHPSESSID",
            "session",
            "x-api-key",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        // The query rule is part of the key derivation: unchanged.
        for name in ["session", "PHPSESSID"] {
            assert!(!is_secret_name(name), "{name}");
        }
        for name in ["accept", "user-agent", "x-request-id", "author"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn ordinary_names_are_not_secret() {
        for name in [
            "accept",
            "content-type",
            "env",
            "ref",
            "author",
            "page",
            "x-tenant",
            "%zz",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
