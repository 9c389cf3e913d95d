//! Hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and the headers it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding` and `Upgrade` belong to one connection and are never
//! forwarded, in either direction. They are removed before the request is
//! fingerprinted and before an answer is stored, so what is fingerprinted,
//! forwarded and replayed is the same end-to-end message. `Host` and
//! `Content-Length` are set by the HTTP stack for the next hop.

use axum::http::{HeaderMap, HeaderName, header};

/// Always hop-by-hop.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is always hop-by-hop (removed before anything reads it).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The header names `Connection` nominates (comma-separated tokens).
fn nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes every hop-by-hop header, those `Connection` names included.
pub fn strip(headers: &mut HeaderMap) {
    for name in nominated(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether the request's `Transfer-Encoding` applies a coding besides the
/// one `chunked` (`gzip, chunked`). The HTTP stack removes only `chunked`;
/// once the header is stripped, the upstream would read the still-coded
/// bytes as the body, so such a request is refused (`501`, RFC 9112 §6.1)
/// instead of forwarded. The check runs before [`strip`].
pub fn has_unsupported_transfer_coding(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some(),
    }
}

/// [`strip`], and the headers the HTTP stack sets for the next hop (`Host`,
/// `Content-Length`): what a request carries to the upstream.
pub fn strip_for_forwarding(headers: &mut HeaderMap) {
    strip(headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_single_chunked_is_a_supported_transfer_coding() {
        let coded = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(value));
            }
            has_unsupported_transfer_coding(&headers)
        };
        assert!(!coded(&[]));
        assert!(!coded(&["chunked"]));
        assert!(!coded(&["Chunked"]));
        assert!(!coded(&[" chunked "]));
        assert!(coded(&["gzip, chunked"]));
        assert!(coded(&["gzip", "chunked"]), "over two header lines");
        assert!(coded(&["chunked, chunked"]));
        assert!(coded(&["identity"]));
        assert!(coded(&["x-custom,chunked"]));
    }

    #[test]
    fn connection_nominated_headers_go_too() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret-Hop , content-type"),
            ("connection", "upgrade"),
            ("x-secret-hop", "1"),
            ("content-type", "application/json"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("host", "gateway.example"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "traceparent"]);
        strip_for_forwarding(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["traceparent"]);
    }
}
