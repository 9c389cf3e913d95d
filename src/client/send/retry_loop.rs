//! The retry loop: runs attempts until the policy says stop, sleeping in
//! between. The policy ([`super::retry::decide`]) decides and the
//! [`Attempter`] acts; time comes from tokio's clock (paused in tests) and
//! the jitter from an injected random source.

use crate::client::report::log::Log;
use crate::client::send::backoff::Backoff;
use crate::client::send::retry::{Decision, Outcome, Policy, StopReason, WaitSource, decide};
use crate::client::send::transport::{AttemptFailure, Attempted, Response};
use crate::shared::units::show;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Performs one attempt within a time limit.
pub trait Attempter {
    /// Runs attempt number `n` (1-based) within `timeout`.
    fn attempt(&mut self, n: u32, timeout: Duration) -> impl Future<Output = Attempted>;
}

/// Limits of the loop.
#[derive(Debug, Clone)]
pub struct Limits {
    /// What to retry and how often.
    pub policy: Policy,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// The whole loop's time limit.
    pub deadline: Duration,
}

/// How the loop ended.
#[derive(Debug)]
pub struct Finished {
    /// The last attempt's result.
    pub last: Result<Response, AttemptFailure>,
    /// `None` when the response was accepted; else why retrying stopped.
    pub stop: Option<StopReason>,
    /// Attempts made.
    pub attempts: u32,
    /// Time from the first attempt to the end.
    pub elapsed: Duration,
}

/// Runs the loop. `wall_clock` is read only for HTTP-date `Retry-After`.
pub async fn run(
    attempter: &mut impl Attempter,
    limits: &Limits,
    rng: impl rand::Rng,
    wall_clock: impl Fn() -> SystemTime,
    log: &mut Log,
) -> Finished {
    let start = Instant::now();
    let max = limits.policy.max_attempts;
    let mut waits = limits.backoff.waits(rng);
    let mut n = 1;
    loop {
        let remaining = limits.deadline.saturating_sub(start.elapsed());
        let Attempted {
            result,
            notes,
            masks,
        } = attempter.attempt(n, limits.timeout.min(remaining)).await;
        for secret in masks {
            log.mask(&secret);
        }
        for note in notes {
            log.info(&format!("attempt {n}/{max}: {note}"));
        }
        let outcome = match &result {
            Ok(response) => Outcome::Status {
                code: response.status.as_u16(),
                retry_after: response.header("retry-after"),
                outcome_unknown: response.is_outcome_unknown(),
            },
            Err(failure) => Outcome::Failure(failure.kind),
        };
        let described = describe(&result);
        let remaining = limits.deadline.saturating_sub(start.elapsed());
        let backoff = waits.next().unwrap_or(limits.backoff.cap);
        let decision = decide(&limits.policy, outcome, n, remaining, wall_clock(), backoff);
        let stop = match decision {
            Decision::Success => {
                log.info(&format!("attempt {n}/{max}: {described}"));
                None
            }
            Decision::Retry { wait, source } => {
                let why = match source {
                    WaitSource::RetryAfter => "Retry-After",
                    WaitSource::Backoff => "backoff",
                };
                log.info(&format!(
                    "attempt {n}/{max}: {described}; retrying in {} ({why})",
                    show(wait)
                ));
                tokio::time::sleep(wait).await;
                n += 1;
                continue;
            }
            Decision::Stop(reason) => {
                log.info(&format!(
                    "attempt {n}/{max}: {described}; {}",
                    stop_words(reason, remaining)
                ));
                Some(reason)
            }
        };
        return Finished {
            last: result,
            stop,
            attempts: n,
            elapsed: start.elapsed(),
        };
    }
}

