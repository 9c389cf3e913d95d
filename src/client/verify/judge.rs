//! The verdicts: what the answers seen by [`super::probe`] say about the
//! server. Pure: no I/O, no clock.
//!
//! Two answers come from one execution when their status, body bytes and
//! (with `verify-id-field`) identifying field agree; a difference in any of
//! them is the evidence of a second execution. No text here quotes a header
//! value or a body: the `seen` lines hold status codes, lengths, header
//! names and this module's own words.

use crate::client::verify::checks::CheckId;
use crate::shared::protocol::REPLAYED_HEADERS;
use std::collections::BTreeMap;
use std::time::Duration;

/// One answer, reduced to what the verdicts compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case, values as received.
    pub headers: Vec<(String, String)>,
    /// Body length.
    pub body_len: u64,
    /// Body SHA-256.
    pub body_sha256: [u8; 32],
    /// The `verify-id-field` value (canonical JSON), when asked for and
    /// present.
    pub id: Option<String>,
}

impl Answer {
    /// The replay header that marks this answer (`Idempotent-Replayed:
    /// true` or one of its variants), if any.
    pub fn replay_marker(&self) -> Option<&'static str> {
        crate::shared::protocol::replay_marker(&self.headers)
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// 409, 425 or 429: refused because the key is in flight.
    pub fn is_in_flight(&self) -> bool {
        matches!(self.status, 409 | 425 | 429)
    }
}

/// An answer, or why there was none (plain words, no server text).
pub type Sent = Result<Answer, String>;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server did what a correct one does.
    Passed,
    /// It did not.
    Failed,
    /// The check could not apply (no body to change; not run).
    NotApplicable,
    /// Informational only (`no-key`).
    Info,
}

impl Verdict {
    /// The word in outputs and JSON.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::NotApplicable => "not-applicable",
            Verdict::Info => "info",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which check.
    pub check: CheckId,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was seen, in this module's words.
    pub seen: String,
}

impl Finding {
    fn new(check: CheckId, verdict: Verdict, seen: impl Into<String>) -> Self {
        Self {
            check,
            verdict,
            seen: seen.into(),
        }
    }
}

/// What the comparisons need from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Response headers that may differ besides [`ALWAYS_IGNORED`]
    /// (lower-case).
    pub ignore_headers: Vec<String>,
    /// The `verify-id-field` pointer, when given.
    pub id_field: Option<String>,
}

/// Headers that legitimately differ between an answer and its replay: the
/// time it was sent, the replay's age, and the framing of the message.
pub const ALWAYS_IGNORED: &[&str] = &[
    "date",
    "age",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

/// How two answers differ, most telling first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Difference {
    Status(u16, u16),
    Id,
    Body(u64, u64),
    Headers(Vec<String>),
}

impl Difference {
    fn words(&self, rules: &Rules) -> String {
        match self {
            Difference::Status(a, b) => format!("status {a}, then {b}"),
            Difference::Id => format!(
                "the `{}` field differs: a second execution",
                rules.id_field.as_deref().unwrap_or_default()
            ),
            Difference::Body(a, b) if a == b => {
                format!("the bodies differ ({a} bytes each, other bytes)")
            }
            Difference::Body(a, b) => format!("the bodies differ ({a} bytes, then {b})"),
            Difference::Headers(names) => format!(
                "headers differ: {} (list them in verify-ignore-headers if they legitimately change)",
                names.join(", ")
            ),
        }
    }

    /// Whether the difference shows another execution rather than a
    /// replay that is not byte-identical.
    fn is_execution(&self) -> bool {
        matches!(self, Difference::Id)
    }
}

