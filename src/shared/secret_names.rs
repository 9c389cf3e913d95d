//! The one rule for which names mark a value as a credential: header names
//! (the client masks their values in the log, the gateway takes them as a
//! caller's identity) and URL query parameter names (their values never
//! feed the client's idempotency key, because tokens in URLs change from
//! attempt to attempt).
//!
//! A name is a credential's when, compared without letter case, it is one
//! of [`EXACT`] or contains one of [`WORDS`]. Percent-encoding is decoded
//! first, so `access%5Ftoken` is `access_token`.

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

/// Whether a value under `name` is a credential.
pub fn is_secret_name(name: &str) -> bool {
    // Without a `%` there is nothing to decode: no allocation (the gateway
    // asks this for every header of every request).
    if name.contains('%') {
        matches(&percent_decode(name))
    } else {
        matches(name)
    }
}

fn matches(name: &str) -> bool {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return matches_lower(&name.to_ascii_lowercase());
    }
    matches_lower(name)
}

/// `name` in lower case (header names as the HTTP stack holds them).
fn matches_lower(name: &str) -> bool {
    // Byte windows, not `str::contains`: names are a few dozen bytes, and
    // setting up `contains`'s substring searcher for each of the words cost
    // more than the comparisons (a third of the gateway's caller scoping,
    // counted with callgrind; docs/performance.md).
    let bytes = name.as_bytes();
    EXACT.contains(&name)
        || WORDS.iter().any(|word| {
            bytes
                .windows(word.len())
                .any(|window| window == word.as_bytes())
        })
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
