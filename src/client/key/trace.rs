//! The trace context sent with every attempt: a W3C `traceparent` whose
//! trace-id is derived from the idempotency key, so the attempts and the
//! re-runs of one operation share one trace-id, and one search in the
//! client's and the gateway's logs (or a tracing backend) finds them all.
//! Each attempt gets a fresh span-id.
//!
//! The trace-id is the first 16 bytes of a SHA-256 over the framed fields
//! `idempotent-request/trace/v1` and the key as sent. It reveals nothing
//! the key does not (the key travels with the request anyway). A request
//! without a key gets a random trace-id, the same for all its attempts.

use crate::shared::framing::FramedHasher;
use crate::shared::traceparent::{TraceParent, hex};

/// The version tag of the trace-id derivation.
pub const TRACE_TAG: &str = "idempotent-request/trace/v1";

/// What the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// A `traceparent` of ours with this trace-id, a fresh span per attempt.
    Ours([u8; 16]),
    /// The user's own `traceparent` (from `headers`), sent unchanged.
    Users([u8; 16]),
    /// None (`send-traceparent: false`).
    Off,
}

impl Trace {
    /// The trace-id as 32 hex digits, or `""` when none is sent.
    pub fn id_hex(&self) -> String {
        match self {
            Trace::Ours(id) | Trace::Users(id) => hex(id),
            Trace::Off => String::new(),
        }
    }

    /// The `traceparent` header value for one attempt, when it is ours:
    /// sampled (flag `01`), so backends that follow the caller's sampling
    /// keep every attempt.
    pub fn header_for_attempt(&self, span_id: [u8; 8]) -> Option<String> {
        match self {
            Trace::Ours(trace_id) => Some(
                TraceParent {
                    trace_id: *trace_id,
                    parent_id: nonzero(span_id),
                    flags: 1,
                }
                .to_string(),
            ),
            Trace::Users(_) | Trace::Off => None,
        }
    }
}

/// The trace-id for `key` (or a random one without a key).
pub fn trace_id(key: Option<&str>) -> [u8; 16] {
    let id = match key {
        Some(key) => {
            let mut hasher = FramedHasher::default();
            hasher.field(TRACE_TAG.as_bytes()).field(key.as_bytes());
            let digest = hasher.finish();
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest[..16]);
            id
        }
        None => rand::random(),
    };
    nonzero(id)
}

/// W3C forbids all-zero ids; a zero id (probability 2^-128) becomes 1.
fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_trace_and_a_new_span_per_attempt() {
        let trace = Trace::Ours(trace_id(Some("k-1")));
        assert_eq!(trace, Trace::Ours(trace_id(Some("k-1"))));
        assert_ne!(trace, Trace::Ours(trace_id(Some("k-2"))));
        let first = trace.header_for_attempt([1; 8]).unwrap();
        let second = trace.header_for_attempt([2; 8]).unwrap();
        assert_ne!(first, second);
        let (a, b) = (
            TraceParent::parse(&first).unwrap(),
            TraceParent::parse(&second).unwrap(),
        );
        assert_eq!(a.trace_id, b.trace_id);
        assert_eq!(a.flags, 1);
        assert_eq!(trace.id_hex(), a.trace_id_hex());
    }

    /// The README's vector, computed by `scripts/key-vectors.py`.
    #[test]
    fn published_vector() {
        assert_eq!(
            hex(&trace_id(Some("ae6cb888-153b-8630-a265-6925d0ff6072"))),
            "e2d2aecbf810917d8321348755de89d6"
        );
    }

    #[test]
    fn the_users_trace_and_off_send_nothing_of_ours() {
        assert_eq!(Trace::Users([7; 16]).header_for_attempt([1; 8]), None);
        assert_eq!(Trace::Off.header_for_attempt([1; 8]), None);
        assert_eq!(Trace::Off.id_hex(), "");
        assert_eq!(nonzero([0u8; 8]), [0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