/// The first way `b` differs from `a`, if any.
fn difference(a: &Answer, b: &Answer, rules: &Rules) -> Option<Difference> {
    if a.status != b.status {
        return Some(Difference::Status(a.status, b.status));
    }
    if rules.id_field.is_some() && a.id != b.id {
        return Some(Difference::Id);
    }
    if (a.body_len, a.body_sha256) != (b.body_len, b.body_sha256) {
        return Some(Difference::Body(a.body_len, b.body_len));
    }
    let names = differing_headers(a, b, rules);
    (!names.is_empty()).then_some(Difference::Headers(names))
}

/// Names of the headers whose values differ (or that only one answer
/// has), compared as multisets, the ignored ones and replay markers aside.
fn differing_headers(a: &Answer, b: &Answer, rules: &Rules) -> Vec<String> {
    let compared = |answer: &Answer| {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &answer.headers {
            let ignored = ALWAYS_IGNORED.contains(&name.as_str())
                || REPLAYED_HEADERS.contains(&name.as_str())
                || rules.ignore_headers.iter().any(|n| n == name);
            if !ignored {
                map.entry(name.clone()).or_default().push(value.clone());
            }
        }
        for values in map.values_mut() {
            values.sort();
        }
        map
    };
    let (a, b) = (compared(a), compared(b));
    let mut names: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|name| a.get(*name) != b.get(*name))
        .map(|name| token_chars(name))
        .collect();
    names.dedup();
    names
}

