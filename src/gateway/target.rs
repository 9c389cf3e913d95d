//! The request target: checked, then forwarded byte for byte under the
//! upstream's path prefix.
//!
//! A target whose path holds a dot segment or a backslash is refused: an
//! upstream or a framework that normalises it would resolve it above
//! `--upstream`'s prefix (`/api/../admin`). Servers disagree on what a dot
//! segment is, so every spelling one of them reads as one counts: plain or
//! percent-encoded in any case (`%2e`, `.%2E`), behind an encoded slash
//! (`..%2f`), encoded twice or more (`%252e`), IIS's `%u002e`, overlong
//! UTF-8 (`%c0%ae`), and with path parameters (`..;jsessionid=x`, which
//! Tomcat and Jetty resolve as `..`). An encoded NUL is refused too: some
//! servers cut the path there. Every other target goes out exactly as it
//! came in and as it was fingerprinted, appended to the prefix, with
//! nothing re-encoded (hyper's client sends the `Uri` it is given; `url`
//! would re-encode `"`, `{`, `}` and remove `/./`).

use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, Uri, Version, header};

/// Why a target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an origin-form path (`*`, or no leading `/`).
    NotAPath,
    /// A `.` or `..` segment, plain or percent-encoded.
    DotSegment,
    /// A backslash, plain or percent-encoded.
    Backslash,
    /// An encoded NUL.
    Nul,
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
            Refusal::Nul => {
                "the request path holds an encoded NUL (`%00`), where some servers cut the path; nothing was forwarded"
            }
        }
    }
}

/// What a decoding server may read as a dot, a separator or a NUL,
/// beyond the plain character (matched in any letter case). `%25` is `%`,
/// so a target encoded twice is decoded twice.
const SPELLINGS: &[(&str, char)] = &[
    ("%2e", '.'),
    ("%2f", '/'),
    ("%5c", '\\'),
    ("%00", '\0'),
    ("%25", '%'),
    ("%u002e", '.'),
    ("%u002f", '/'),
    ("%u005c", '\\'),
    ("%c0%ae", '.'),
    ("%c0%af", '/'),
    ("%c1%9c", '\\'),
];

/// `text` with one pass of [`SPELLINGS`] decoded; `None` when it holds
/// none of them.
fn decode_once(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut decoded = false;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let spelling = SPELLINGS.iter().find(|(spelled, _)| {
            tail.get(..spelled.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(spelled))
        });
        match spelling {
            Some((spelled, plain)) => {
                out.push(*plain);
                rest = &tail[spelled.len()..];
                decoded = true;
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    decoded.then_some(out)
}

/// Checks a path as a server would see it once every spelling is decoded.
fn check_decoded(decoded: &str) -> Result<(), Refusal> {
    if decoded.contains('\\') {
        return Err(Refusal::Backslash);
    }
    if decoded.contains('\0') {
        return Err(Refusal::Nul);
    }
    // A segment's path parameters (`;…`) are not part of its name.
    let dot_segment = decoded.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        name == "." || name == ".."
    });
    if dot_segment {
        return Err(Refusal::DotSegment);
    }
    Ok(())
}

/// Checks a request's path (without its query).
pub fn check(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::NotAPath);
    }
    check_decoded(path)?;
    // Each pass is shorter than the one before, so this ends.
    let mut current = std::borrow::Cow::Borrowed(path);
    while let Some(next) = decode_once(&current) {
        check_decoded(&next)?;
        current = std::borrow::Cow::Owned(next);
    }
    Ok(())
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

    /// `HOST` or `HOST:PORT` (the port only when `--upstream` gave one
    /// that is not the scheme's default): the `Host` the upstream gets.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The upstream's request target, in origin form, for a request target
    /// (checked by [`check`]): the prefix, then the path and query exactly
    /// as received.
    pub fn origin(&self, target: &PathAndQuery) -> Result<PathAndQuery, String> {
        format!("{}{}", self.prefix, target.as_str())
            .parse()
            .map_err(|_| "the upstream request target is not valid".to_owned())
    }

    /// The upstream URI for a request target: [`Base::origin`] under the
    /// upstream's scheme and authority.
    pub fn uri(&self, target: &PathAndQuery) -> Result<Uri, String> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.origin(target)?)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// Checks the `Host` header as RFC 9112 §3.2 asks of a server: an
