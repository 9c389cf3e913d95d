//! The retry decision: given what one attempt produced, stop or wait and try
//! again. Pure: the attempt number, the remaining deadline, the wall clock
//! (for HTTP-date `Retry-After`) and the next backoff wait are all passed in.

use crate::client::input::status::StatusSet;
use crate::client::send::retry_after;
use std::time::{Duration, SystemTime};

/// What one attempt produced, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// A complete response.
    Status {
        /// Its status code.
        code: u16,
        /// Its `Retry-After` header, if any.
        retry_after: Option<&'a str>,
        /// Whether it is the gateway's "outcome unknown" problem: the request
        /// reached the upstream once and will never be sent again, so
        /// retrying only replays the same answer.
        outcome_unknown: bool,
    },
    /// No complete response.
    Failure(Failure),
}

/// Why an attempt produced no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request never left (DNS, refused, connect timeout): retried.
    NotSent,
    /// Sent, but no complete response (reset, early close, read timeout,
    /// truncated body): retried, which is safe because the key goes along.
    NoResponse,
    /// TLS handshake or certificate failure: a configuration error, final.
    Tls,
    /// The response body exceeded `max-response-size`: final.
    TooLarge,
    /// The response's head (status line and headers) is more than the
    /// HTTP client reads: final, since the server answered and every retry
    /// would get the same head.
    HeadTooLarge,
    /// The answer is not a valid HTTP response head (not HTTP at all, an
    /// invalid status line, a malformed or conflicting framing header):
    /// final, since something answered and every retry would get the same.
    NotHttp,
    /// The request could not be built (the body file vanished, a response
    /// file could not be written): final.
    Local,
    /// The `body-file` changed during the run, so its bytes differ from
    /// those the key was derived for: final (exit 2).
    BodyChanged,
}

/// The policy's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The response is accepted.
    Success,
    /// Wait, then try again.
    Retry {
        /// How long to wait.
        wait: Duration,
        /// Where the wait comes from.
        source: WaitSource,
    },
    /// Stop with this outcome as the final one.
    Stop(StopReason),
}

/// Where a wait comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSource {
    /// The server's `Retry-After`.
    RetryAfter,
    /// Exponential backoff with jitter.
    Backoff,
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A status that is neither accepted nor retried.
    FinalStatus,
    /// A failure that retrying cannot fix.
    FinalFailure,
    /// `max-attempts` were used up.
    AttemptsExhausted,
    /// The gateway answered "outcome unknown": the request was sent once
    /// and whether it acted is unknown; the gateway never re-sends it.
    OutcomeUnknown,
    /// The next wait would pass the deadline.
    DeadlineWouldPass {
        /// The wait that did not fit.
        wait: Duration,
    },
}

/// The settings the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `accept-status`.
    pub accept: StatusSet,
    /// `retry-on-status`.
    pub retry_on: StatusSet,
    /// `max-attempts`.
    pub max_attempts: u32,
}

