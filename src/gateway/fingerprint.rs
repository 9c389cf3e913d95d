//! What a request asks for: its fingerprint, a SHA-256 of method, path and
//! query (as received), content type, the body bytes as received and their
//! content coding, taken after hop-by-hop headers are removed. The same key
//! with another fingerprint is answered `422`. Also the short key hash for
//! logs.

use crate::shared::framing::FramedHasher;
use axum::http::{
    HeaderMap, Method, Uri,
    header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName},
};
use std::borrow::Cow;

/// The request fingerprint.
///
/// Fields, framed: the method; the path and query; every `Content-Type`
/// value, joined by a line feed (a field value cannot hold one), so a
/// repeated header that a framework may read either way cannot hide a change;
/// the body; and, only when the request has one, every `Content-Encoding`
/// value, joined alike: the same bytes gzip-coded and not are two payloads.
/// Leaving the last field out when the header is absent keeps the
/// fingerprint of every request without it what it was before the field
/// existed, so records stored by an older gateway still match their retries.
pub fn fingerprint(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> [u8; 32] {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut hasher = FramedHasher::default();
    hasher
        .field(method.as_str().as_bytes())
        .field(path_and_query.as_bytes())
        .field(&joined(headers, &CONTENT_TYPE))
        .field(body);
    if headers.contains_key(CONTENT_ENCODING) {
        hasher.field(&joined(headers, &CONTENT_ENCODING));
    }
    hasher.finish()
}

/// Every value of `name`, in order, joined by `\n`; empty when absent.
/// Borrowed when there is at most one, which is every request but a rare one.
fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Cow<'a, [u8]> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Cow::Borrowed(b"");
    };
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return Cow::Borrowed(first.as_bytes());
    }
    let mut out = first.as_bytes().to_vec();
    for value in rest {
        out.push(b'\n');
        out.extend_from_slice(value.as_bytes());
    }
    Cow::Owned(out)
}

/// A short hash of a key for logs: the raw key is never logged.
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    // By table: `write!` with `{:02x}` per byte was about 1,400 instructions
    // a request (callgrind).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hash = String::with_capacity(12);
    for byte in &Sha256::digest(key.as_bytes())[..6] {
        hash.push(char::from(HEX[usize::from(byte >> 4)]));
        hash.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_headers::headers;

    #[test]
    fn fingerprint_covers_method_path_query_type_and_body() {
        let uri: Uri = "/deploy?env=prod".parse().unwrap();
        let json = headers(&[("content-type", "application/json")]);
        let base = fingerprint(&Method::POST, &uri, &json, b"{}");
        assert_eq!(base, fingerprint(&Method::POST, &uri, &json, b"{}"));
        assert_ne!(base, fingerprint(&Method::PATCH, &uri, &json, b"{}"));
        assert_ne!(
            base,
            fingerprint(
                &Method::POST,
                &"/deploy?env=dev".parse().unwrap(),
                &json,
                b"{}"
            )
        );
        assert_ne!(base, fingerprint(&Method::POST, &uri, &headers(&[]), b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri, &json, b"{ }"));
    }

    #[test]
    fn a_request_without_content_encoding_keeps_the_fingerprint_of_four_fields() {
        // The fingerprint before the content coding joined it: records stored
        // then must still match their retries.
        let uri: Uri = "/deploy?env=prod".parse().unwrap();
        let mut four = FramedHasher::default();
        four.field(b"POST")
            .field(b"/deploy?env=prod")
            .field(b"application/json")
            .field(b"{}");
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(
            fingerprint(&Method::POST, &uri, &json, b"{}"),
            four.finish()
        );
    }

    #[test]
    fn the_content_coding_and_every_content_type_are_part_of_the_payload() {
        let uri: Uri = "/deploy".parse().unwrap();
        let body = b"\x1f\x8b\x08\x00";
        let plain = fingerprint(&Method::POST, &uri, &headers(&[]), body);
        let gzip = fingerprint(
            &Method::POST,
            &uri,
            &headers(&[("content-encoding", "gzip")]),
            body,
        );
        let empty_coding = fingerprint(
            &Method::POST,
            &uri,
            &headers(&[("content-encoding", "")]),
            body,
        );
        assert_ne!(plain, gzip);
        assert_ne!(
            plain, empty_coding,
            "a header present but empty is not absent"
        );
        assert_ne!(
            gzip,
            fingerprint(
                &Method::POST,
                &uri,
                &headers(&[("content-encoding", "gzip"), ("content-encoding", "br")]),
                body,
            )
        );
        let one = headers(&[("content-type", "application/json")]);
        let two = headers(&[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ]);
        assert_ne!(
            fingerprint(&Method::POST, &uri, &one, b"{}"),
            fingerprint(&Method::POST, &uri, &two, b"{}"),
            "a second Content-Type is not ignored"
        );
    }

    #[test]
    fn key_hash_is_short_and_not_the_key() {
        let hash = key_hash("secret-key");
        assert_eq!(
            hash, "85dbe15d75ef",
            "the first 6 bytes of its SHA-256, in hex"
        );
        assert!(!hash.contains("secret"));
    }
}