/// HTTP/1.1 request without one, any request with more than one, and a
/// value that is not `host[:port]` are refused (`400`), so the gateway does
/// not guard a request whose origin another hop would read differently. It
/// is not forwarded either way: the upstream gets `--upstream`'s authority.
/// An empty value is allowed: RFC 9112 has a client send one for a target
/// URI without an authority.
pub fn check_host(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => {
            Err("an HTTP/1.1 request needs a Host header (RFC 9112 §3.2); nothing was forwarded")
        }
        (Some(_), Some(_)) => {
            Err("the request has more than one Host header (RFC 9112 §3.2); nothing was forwarded")
        }
        (Some(host), None) if !host.is_empty() && !is_host_and_port(host.as_bytes()) => Err(
            "the request's Host header is not a host and optional port (RFC 9112 §3.2); nothing was forwarded",
        ),
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a bracketed
/// IP literal or a name of unreserved, percent-encoded and sub-delimiter
/// characters (an IPv4 address is one), then an optional `:` and digits.
/// Checked byte by byte: `http`'s `Authority` would allocate a copy on
/// every request, and it takes user-info and leaves the port unchecked.
fn is_host_and_port(value: &[u8]) -> bool {
    // What follows the host: nothing, or `:` and the port.
    let rest = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        if !made_of(&value[1..end], b":.-_~!$&'()*+,;=") {
            return false;
        }
        &value[end + 1..]
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        if !made_of(&value[..end], b"-._~%!$&'()*+,;=") {
            return false;
        }
        &value[end..]
    };
    match rest.split_first() {
        None => true,
        Some((b':', port)) => port.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// Whether `part` is not empty and holds only letters, digits and `extra`.
fn made_of(part: &[u8], extra: &[u8]) -> bool {
    !part.is_empty()
        && part
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_header_must_be_there_once_and_well_formed() {
        use crate::gateway::test_headers::headers;
        let one = headers(&[("host", "api.example:8080")]);
        assert_eq!(check_host(Version::HTTP_11, &one), Ok(()));
        assert_eq!(
            check_host(Version::HTTP_11, &headers(&[("host", "")])),
            Ok(())
        );
        assert_eq!(check_host(Version::HTTP_10, &headers(&[])), Ok(()));
        assert_eq!(check_host(Version::HTTP_2, &headers(&[])), Ok(()));
        let missing = check_host(Version::HTTP_11, &headers(&[])).unwrap_err();
        assert!(missing.contains("needs a Host header"), "{missing}");
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            let two = headers(&[("host", "a.example"), ("host", "b.example")]);
            let error = check_host(version, &two).unwrap_err();
            assert!(error.contains("more than one"), "{error}");
        }
        for good in [
            "[::1]:8080",
            "[::1]",
            "127.0.0.1",
            "a.example:",
            "xn--bcher-kva.example",
            "a%2Db.example:443",
        ] {
            assert_eq!(
                check_host(Version::HTTP_11, &headers(&[("host", good)])),
                Ok(()),
                "{good}"
            );
        }
        for bad in [
            "a b",
            "a.example/path",
            "user@a.example",
            "a.example:port",
            "a.example:80:80",
            "[::1",
            "[]:80",
            "[::1]x",
            ":80",
            "a\"b.example",
        ] {
            let error = check_host(Version::HTTP_11, &headers(&[("host", bad)])).expect_err(bad);
            assert!(error.contains("not a host"), "{bad}: {error}");
        }
    }

    #[test]
    fn dot_segments_backslashes_and_nuls_are_refused_in_every_spelling() {
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
            "/..;/admin",
            "/api/..;jsessionid=x/admin",
            "/.;/x",
            "/%2e%2e;/admin",
            "/%252e%252e/admin",
            "/%25252E%25252E/admin",
            "/..%252fadmin",
            "/%u002e%u002e/admin",
            "/%U002E./admin",
            "/%c0%ae%c0%ae/admin",
            "/..%c0%afadmin",
        ] {
            assert_eq!(check(bad), Err(Refusal::DotSegment), "{bad}");
        }
        for bad in [
            "/..\\admin",
            "/a\\b",
            "/a%5cb",
            "/a%5Cb",
            "/a%255cb",
            "/a%u005cb",
            "/a%c1%9cb",
        ] {
            assert_eq!(check(bad), Err(Refusal::Backslash), "{bad}");
        }
        for bad in ["/a/%00/b", "/.%00./admin", "/a%2500"] {
            assert_eq!(check(bad), Err(Refusal::Nul), "{bad}");
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
            "/a%",
            "/a%2",
            "/a%u00",
            "/v1/\"quoted\"/{id}/'s",
            "/cars;color=red/x",
            "/a;/b",
            "/..a;/b",
            "/files/100%25",
            "/search/%252F",
            "/caf%C3%A9/%c0",
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