fn describe(result: &Result<Response, AttemptFailure>) -> String {
    match result {
        Ok(response) => format!(
            "{} {}",
            response.status.as_u16(),
            response.status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
        Err(failure) => failure.reason.clone(),
    }
}

/// Says why the loop stopped, for the last attempt's log line.
pub fn stop_words(reason: StopReason, remaining: Duration) -> String {
    match reason {
        StopReason::FinalStatus => {
            "not retried: the status is neither accepted nor in retry-on-status".to_owned()
        }
        StopReason::FinalFailure => "not retried: retrying cannot fix this".to_owned(),
        StopReason::AttemptsExhausted => "giving up: max-attempts reached".to_owned(),
        StopReason::OutcomeUnknown => {
            "not retried: the gateway says the outcome is unknown and never re-sends this request"
                .to_owned()
        }
        StopReason::DeadlineWouldPass { wait } => format!(
            "giving up now: the next wait ({}) would pass the deadline ({} left)",
            show(wait),
            show(remaining)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::input::status::StatusSet;
    use crate::client::send::retry::Failure;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use reqwest::StatusCode;

    /// Replays a script of results and records when each attempt started.
    struct Scripted {
        script: Vec<Result<(u16, Option<&'static str>), Failure>>,
        started: Vec<(Instant, Duration)>,
    }

    impl Attempter for Scripted {
        async fn attempt(&mut self, n: u32, timeout: Duration) -> Attempted {
            self.started.push((Instant::now(), timeout));
            let result = match self.script[n as usize - 1] {
                Ok((code, retry_after)) => Ok(Response {
                    status: StatusCode::from_u16(code).unwrap(),
                    headers: retry_after
                        .map(|v| vec![("retry-after".to_owned(), v.to_owned())])
                        .unwrap_or_default(),
                    head: Vec::new(),
                    body_len: 0,
                    body_sha256: [0; 32],
                    body_file: tempfile::NamedTempFile::new().unwrap().into_temp_path(),
                }),
                Err(kind) => Err(AttemptFailure {
                    kind,
                    reason: "connection refused".to_owned(),
                }),
            };
            Attempted {
                result,
                notes: Vec::new(),
                masks: Vec::new(),
            }
        }
    }

    fn limits(max_attempts: u32, deadline: Duration) -> Limits {
        Limits {
            policy: Policy {
                accept: StatusSet::parse("200-299").unwrap(),
                retry_on: StatusSet::parse("429,503").unwrap(),
                max_attempts,
            },
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(30),
            },
            timeout: Duration::from_secs(60),
            deadline,
        }
    }

    async fn run_script(
        script: Vec<Result<(u16, Option<&'static str>), Failure>>,
        limits: &Limits,
    ) -> (Finished, Scripted, String) {
        let mut attempter = Scripted {
            script,
            started: Vec::new(),
        };
        let (mut log, buffer) = crate::client::report::log::tests::capture(false);
        let finished = run(
            &mut attempter,
            limits,
            StdRng::seed_from_u64(7),
            || SystemTime::UNIX_EPOCH,
            &mut log,
        )
        .await;
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        (finished, attempter, text)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_accepted_with_bounded_jittered_waits() {
        let limits = limits(5, Duration::from_secs(600));
        let (finished, attempter, log) = run_script(
            vec![Ok((503, None)), Ok((503, None)), Ok((201, None))],
            &limits,
        )
        .await;
        assert_eq!(finished.attempts, 3);
        assert!(finished.stop.is_none());
        assert_eq!(finished.last.unwrap().status, 201);
        let gaps: Vec<Duration> = attempter
            .started
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .collect();
        assert!(gaps[0] <= Duration::from_secs(1), "{gaps:?}");
        assert!(gaps[1] <= Duration::from_secs(2), "{gaps:?}");
        assert!(
            log.contains("attempt 1/5: 503 Service Unavailable; retrying in"),
            "{log}"
        );
        assert!(log.contains("attempt 3/5: 201 Created"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let limits = limits(5, Duration::from_secs(600));
        let (finished, attempter, log) =
            run_script(vec![Ok((429, Some("7"))), Ok((200, None))], &limits).await;
        assert_eq!(finished.attempts, 2);
        assert_eq!(
            attempter.started[1].0 - attempter.started[0].0,
            Duration::from_secs(7)
        );
        assert!(log.contains("retrying in 7s (Retry-After)"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_past_the_deadline_gives_up_at_once() {
        let limits = limits(5, Duration::from_secs(60));
        let (finished, attempter, log) = run_script(vec![Ok((503, Some("120")))], &limits).await;
        assert_eq!(finished.attempts, 1);
        assert_eq!(attempter.started.len(), 1);
        assert!(matches!(
            finished.stop,
            Some(StopReason::DeadlineWouldPass { .. })
        ));
        assert!(finished.elapsed < Duration::from_secs(1));
        assert!(log.contains("would pass the deadline"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn transport_failures_until_attempts_run_out() {
        let limits = limits(3, Duration::from_secs(600));
        let script = vec![Err(Failure::NotSent); 3];
        let (finished, _, log) = run_script(script, &limits).await;
        assert_eq!(finished.attempts, 3);
        assert_eq!(finished.stop, Some(StopReason::AttemptsExhausted));
        assert!(finished.last.is_err());
        assert!(
            log.contains("attempt 3/3: connection refused; giving up"),
            "{log}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_shrinks_to_the_remaining_deadline() {
        let limits = Limits {
            timeout: Duration::from_secs(60),
            ..limits(5, Duration::from_secs(10))
        };
        let (_, attempter, _) = run_script(vec![Ok((200, None))], &limits).await;
        assert_eq!(attempter.started[0].1, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn final_status_is_not_retried() {
        let limits = limits(5, Duration::from_secs(600));
        let (finished, _, _) = run_script(vec![Ok((404, None))], &limits).await;
        assert_eq!(finished.attempts, 1);
        assert_eq!(finished.stop, Some(StopReason::FinalStatus));
    }
}