/// Decides what to do after attempt number `attempt` (1-based).
///
/// `remaining` is the time left before the deadline, `now` the wall clock
/// for HTTP-date `Retry-After`, `backoff` the next jittered backoff wait.
pub fn decide(
    policy: &Policy,
    outcome: Outcome<'_>,
    attempt: u32,
    remaining: Duration,
    now: SystemTime,
    backoff: Duration,
) -> Decision {
    let retry_after = match outcome {
        Outcome::Status { code, .. } if policy.accept.contains(code) => return Decision::Success,
        Outcome::Status {
            outcome_unknown: true,
            ..
        } => return Decision::Stop(StopReason::OutcomeUnknown),
        Outcome::Status { code, .. } if !policy.retry_on.contains(code) => {
            return Decision::Stop(StopReason::FinalStatus);
        }
        Outcome::Status { retry_after, .. } => retry_after.and_then(|v| retry_after::parse(v, now)),
        Outcome::Failure(Failure::NotSent | Failure::NoResponse) => None,
        Outcome::Failure(
            Failure::Tls
            | Failure::TooLarge
            | Failure::HeadTooLarge
            | Failure::NotHttp
            | Failure::Local
            | Failure::BodyChanged,
        ) => {
            return Decision::Stop(StopReason::FinalFailure);
        }
    };
    if attempt >= policy.max_attempts {
        return Decision::Stop(StopReason::AttemptsExhausted);
    }
    let (wait, source) = match retry_after {
        Some(wait) => (wait, WaitSource::RetryAfter),
        None => (backoff, WaitSource::Backoff),
    };
    if wait >= remaining {
        return Decision::Stop(StopReason::DeadlineWouldPass { wait });
    }
    Decision::Retry { wait, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            accept: StatusSet::parse("200-299").unwrap(),
            retry_on: StatusSet::parse("408,409,425,429,500,502,503,504").unwrap(),
            max_attempts: 5,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);
    const BACKOFF: Duration = Duration::from_millis(750);

    fn status(code: u16) -> Outcome<'static> {
        Outcome::Status {
            code,
            retry_after: None,
            outcome_unknown: false,
        }
    }

    fn decide_now(outcome: Outcome<'_>, attempt: u32) -> Decision {
        decide(
            &policy(),
            outcome,
            attempt,
            MINUTE,
            SystemTime::UNIX_EPOCH,
            BACKOFF,
        )
    }

    #[test]
    fn accepted_status_succeeds() {
        assert_eq!(decide_now(status(201), 1), Decision::Success);
    }

    #[test]
    fn acceptance_wins_over_retry_list() {
        let mut policy = policy();
        policy.accept = StatusSet::parse("200-599").unwrap();
        let decision = decide(
            &policy,
            status(503),
            1,
            MINUTE,
            SystemTime::UNIX_EPOCH,
            BACKOFF,
        );
        assert_eq!(decision, Decision::Success);
    }

    #[test]
    fn other_statuses_are_final() {
        for code in [400, 401, 404, 422, 501] {
            assert_eq!(
                decide_now(status(code), 1),
                Decision::Stop(StopReason::FinalStatus)
            );
        }
    }

    #[test]
    fn retryable_status_backs_off() {
        let retry = Decision::Retry {
            wait: BACKOFF,
            source: WaitSource::Backoff,
        };
        assert_eq!(decide_now(status(503), 1), retry);
        assert_eq!(decide_now(status(409), 4), retry);
    }

    #[test]
    fn transport_failures_retry_or_stop_by_kind() {
        let retry = Decision::Retry {
            wait: BACKOFF,
            source: WaitSource::Backoff,
        };
        assert_eq!(decide_now(Outcome::Failure(Failure::NotSent), 1), retry);
        assert_eq!(decide_now(Outcome::Failure(Failure::NoResponse), 1), retry);
        for final_failure in [
            Failure::Tls,
            Failure::TooLarge,
            Failure::HeadTooLarge,
            Failure::NotHttp,
            Failure::Local,
            Failure::BodyChanged,
        ] {
            assert_eq!(
                decide_now(Outcome::Failure(final_failure), 1),
                Decision::Stop(StopReason::FinalFailure)
            );
        }
    }

    #[test]
    fn last_attempt_stops() {
        assert_eq!(
            decide_now(status(503), 5),
            Decision::Stop(StopReason::AttemptsExhausted)
        );
        assert_eq!(
            decide_now(Outcome::Failure(Failure::NotSent), 5),
            Decision::Stop(StopReason::AttemptsExhausted)
        );
    }

    #[test]
    fn outcome_unknown_stops_at_once_even_when_its_status_is_retried() {
        let outcome = Outcome::Status {
            code: 502,
            retry_after: Some("1"),
            outcome_unknown: true,
        };
        assert_eq!(
            decide_now(outcome, 1),
            Decision::Stop(StopReason::OutcomeUnknown)
        );
        assert_eq!(
            decide_now(status(502), 1),
            Decision::Retry {
                wait: BACKOFF,
                source: WaitSource::Backoff
            }
        );
    }

    #[test]
    fn retry_after_replaces_backoff() {
        let outcome = Outcome::Status {
            code: 429,
            retry_after: Some("7"),
            outcome_unknown: false,
        };
        assert_eq!(
            decide_now(outcome, 1),
            Decision::Retry {
                wait: Duration::from_secs(7),
                source: WaitSource::RetryAfter
            }
        );
    }

    #[test]
    fn unparsable_retry_after_falls_back_to_backoff() {
        let outcome = Outcome::Status {
            code: 503,
            retry_after: Some("later"),
            outcome_unknown: false,
        };
        assert_eq!(
            decide_now(outcome, 1),
            Decision::Retry {
                wait: BACKOFF,
                source: WaitSource::Backoff
            }
        );
    }

    #[test]
    fn a_wait_past_the_deadline_stops_at_once() {
        let outcome = Outcome::Status {
            code: 503,
            retry_after: Some("3600"),
            outcome_unknown: false,
        };
        assert_eq!(
            decide_now(outcome, 1),
            Decision::Stop(StopReason::DeadlineWouldPass {
                wait: Duration::from_secs(3600)
            })
        );
        let tight = decide(
            &policy(),
            status(503),
            1,
            Duration::from_millis(100),
            SystemTime::UNIX_EPOCH,
            BACKOFF,
        );
        assert_eq!(
            tight,
            Decision::Stop(StopReason::DeadlineWouldPass { wait: BACKOFF })
        );
    }
}
