//! The table of `verify` checks: the one place that names them, says which
//! are required, what each sends and what a correct server does. The plan,
//! the log table, the outputs and the README's table come from [`CHECKS`].

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckId {
    /// The same request twice with one key.
    Replay,
    /// The answer lost after the server acted, then a retry.
    LostResponse,
    /// The same key with another body.
    ChangedPayload,
    /// Several requests with one key at once.
    Concurrent,
    /// The request without a key.
    NoKey,
    /// The key again with a newly minted OIDC token.
    NewToken,
    /// The key again after a wait.
    Retention,
}

/// One check.
#[derive(Debug)]
pub struct Check {
    /// Which check.
    pub id: CheckId,
    /// Its name in outputs and JSON (kebab-case).
    pub name: &'static str,
    /// Its title in the log and the summary.
    pub title: &'static str,
    /// Whether a failure fails the verification (`no-key` only informs;
    /// `retention` counts when `verify-retention` is set).
    pub required: bool,
    /// What it sends.
    pub sends: &'static str,
    /// What a correct server does.
    pub correct: &'static str,
    /// What to do when it fails.
    pub remedy: &'static str,
}

/// Every check, in the order they run.
pub const CHECKS: &[Check] = &[
    Check {
        id: CheckId::Replay,
        name: "replay",
        title: "Replay",
        required: true,
        sends: "the request twice with one key",
        correct: "answers the second with the first answer: same status, byte-identical body, same headers (Date, Age, framing and replay markers aside)",
        remedy: "the server ignores the key or does not store its answer: put `idempotency-gateway` in front of it",
    },
    Check {
        id: CheckId::LostResponse,
        name: "lost-response",
        title: "Lost response",
        required: true,
        sends: "the request, closing the connection as soon as the answer starts; then two retries with that key",
        correct: "answers both retries with the replay of the first execution",
        remedy: "a retry after a lost answer acts again: put `idempotency-gateway` in front of the server",
    },
    Check {
        id: CheckId::ChangedPayload,
        name: "changed-payload",
        title: "Changed payload",
        required: true,
        sends: "the request, then another body with the same key",
        correct: "refuses the second with 422 (400 and 409 are accepted variants), without acting",
        remedy: "the server does not compare the payload with the key's: a caller that reuses a key by mistake gets a stale answer or a second action; put `idempotency-gateway` in front of it",
    },
    Check {
        id: CheckId::Concurrent,
        name: "concurrent",
        title: "Concurrent duplicates",
        required: true,
        sends: "`verify-concurrency` requests with one key at once, then one more",
        correct: "acts once: one answer, the others 409 (in flight) or its replay",
        remedy: "the server checks for the key and acts in two steps, so duplicates in flight both act: it needs an atomic claim (`idempotency-gateway` has one)",
    },
    Check {
        id: CheckId::NoKey,
        name: "no-key",
        title: "No key",
        required: false,
        sends: "the request without a key",
        correct: "either acts (keys optional) or refuses (keys required); informational",
        remedy: "",
    },
    Check {
        id: CheckId::NewToken,
        name: "new-token",
        title: "New OIDC token",
        required: true,
        sends: "with `oidc-audience`: the replay check's request again with a newly minted OIDC token, as a re-run sends it",
        correct: "still replays the first answer: the caller is the token's stable claims (repository, environment), not the token",
        remedy: "the server takes every new token for a new caller, so a re-run, which mints one, acts again: run `idempotency-gateway` with `--jwt-jwks-url`, `--jwt-issuer` and `--jwt-audience` in front of it",
    },
    Check {
        id: CheckId::Retention,
        name: "retention",
        title: "Retention",
        required: true,
        sends: "the replay check's request again after `verify-retention`",
        correct: "still replays the first answer",
        remedy: "the server forgets keys sooner: set `key-ttl` below that wait, or keep keys longer (`idempotency-gateway --ttl`)",
    },
];

/// The table row of `id`.
pub fn check(id: CheckId) -> &'static Check {
    CHECKS
        .iter()
        .find(|check| check.id == id)
        .unwrap_or(&CHECKS[0])
}

/// How many requests verification sends at most, retries of in-flight
/// answers (409, 425, 429) aside.
pub fn planned_requests(concurrency: u32, has_body: bool, new_token: bool, retention: bool) -> u32 {
    let changed = if has_body { 2 } else { 0 };
    2 + 3 + changed + concurrency + 1 + 1 + u32::from(new_token) + u32::from(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_one_row_and_a_kebab_name() {
        for id in [
            CheckId::Replay,
            CheckId::LostResponse,
            CheckId::ChangedPayload,
            CheckId::Concurrent,
            CheckId::NoKey,
            CheckId::NewToken,
            CheckId::Retention,
        ] {
            assert_eq!(CHECKS.iter().filter(|c| c.id == id).count(), 1);
            assert_eq!(check(id).id, id);
        }
        for c in CHECKS {
            assert!(c.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert_eq!(c.required, !c.remedy.is_empty(), "{}", c.name);
        }
    }

    #[test]
    fn the_plan_counts_every_request() {
        assert_eq!(planned_requests(5, true, false, false), 2 + 3 + 2 + 6 + 1);
        assert_eq!(planned_requests(2, false, false, true), 2 + 3 + 3 + 1 + 1);
        assert_eq!(
            planned_requests(2, false, true, true),
            2 + 3 + 3 + 1 + 1 + 1
        );
    }
}
