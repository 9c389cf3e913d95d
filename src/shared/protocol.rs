//! What the client and the gateway agree on over the wire: the headers that
//! mark a replay, delta-seconds (`Retry-After`, `Age`), and the problem
//! types the gateway answers with (RFC 9457 `type` URNs), of which the
//! client recognises "outcome unknown", "key reused" and "unauthorized".

/// An HTTP delta-seconds value (RFC 9111 §1.2.2, used by `Retry-After`
/// and `Age`): one or more digits, nothing else. A value too large for a
/// `u64` saturates instead of failing, as the RFC asks.
pub fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// The header the gateway adds to every replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Every header name servers use to mark a replay (value `true`).
pub const REPLAYED_HEADERS: [&str; 3] = [
    "idempotent-replayed",
    "idempotency-replayed",
    "x-idempotent-replayed",
];

/// The header among [`REPLAYED_HEADERS`] that marks `headers` (names
/// lower-case) as a replay with the value `true`, if any.
pub fn replay_marker(headers: &[(String, String)]) -> Option<&'static str> {
    REPLAYED_HEADERS.iter().copied().find(|marker| {
        headers
            .iter()
            .any(|(name, value)| name == marker && value.trim().eq_ignore_ascii_case("true"))
    })
}

/// The prefix of the gateway's problem types.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:idempotency-gateway:problem:";

/// The problem type of "sent upstream, but whether it acted is unknown":
/// retrying cannot help, and the gateway never sends it again.
pub const OUTCOME_UNKNOWN_TYPE: &str = "urn:idempotency-gateway:problem:outcome-unknown";

/// The problem type of "this key was used for a different request"
/// (`422`): nothing was forwarded, and the same key never will be for
/// this request.
pub const KEY_REUSED_TYPE: &str = "urn:idempotency-gateway:problem:key-reused";

/// The problem type of "the caller could not be identified" (`401`, in
/// the gateway's JWT mode): no bearer JWT, or one that does not verify.
pub const UNAUTHORIZED_TYPE: &str = "urn:idempotency-gateway:problem:unauthorized";

/// The problem type of "the upstream answered, but too largely to store".
pub const NOT_STORED_TYPE: &str = "urn:idempotency-gateway:problem:outcome-not-stored";

/// Whether a problem+json body (its first bytes) names `problem_type`.
/// Tolerant of anything that is not such a document: `false`.
pub fn is_problem(content_type: Option<&str>, body: &[u8], problem_type: &str) -> bool {
    let is_problem_json = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/problem+json"))
    });
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    is_problem_json
        && serde_json::from_slice::<Problem>(body)
            .ok()
            .and_then(|p| p.kind)
            .is_some_and(|kind| kind == problem_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_unknown_is_recognised_only_as_a_problem_document() {
        let body = br#"{"type":"urn:idempotency-gateway:problem:outcome-unknown","status":502}"#;
        assert!(is_problem(
            Some("application/problem+json"),
            body,
            OUTCOME_UNKNOWN_TYPE
        ));
        assert!(!is_problem(
            Some("application/json"),
            body,
            OUTCOME_UNKNOWN_TYPE
        ));
        assert!(!is_problem(
            Some("application/problem+json"),
            b"{\"type\":\"other\"}",
            OUTCOME_UNKNOWN_TYPE
        ));
        assert!(!is_problem(
            Some("application/problem+json"),
            b"{",
            OUTCOME_UNKNOWN_TYPE
        ));
    }
}
