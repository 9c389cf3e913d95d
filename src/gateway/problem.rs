//! Failures answered as RFC 9457 problem details (`application/problem+json`),
//! never as dropped connections.

use crate::shared::protocol::PROBLEM_TYPE_PREFIX;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A problem the gateway reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// `400`: the key header is unusable, missing (with `--require-key`),
    /// the target is refused, or the upload was cut off.
    Invalid,
    /// `401`: the caller cannot be identified (a JWT that does not verify).
    Unauthorized,
    /// `408`: the body did not arrive in time.
    BodyTimeout,
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
    /// `503`: the request-body budget is spent; nothing was forwarded.
    Overloaded,
    /// `503`: as many upstream requests are in flight as the gateway sends
    /// at once; nothing was forwarded.
    UpstreamBusy,
    /// `503`: the memory store holds `--memory-max-bytes` of records; a new
    /// key was not forwarded.
    StoreFull,
    /// `501`: the request's body has a transfer coding besides `chunked`,
    /// which the gateway does not decode; nothing was forwarded.
    TransferCoding,
    /// `503`: the gateway holds `--max-connections` connections; a new one
    /// gets this answer to its first request and is closed.
    TooManyConnections,
}

impl Problem {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Problem::Invalid => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid idempotent request",
            ),
            Problem::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The caller could not be identified",
            ),
            Problem::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "The request body did not arrive in time",
            ),
            Problem::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many request bodies in progress",
            ),
            Problem::UpstreamBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-upstream-requests",
                "Too many upstream requests in flight",
            ),
            Problem::StoreFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-full",
                "The idempotency store is full",
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
            Problem::TransferCoding => (
                StatusCode::NOT_IMPLEMENTED,
                "unsupported-transfer-coding",
                "Transfer coding not implemented",
            ),
            Problem::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Idempotency store unavailable",
            ),
            Problem::TooManyConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-connections",
                "Too many connections",
            ),
        }
    }

    /// The response: status, problem+json body, `Retry-After: 1` for 409
    /// and the overload 503s, `Retry-After: 60` for the full store's 503,
    /// `WWW-Authenticate: Bearer` for 401.
    pub fn respond(self, detail: &str) -> Response {
        let (status, slug, title) = self.parts();
        let body = serde_json::json!({
            "type": format!("{PROBLEM_TYPE_PREFIX}{slug}"),
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
        if matches!(
            self,
            Problem::InFlight
                | Problem::Overloaded
                | Problem::UpstreamBusy
                | Problem::TooManyConnections
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self == Problem::StoreFull {
            // Room comes back when the sweep (every minute) deletes records.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if self == Problem::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::protocol::{
        KEY_REUSED_TYPE, NOT_STORED_TYPE, OUTCOME_UNKNOWN_TYPE, UNAUTHORIZED_TYPE,
    };

    /// The client recognises these types by the constants in `shared`.
    #[test]
    fn the_types_the_client_recognises_are_the_ones_answered() {
        for (problem, expected) in [
            (Problem::OutcomeUnknown, OUTCOME_UNKNOWN_TYPE),
            (Problem::NotStored, NOT_STORED_TYPE),
            (Problem::Mismatch, KEY_REUSED_TYPE),
            (Problem::Unauthorized, UNAUTHORIZED_TYPE),
        ] {
            let (_, slug, _) = problem.parts();
            assert_eq!(format!("{PROBLEM_TYPE_PREFIX}{slug}"), expected);
        }
    }
}