/// A header name with anything but token characters replaced: names come
/// from the server (hyper accepts only tokens; this keeps it so).
fn token_chars(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// "marked with X" or "not marked", for the log.
fn marker_words(answer: &Answer) -> String {
    match answer.replay_marker() {
        Some(name) => format!("marked as a replay ({name})"),
        None => "not marked as a replay (optional)".to_owned(),
    }
}

/// `first` when it can start a check, else why not: no answer, or one the
/// endpoint did not accept.
fn usable(first: &Sent) -> Result<&Answer, String> {
    match first {
        Err(reason) => Err(format!("no answer to the first request: {reason}")),
        Ok(a) if !a.is_success() => Err(format!(
            "the first request was answered {}: verification needs a request the endpoint accepts",
            a.status
        )),
        Ok(a) => Ok(a),
    }
}

/// Check 1: `second` must be `first` again.
pub fn replay(first: &Sent, second: &Sent, rules: &Rules) -> Finding {
    let id = CheckId::Replay;
    let first = match usable(first) {
        Ok(first) => first,
        Err(why) => return Finding::new(id, Verdict::Failed, why),
    };
    let second = match second {
        Err(reason) => {
            return Finding::new(
                id,
                Verdict::Failed,
                format!("no answer to the repeat: {reason}"),
            );
        }
        Ok(second) => second,
    };
    match difference(first, second, rules) {
        None => Finding::new(
            id,
            Verdict::Passed,
            format!(
                "status {}, {} body bytes identical; {}",
                first.status,
                first.body_len,
                marker_words(second)
            ),
        ),
        Some(d) => Finding::new(id, Verdict::Failed, d.words(rules)),
    }
}

/// Check 2: the request whose answer was lost (`abandoned`: its status, or
/// why there was none), then two retries with its key.
pub fn lost_response(
    abandoned: &Result<u16, String>,
    retry: &Sent,
    again: &Sent,
    rules: &Rules,
) -> Finding {
    let id = CheckId::LostResponse;
    let first_status = match abandoned {
        Err(reason) => {
            return Finding::new(
                id,
                Verdict::Failed,
                format!("no answer to the first request: {reason}"),
            );
        }
        Ok(status) => *status,
    };
    let (retry, again) = match (retry, again) {
        (Err(reason), _) | (_, Err(reason)) => {
            return Finding::new(
                id,
                Verdict::Failed,
                format!("no answer to a retry: {reason}"),
            );
        }
        (Ok(retry), Ok(again)) => (retry, again),
    };
    if retry.status != first_status {
        return Finding::new(
            id,
            Verdict::Failed,
            format!(
                "the lost answer had status {first_status}, the retry {}: not its replay",
                retry.status
            ),
        );
    }
    match difference(retry, again, rules) {
        Some(Difference::Headers(_)) | None => {}
        Some(d) => {
            let seen = if d.is_execution() || matches!(d, Difference::Body(..)) {
                format!(
                    "the retries acted again: {} (a replay of the first execution answers both the same)",
                    d.words(rules)
                )
            } else {
                d.words(rules)
            };
            return Finding::new(id, Verdict::Failed, seen);
        }
    }
    let evidence = match (retry.replay_marker(), &rules.id_field) {
        (Some(name), _) => format!("the retries were marked as replays ({name})"),
        (None, Some(field)) => format!("the retries carry one `{field}`"),
        (None, None) => "the retries were identical but not marked as replays; set \
                         verify-id-field so a second execution can be told apart"
            .to_owned(),
    };
    Finding::new(
        id,
        Verdict::Passed,
        format!("status {first_status}, then the same answer twice; {evidence}"),
    )
}

/// Check 3: `changed` is the answer to another body under `first`'s key
/// (`None`: the request has no body to change).
pub fn changed_payload(first: &Sent, changed: Option<&Sent>, rules: &Rules) -> Finding {
    let id = CheckId::ChangedPayload;
    let Some(changed) = changed else {
        return Finding::new(
            id,
            Verdict::NotApplicable,
            "the request has no body to change",
        );
    };
    let first = match usable(first) {
        Ok(first) => first,
        Err(why) => return Finding::new(id, Verdict::Failed, why),
    };
    let changed = match changed {
        Err(reason) => {
            return Finding::new(
                id,
                Verdict::Failed,
                format!("no answer to the changed payload: {reason}"),
            );
        }
        Ok(changed) => changed,
    };
    match changed.status {
        422 => Finding::new(id, Verdict::Passed, "refused with 422"),
        400 | 409 => Finding::new(
            id,
            Verdict::Passed,
            format!(
                "refused with {} (an accepted variant; the IETF draft says 422)",
                changed.status
            ),
        ),
        status if (200..300).contains(&status) => {
            let seen = if difference(first, changed, rules).is_none() {
                format!(
                    "answered {status} with the first answer: the other payload was silently ignored"
                )
            } else {
                format!(
                    "answered {status} with a new answer: the other payload was acted on under the same key"
                )
            };
            Finding::new(id, Verdict::Failed, seen)
        }
        status => Finding::new(
            id,
            Verdict::Failed,
            format!("answered {status}; a correct server refuses with 422"),
        ),
    }
}

/// Check 4: the answers to requests sent at once with one key, and one
/// sent after they all finished.
pub fn concurrent(burst: &[Sent], after: &Sent, rules: &Rules) -> Finding {
    let id = CheckId::Concurrent;
    let mut executions: Vec<&Answer> = Vec::new();
    let (mut in_flight, mut failures, mut others) = (0usize, 0usize, Vec::new());
    for sent in burst {
        match sent {
            Ok(answer) if answer.is_success() => {
                if !executions
                    .iter()
                    .any(|seen| execution_differs(seen, answer, rules).is_none())
                {
                    executions.push(answer);
                }
            }
            Ok(answer) if answer.is_in_flight() => in_flight += 1,
            Ok(answer) => others.push(answer.status),
            Err(_) => failures += 1,
        }
    }
    let tally = format!(
        "{} sent at once: {} successful, {in_flight} refused in flight{}{}",
        burst.len(),
        burst.len() - in_flight - failures - others.len(),
        if others.is_empty() {
            String::new()
        } else {
            format!(", statuses {}", join(&others))
        },
        if failures == 0 {
            String::new()
        } else {
            format!(", {failures} without an answer")
        },
    );
    if executions.len() > 1 {
        let d = execution_differs(executions[0], executions[1], rules)
            .map(|d| d.words(rules))
            .unwrap_or_default();
        return Finding::new(
            id,
            Verdict::Failed,
            format!("acted {} times ({tally}): {d}", executions.len()),
        );
    }
    if !others.is_empty() || failures > 0 {
        return Finding::new(id, Verdict::Failed, tally);
    }
    let after = match after {
        Err(reason) => {
            return Finding::new(
                id,
                Verdict::Failed,
                format!("{tally}; no answer to the one after: {reason}"),
            );
        }
        Ok(after) => after,
    };
    match executions.first() {
        _ if !after.is_success() => Finding::new(
            id,
            Verdict::Failed,
            format!("{tally}; the one after was answered {}", after.status),
        ),
        Some(execution) => match execution_differs(execution, after, rules) {
            Some(d) => Finding::new(
                id,
                Verdict::Failed,
                format!("{tally}; the one after differs: {}", d.words(rules)),
            ),
            None => Finding::new(
                id,
                Verdict::Passed,
                format!("{tally}; the one after replayed it"),
            ),
        },
        None => Finding::new(
            id,
            Verdict::Passed,
            format!("{tally}; the one after got the answer"),
        ),
    }
}

/// Like [`difference`], but header differences do not make two answers
/// two executions.
fn execution_differs(a: &Answer, b: &Answer, rules: &Rules) -> Option<Difference> {
    difference(a, b, rules).filter(|d| !matches!(d, Difference::Headers(_)))
}

fn join(statuses: &[u16]) -> String {
    let mut sorted = statuses.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check 5 (informational): the request without a key.
pub fn no_key(answer: &Sent) -> Finding {
    let id = CheckId::NoKey;
    let seen = match answer {
        Err(reason) => format!("no answer: {reason}"),
        Ok(a) if a.is_success() => format!(
            "answered {}: the server acts without a key, so a step that sends none is unprotected",
            a.status
        ),
        Ok(a) if matches!(a.status, 400 | 422 | 428) => {
            format!("refused with {}: the server requires a key", a.status)
        }
        Ok(a) => format!("answered {}", a.status),
    };
    Finding::new(id, Verdict::Info, seen)
}

/// Check 7: `later` is `first`'s request again after `wait` (`None`: not
/// asked for).
pub fn retention(first: &Sent, later: Option<(&Sent, Duration)>, rules: &Rules) -> Finding {
    let id = CheckId::Retention;
    let Some((later, wait)) = later else {
        return Finding::new(
            id,
            Verdict::NotApplicable,
            "not asked for (set verify-retention)",
        );
    };
    let waited = crate::shared::units::show(wait);
    let words = Again {
        no_answer: format!("no answer after {waited}"),
        passed: format!("still replayed after {waited}"),
        not_replayed: format!("not replayed after {waited}"),
        because: "keys live shorter than that",
    };
    asked_again(id, first, later, rules, &words)
}

/// Check 6: `again` is `first`'s request sent again with a newly minted
/// OIDC token (`None`: no `oidc-audience`; `Some(Err)`: no new token came).
pub fn new_token(first: &Sent, again: Option<&Result<Sent, String>>, rules: &Rules) -> Finding {
    let id = CheckId::NewToken;
    let again = match again {
        None => {
            return Finding::new(
                id,
                Verdict::NotApplicable,
                "not run: no OIDC token (set oidc-audience in a GitHub Actions job)",
            );
        }
        Some(Err(why)) => {
            return Finding::new(id, Verdict::NotApplicable, format!("not run: {why}"));
        }
        Some(Ok(again)) => again,
    };
    let words = Again {
        no_answer: "no answer with a new token".to_owned(),
        passed: "replayed to a newly minted token, as a re-run needs".to_owned(),
        not_replayed: "not replayed with a newly minted token".to_owned(),
        because: "the server takes each token for another caller, and a re-run mints one",
    };
    asked_again(id, first, again, rules, &words)
}

/// How a check that sends the replay check's request once more words its
/// verdicts.
struct Again {
    no_answer: String,
    passed: String,
    not_replayed: String,
    because: &'static str,
}

/// The verdict on `again`, the replay check's request sent once more: it
/// must be the first answer's replay.
fn asked_again(id: CheckId, first: &Sent, again: &Sent, rules: &Rules, words: &Again) -> Finding {
    let first = match usable(first) {
        Ok(first) => first,
        Err(why) => return Finding::new(id, Verdict::Failed, why),
    };
    match again {
        Err(reason) => Finding::new(
            id,
            Verdict::Failed,
            format!("{}: {reason}", words.no_answer),
        ),
        Ok(again) => match execution_differs(first, again, rules) {
            None => Finding::new(id, Verdict::Passed, words.passed.clone()),
            Some(d) => Finding::new(
                id,
                Verdict::Failed,
                format!(
                    "{}: {}; {}",
                    words.not_replayed,
                    d.words(rules),
                    words.because
                ),
            ),
        },
    }
}

/// What every check saw, for the verdicts.
#[derive(Debug)]
pub struct Observations {
    /// Check 1: the first request and its repeat.
    pub replay: (Sent, Sent),
    /// The other checks; `None` when the first request found no usable
    /// endpoint (no answer, or not accepted), so they were not run.
    pub rest: Option<Rest>,
}

/// The checks after the first.
#[derive(Debug)]
pub struct Rest {
    /// Check 2: the status of the request whose answer was dropped, then
    /// two retries.
    pub lost: (Result<u16, String>, Sent, Sent),
    /// Check 3: the first body and the changed one (`None` without a body).
    pub changed: Option<(Sent, Sent)>,
    /// Check 4: the burst, then one more.
    pub concurrent: (Vec<Sent>, Sent),
    /// Check 5.
    pub no_key: Sent,
    /// Check 6, with `oidc-audience`: the replay check's request with a
    /// newly minted token, or why no new token came.
    pub new_token: Option<Result<Sent, String>>,
    /// Check 7, when asked for: the replay check's request after the wait.
    pub retention: Option<(Sent, Duration)>,
}

/// Every check's finding, in the table's order.
pub fn findings(observed: &Observations, rules: &Rules) -> Vec<Finding> {
    let (first, second) = &observed.replay;
    let mut findings = vec![replay(first, second, rules)];
    let Some(rest) = &observed.rest else {
        let why = "not run: the first request found no usable endpoint";
        for check in &crate::client::verify::checks::CHECKS[1..] {
            findings.push(Finding::new(check.id, Verdict::NotApplicable, why));
        }
        return findings;
    };
    let (abandoned, retry, again) = &rest.lost;
    findings.push(lost_response(abandoned, retry, again, rules));
    findings.push(match &rest.changed {
        Some((first, changed)) => changed_payload(first, Some(changed), rules),
        None => changed_payload(first, None, rules),
    });
    let (burst, after) = &rest.concurrent;
    findings.push(concurrent(burst, after, rules));
    findings.push(no_key(&rest.no_key));
    findings.push(new_token(first, rest.new_token.as_ref(), rules));
    findings.push(retention(
        first,
        rest.retention.as_ref().map(|(later, wait)| (later, *wait)),
        rules,
    ));
    findings
}

/// Whether the verification passed: no required check failed.
pub fn passed(findings: &[Finding]) -> bool {
    findings.iter().all(|f| {
        f.verdict != Verdict::Failed || !crate::client::verify::checks::check(f.check).required
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        use sha2::{Digest, Sha256};
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body_len: body.len() as u64,
            body_sha256: Sha256::digest(body.as_bytes()).into(),
            id: None,
        }
    }

    fn marked(mut a: Answer) -> Answer {
        a.headers
            .push(("idempotent-replayed".into(), "true".into()));
        a
    }

    fn rules() -> Rules {
        Rules::default()
    }

    #[test]
    fn a_replay_passes_and_says_how_it_was_marked() {
        let first = answer(201, r#"{"id":1}"#);
        let f = replay(&Ok(first.clone()), &Ok(marked(first)), &rules());
        assert_eq!(f.verdict, Verdict::Passed, "{f:?}");
        assert!(f.seen.contains("idempotent-replayed"), "{}", f.seen);
    }

    #[test]
    fn a_second_execution_fails_the_replay() {
        let f = replay(
            &Ok(answer(201, r#"{"id":1}"#)),
            &Ok(answer(201, r#"{"id":2}"#)),
            &rules(),
        );
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(f.seen.contains("bodies differ"), "{}", f.seen);
        let f = replay(&Ok(answer(201, "a")), &Ok(answer(500, "a")), &rules());
        assert_eq!(f.seen, "status 201, then 500");
    }

    #[test]
    fn header_differences_fail_unless_ignored() {
        let mut a = answer(201, "x");
        a.headers.push(("x-request-id".into(), "1".into()));
        a.headers.push(("date".into(), "then".into()));
        let mut b = answer(201, "x");
        b.headers.push(("x-request-id".into(), "2".into()));
        b.headers.push(("date".into(), "now".into()));
        b.headers.push(("age".into(), "3".into()));
        let f = replay(&Ok(a.clone()), &Ok(b.clone()), &rules());
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(
            f.seen.contains("x-request-id") && !f.seen.contains("date"),
            "{}",
            f.seen
        );
        let rules = Rules {
            ignore_headers: vec!["x-request-id".into()],
            id_field: None,
        };
        assert_eq!(replay(&Ok(a), &Ok(b), &rules).verdict, Verdict::Passed);
    }

    #[test]
    fn the_id_field_names_the_second_execution() {
        let rules = Rules {
            ignore_headers: Vec::new(),
            id_field: Some("/id".into()),
        };
        let mut a = answer(201, "same");
        a.id = Some("1".into());
        let mut b = a.clone();
        b.id = Some("2".into());
        let f = replay(&Ok(a), &Ok(b), &rules);
        assert!(f.seen.contains("`/id` field differs"), "{}", f.seen);
    }

    #[test]
    fn an_endpoint_that_refuses_the_first_request_fails_with_that_reason() {
        let f = replay(&Ok(answer(401, "")), &Ok(answer(401, "")), &rules());
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(f.seen.contains("answered 401"), "{}", f.seen);
        let f = replay(&Err("refused".into()), &Err("refused".into()), &rules());
        assert!(f.seen.contains("no answer"), "{}", f.seen);
    }

    #[test]
    fn lost_response_needs_both_retries_to_be_the_replay() {
        let a = answer(201, r#"{"n":1}"#);
        let f = lost_response(
            &Ok(201),
            &Ok(marked(a.clone())),
            &Ok(marked(a.clone())),
            &rules(),
        );
        assert_eq!(f.verdict, Verdict::Passed, "{f:?}");
        let f = lost_response(
            &Ok(201),
            &Ok(answer(201, "2")),
            &Ok(answer(201, "3")),
            &rules(),
        );
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(f.seen.contains("acted again"), "{}", f.seen);
        let f = lost_response(
            &Ok(201),
            &Ok(answer(500, "")),
            &Ok(answer(500, "")),
            &rules(),
        );
        assert!(f.seen.contains("the retry 500"), "{}", f.seen);
        let f = lost_response(&Ok(201), &Ok(a.clone()), &Ok(a), &rules());
        assert_eq!(f.verdict, Verdict::Passed);
        assert!(f.seen.contains("set verify-id-field"), "{}", f.seen);
    }

    #[test]
    fn changed_payload_verdicts() {
        let first = Ok(answer(201, "a"));
        let f = |status, body| changed_payload(&first, Some(&Ok(answer(status, body))), &rules());
        assert_eq!(f(422, "").verdict, Verdict::Passed);
        assert!(f(409, "").seen.contains("accepted variant"));
        assert_eq!(f(400, "").verdict, Verdict::Passed);
        let silent = f(201, "a");
        assert_eq!(silent.verdict, Verdict::Failed);
        assert!(silent.seen.contains("silently ignored"), "{}", silent.seen);
        assert!(f(201, "b").seen.contains("acted on"));
        assert_eq!(f(500, "").verdict, Verdict::Failed);
        assert_eq!(
            changed_payload(&first, None, &rules()).verdict,
            Verdict::NotApplicable
        );
    }

    #[test]
    fn concurrent_duplicates_that_act_twice_fail() {
        let burst = [
            Ok(answer(201, "1")),
            Ok(answer(201, "2")),
            Ok(answer(409, "")),
        ];
        let f = concurrent(&burst, &Ok(answer(201, "1")), &rules());
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(f.seen.starts_with("acted 2 times"), "{}", f.seen);
    }

    #[test]
    fn concurrent_duplicates_answered_once_pass() {
        let one = answer(201, "1");
        let burst = [
            Ok(one.clone()),
            Ok(answer(409, "")),
            Ok(marked(one.clone())),
        ];
        let f = concurrent(&burst, &Ok(marked(one)), &rules());
        assert_eq!(f.verdict, Verdict::Passed, "{f:?}");
        assert!(f.seen.contains("1 refused in flight"), "{}", f.seen);
        let f = concurrent(&[Ok(answer(500, ""))], &Ok(answer(201, "1")), &rules());
        assert_eq!(f.verdict, Verdict::Failed);
        assert!(f.seen.contains("statuses 500"), "{}", f.seen);
    }

    #[test]
    fn retention_and_the_overall_verdict() {
        let first = Ok(answer(201, "1"));
        let wait = Duration::from_secs(60);
        let kept = retention(&first, Some((&Ok(answer(201, "1")), wait)), &rules());
        assert_eq!(kept.verdict, Verdict::Passed);
        let lost = retention(&first, Some((&Ok(answer(201, "2")), wait)), &rules());
        assert_eq!(lost.verdict, Verdict::Failed);
        assert!(lost.seen.contains("after 60s"), "{}", lost.seen);
        assert_eq!(
            retention(&first, None, &rules()).verdict,
            Verdict::NotApplicable
        );
        let info = no_key(&Ok(answer(201, "")));
        assert_eq!(info.verdict, Verdict::Info);
        assert!(passed(&[kept.clone(), info.clone()]));
        assert!(!passed(&[kept, info, lost]));
    }

    #[test]
    fn a_new_token_must_get_the_replay() {
        let first = Ok(answer(201, "1"));
        let replayed = Ok(Ok(answer(201, "1")));
        let acted = Ok(Ok(answer(201, "2")));
        let refused = Ok(Ok(answer(401, "")));
        assert_eq!(
            new_token(&first, Some(&replayed), &rules()).verdict,
            Verdict::Passed
        );
        for again in [acted, refused] {
            let f = new_token(&first, Some(&again), &rules());
            assert_eq!(f.verdict, Verdict::Failed);
            assert!(f.seen.contains("another caller"), "{}", f.seen);
        }
        let none = new_token(&first, None, &rules());
        assert_eq!(none.verdict, Verdict::NotApplicable);
        assert!(none.seen.contains("oidc-audience"), "{}", none.seen);
        let no_second = Err("no second token: HTTP 500".to_owned());
        let f = new_token(&first, Some(&no_second), &rules());
        assert_eq!(f.verdict, Verdict::NotApplicable);
        assert!(f.seen.contains("HTTP 500"), "{}", f.seen);
    }

    #[test]
    fn header_names_from_the_server_stay_tokens() {
        assert_eq!(token_chars("x-a\nb::c"), "x-a?b??c");
    }
}
