//! What a request asks for: its fingerprint, a SHA-256 of method, path and
//! query (as received), content type and the body bytes as received, taken
//! after hop-by-hop headers are removed. The same key with another
//! fingerprint is answered `422`. Also the short key hash for logs.

use crate::shared::framing::FramedHasher;
use axum::http::{HeaderMap, Method, Uri, header::CONTENT_TYPE};

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
    use std::fmt::Write;
    let mut hash = String::with_capacity(12);
    for byte in &Sha256::digest(key.as_bytes())[..6] {
        // Into one string: a `format!` per byte was six allocations a request.
        let _ = write!(hash, "{byte:02x}");
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
    fn key_hash_is_short_and_not_the_key() {
        let hash = key_hash("secret-key");
        assert_eq!(
            hash, "85dbe15d75ef",
            "the first 6 bytes of its SHA-256, in hex"
        );
        assert!(!hash.contains("secret"));
    }
}
