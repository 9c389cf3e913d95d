//! What a URL's text must say before it is parsed: its host, right after
//! `scheme://`.
//!
//! The `url` crate parses as browsers do (WHATWG), and browsers repair what
//! a request must never guess: `https:///api/deployments`, which is what
//! `https://${HOST}/api/deployments` becomes when `HOST` is empty, parses
//! as host `api`; `http:host/x`, `http:/host/x` and `http:\\host\x` parse
//! as host `host`. A name like `api` may resolve through the runner's DNS
//! search domains to a real machine, so such a URL is refused instead.

/// `Ok` when `text` names a host right after `scheme://` (an absent scheme
/// is left to the parser, which refuses it). The error says what is wrong
/// and never quotes the text, which may hold credentials.
pub fn require_written_host(text: &str) -> Result<(), &'static str> {
    // The parser trims leading spaces and control characters too.
    let text = text.trim_start_matches(|c: char| c <= ' ');
    let Some((_, rest)) = text.split_once(':') else {
        return Ok(());
    };
    match rest.strip_prefix("//") {
        Some(after) if after.starts_with(|c: char| !matches!(c, '/' | '\\' | '?' | '#')) => Ok(()),
        Some(_) => Err(
            "the URL has no host between `//` and its path (an empty variable, as in \
             `https://${HOST}/…`, leaves it so)",
        ),
        None => Err("the URL does not begin with `scheme://` and a host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_must_follow_the_two_slashes() {
        for good in [
            "https://api.example.com/deployments",
            "HTTP://EXAMPLE.COM",
            "http://[::1]:8080/",
            "https://user:pass@host/",
            "  https://host",
            "no scheme at all",
        ] {
            assert_eq!(require_written_host(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("https:///api/deployments", "no host"),
            ("https://", "no host"),
            ("http://?q", "no host"),
            ("http://#f", "no host"),
            ("http:\\\\host\\x", "does not begin"),
            ("http:/host/x", "does not begin"),
            ("http:host/x", "does not begin"),
            ("https://\\host", "no host"),
        ] {
            let err = require_written_host(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            // The parser would have taken each of them.
            if bad.contains("host") {
                let parsed = url::Url::parse(bad).expect(bad);
                assert_eq!(parsed.host_str(), Some("host"), "{bad}");
            }
        }
    }
}
