//! Failures answered as RFC 9457 problem details (`application/problem+json`),
//! never as dropped connections.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A problem the gateway reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// `400`: the key header is unusable, missing (with `--require-key`) or
    /// the upload was cut off.
    Invalid,
    /// `409`: the same key is still being forwarded.
    InFlight,
    /// `413`: the body is larger than `--max-body`.
    TooLarge,
    /// `422`: the key was used for a different request.
    Mismatch,
    /// `502`: the upstream could not be reached (nothing was sent).
    Unreachable,
    /// `502`: sent, but whether the upstream acted is unknown.
    OutcomeUnknown,
    /// `502`: the upstream's answer could not be stored.
    NotStored,
    /// `503`: the store is unavailable; nothing was forwarded.
    StoreUnavailable,
}

impl Problem {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Problem::Invalid => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid idempotent request",
            ),
            Problem::InFlight => (
                StatusCode::CONFLICT,
                "in-flight",
                "A request with this key is in progress",
            ),
            Problem::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            Problem::Mismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-reused",
                "Idempotency key reused for a different request",
            ),
            Problem::Unreachable => (
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                "Upstream unreachable",
            ),
            Problem::OutcomeUnknown => (
                StatusCode::BAD_GATEWAY,
                "outcome-unknown",
                "Outcome unknown",
            ),
            Problem::NotStored => (
                StatusCode::BAD_GATEWAY,
                "outcome-not-stored",
                "Outcome not stored",
            ),
            Problem::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Idempotency store unavailable",
            ),
        }
    }

    /// The response: status, problem+json body, and `Retry-After: 1` for 409.
    pub fn respond(self, detail: &str) -> Response {
        let (status, slug, title) = self.parts();
        let body = serde_json::json!({
            "type": format!("urn:idempotency-gateway:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self == Problem::InFlight {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
