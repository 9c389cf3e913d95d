//! Who is asking (the caller) and what they ask (the fingerprint).
//!
//! The caller is a SHA-256 of the values of the `--scope-headers`, so a
//! stored response is only ever replayed to the caller that created it: a
//! key guessed by another caller names a different record. The fingerprint
//! is a SHA-256 of method, path and query, content type and the body bytes
//! as received; the same key with another fingerprint is answered `422`.

use crate::shared::framing::FramedHasher;
use axum::http::{HeaderMap, HeaderName, Method, Uri, header::CONTENT_TYPE};

/// The caller hash: each scope header's name and every value it has.
pub fn caller(headers: &HeaderMap, scope_headers: &[HeaderName]) -> [u8; 32] {
    let mut hasher = FramedHasher::default();
    for name in scope_headers {
        hasher.field(name.as_str().as_bytes());
        for value in headers.get_all(name) {
            hasher.field(value.as_bytes());
        }
        hasher.field(b"");
    }
    hasher.finish()
}

/// The request fingerprint.
pub fn fingerprint(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> [u8; 32] {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let content_type = headers.get(CONTENT_TYPE).map_or(&b""[..], |v| v.as_bytes());
    let mut hasher = FramedHasher::default();
    hasher
        .field(method.as_str().as_bytes())
        .field(path_and_query.as_bytes())
        .field(content_type)
        .field(body);
    hasher.finish()
}

/// A short hash of a key for logs: the raw key is never logged.
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn callers_differ_by_scope_header_values_only() {
        let scope = [HeaderName::from_static("authorization")];
        let alice = caller(
            &headers(&[("authorization", "Bearer a"), ("x-other", "1")]),
            &scope,
        );
        let alice2 = caller(
            &headers(&[("authorization", "Bearer a"), ("x-other", "2")]),
            &scope,
        );
        let bob = caller(&headers(&[("authorization", "Bearer b")]), &scope);
        let nobody = caller(&headers(&[]), &scope);
        assert_eq!(alice, alice2);
        assert_ne!(alice, bob);
        assert_ne!(alice, nobody);
    }

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
    fn key_hash_is_short_and_not_the_key() {
        let hash = key_hash("secret-key");
        assert_eq!(hash.len(), 12);
        assert!(!hash.contains("secret"));
    }
}
