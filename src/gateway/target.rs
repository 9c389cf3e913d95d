//! The request target: checked, then forwarded byte for byte under the
//! upstream's path prefix.
//!
//! A target whose path holds a dot segment (`.` or `..`, also written
//! `%2e`, `.%2E`, or hidden behind an encoded slash, `..%2f`) or a backslash
//! (`\`, `%5c`) is refused: an upstream or a framework that normalises it
//! would resolve it above `--upstream`'s prefix (`/api/../admin`). Every
//! other target goes out exactly as it came in and as it was fingerprinted,
//! appended to the prefix, with nothing re-encoded (hyper's client sends
//! the `Uri` it is given; `url` would re-encode `"`, `{`, `}` and remove
//! `/./`).

use axum::http::Uri;
use axum::http::uri::{Authority, PathAndQuery, Scheme};

/// Why a target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an origin-form path (`*`, or no leading `/`).
    NotAPath,
    /// A `.` or `..` segment, plain or percent-encoded.
    DotSegment,
    /// A backslash, plain or percent-encoded.
    Backslash,
}

impl Refusal {
    /// The problem detail.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::NotAPath => {
                "the request target is not a path starting with `/`; nothing was forwarded"
            }
            Refusal::DotSegment => {
                "the request path holds a `.` or `..` segment (perhaps percent-encoded), which could reach above the upstream's prefix; nothing was forwarded"
            }
            Refusal::Backslash => {
                "the request path holds a backslash (perhaps percent-encoded), which some servers read as `/`; nothing was forwarded"
            }
        }
    }
}

/// `text` with `%2e`, `%2f` and `%5c` decoded (any case): enough to see a
/// segment the way a decoding server would split and resolve it.
fn decode_separators(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_lowercase);
        match code.as_deref() {
            Some("2e") => out.push('.'),
            Some("2f") => out.push('/'),
            Some("5c") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// Checks a request's path (without its query).
pub fn check(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::NotAPath);
    }
    let check_decoded = |decoded: &str| {
        if decoded.contains('\\') {
            return Err(Refusal::Backslash);
        }
        if decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(Refusal::DotSegment);
        }
        Ok(())
    };
    // Most paths hold no escape: checked as they are, without a copy.
    if path.contains('%') {
        check_decoded(&decode_separators(path))
    } else {
        check_decoded(path)
    }
}

/// Where requests go: the upstream's scheme and authority, and its path
/// prefix without a trailing slash.
#[derive(Debug, Clone)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

impl Base {
    /// From `--upstream` (already checked to be http(s) with a host).
    pub fn new(upstream: &url::Url) -> Result<Self, String> {
        let scheme = if upstream.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = upstream.host_str().unwrap_or_default();
        let authority = match upstream.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            scheme,
            authority: authority
                .parse()
                .map_err(|_| "the upstream's host is not a valid authority".to_owned())?,
            prefix: upstream.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The upstream URI for a request target (checked by [`check`]): the
    /// prefix, then the path and query exactly as received.
    pub fn uri(&self, target: &PathAndQuery) -> Result<Uri, String> {
        let path_and_query: PathAndQuery = format!("{}{}", self.prefix, target.as_str())
            .parse()
            .map_err(|_| "the upstream request target is not valid".to_owned())?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_backslashes_are_refused_in_every_spelling() {
        for bad in [
            "/../admin/users",
            "/api/./x",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2E/admin",
            "/%2e./admin",
            "/..%2fadmin",
            "/a/%2e%2e%2f%2e%2e/etc",
            "/..",
            "/.",
        ] {
            assert_eq!(check(bad), Err(Refusal::DotSegment), "{bad}");
        }
        for bad in ["/..\\admin", "/a\\b", "/a%5cb", "/a%5Cb"] {
            assert_eq!(check(bad), Err(Refusal::Backslash), "{bad}");
        }
        assert_eq!(check("*"), Err(Refusal::NotAPath));
    }

    #[test]
    fn ordinary_paths_pass_untouched() {
        for good in [
            "/",
            "/deployments",
            "/a..b/c",
            "/.well-known/x",
            "/projects/group%2Fproject",
            "/x/%2e%2ex",
            "/a%zz",
            "/v1/\"quoted\"/{id}/'s",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn the_target_is_appended_to_the_prefix_byte_for_byte() {
        let base = Base::new(&"http://127.0.0.1:9000/api/".parse().unwrap()).unwrap();
        // (`"` is valid in a path, not in a query: hyper refuses such a
        // request before it reaches the gateway.)
        let target: PathAndQuery = "/v1/%22x%22/\"y\"/{id}/'s?q=a%20b&r={c}".parse().unwrap();
        assert_eq!(
            base.uri(&target).unwrap().to_string(),
            "http://127.0.0.1:9000/api/v1/%22x%22/\"y\"/{id}/'s?q=a%20b&r={c}"
        );
        let root = Base::new(&"https://api.example".parse().unwrap()).unwrap();
        assert_eq!(
            root.uri(&"/x".parse().unwrap()).unwrap().to_string(),
            "https://api.example/x"
        );
    }
}
