//! What a re-run does before it sends: lists the earlier attempts of this
//! job (log and step summary) and, where the guard applies, asks the API
//! when the first attempt started. Nothing here runs on a first attempt.

use super::api::Api;
use super::guard::{self, Age, Verdict};
use super::history;
use crate::shared::env::Env;
use std::time::{Duration, SystemTime};

/// What the re-run checks need.
pub struct Checks<'a> {
    /// The environment (run identity, runner name, API URL).
    pub env: &'a Env,
    /// `github-token` (or `GITHUB_TOKEN`).
    pub token: Option<&'a str>,
    /// Whether a re-run sends the first attempt's key (`key-scope: run`).
    pub same_key_on_rerun: bool,
    /// `key-ttl`.
    pub key_ttl: Option<Duration>,
    /// `allow-expired-key`.
    pub allow_expired: bool,
}

/// What the checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// This run attempt (1 for a first attempt).
    pub attempt: u32,
    /// One line per earlier attempt of this job, or why they are unknown.
    pub history: Vec<String>,
    /// The guard's verdict, when it applies.
    pub verdict: Option<Verdict>,
}

/// The run attempt from `GITHUB_RUN_ATTEMPT` (1 when absent or unreadable).
pub fn run_attempt(env: &Env) -> u32 {
    env.get("GITHUB_RUN_ATTEMPT")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// Runs the checks. Makes no API call on a first attempt.
pub async fn check(checks: &Checks<'_>, now: SystemTime) -> Findings {
    let env = checks.env;
    let attempt = run_attempt(env);
    let mut findings = Findings {
        attempt,
        ..Findings::default()
    };
    if attempt <= 1 {
        return findings;
    }
    let guard_applies = guard::applies(attempt, checks.same_key_on_rerun, checks.key_ttl);
    let api = match connect(checks) {
        Ok(api) => api,
        Err(why) => return unknown(checks, why),
    };
    findings.history = match earlier_attempts(&api, env, attempt).await {
        Ok(lines) => lines,
        Err(why) => vec![format!("earlier attempts unknown: {why}")],
    };
    if let (true, Some(ttl)) = (guard_applies, checks.key_ttl) {
        let age = match api.first_attempt_started().await {
            Ok(started) => Age::Known(now.duration_since(started).unwrap_or(Duration::ZERO)),
            Err(why) => Age::Unknown(why),
        };
        findings.verdict = Some(guard::judge(&age, ttl, checks.allow_expired));
    }
    findings
}

/// What is known when the API could not be asked (no token, no answer
/// before the deadline): the earlier attempts are unknown, and where the
/// guard applies the age is unknown too.
pub fn unknown(checks: &Checks<'_>, why: String) -> Findings {
    let attempt = run_attempt(checks.env);
    let verdict = match checks.key_ttl {
        Some(ttl) if guard::applies(attempt, checks.same_key_on_rerun, Some(ttl)) => Some(
            guard::judge(&Age::Unknown(why.clone()), ttl, checks.allow_expired),
        ),
        _ => None,
    };
    Findings {
        attempt,
        history: vec![format!("earlier attempts unknown: {why}")],
        verdict,
    }
}

fn connect(checks: &Checks<'_>) -> Result<Api, String> {
    let env = checks.env;
    let token = checks.token.ok_or_else(|| {
        "no github-token was given (the action passes github.token by default)".to_owned()
    })?;
    let (Some(repository), Some(run_id)) = (env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID"))
    else {
        return Err("GITHUB_REPOSITORY or GITHUB_RUN_ID is not set".to_owned());
    };
    let api_url = env
        .get("GITHUB_API_URL")
        .unwrap_or("https://api.github.com");
    let parsed =
        url::Url::parse(api_url).map_err(|e| format!("GITHUB_API_URL `{api_url}`: {e}"))?;
    let loopback = parsed
        .host_str()
        .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
    if parsed.scheme() != "https" && !loopback {
        return Err(format!(
            "GITHUB_API_URL `{api_url}` is not https; the token is not sent over plain http"
        ));
    }
    Api::new(
        super::api::http_client()?,
        api_url,
        token,
        repository,
        run_id,
    )
}

/// At most this many earlier attempts are listed (the most recent ones).
pub const MAX_EARLIER_ATTEMPTS: u32 = 10;

/// Describes this job's runs in the latest [`MAX_EARLIER_ATTEMPTS`] attempts
/// before `attempt`. The job is found in the current attempt by its runner
/// (`RUNNER_NAME`); its display name then identifies it in earlier attempts.
async fn earlier_attempts(api: &Api, env: &Env, attempt: u32) -> Result<Vec<String>, String> {
    let current = api.jobs(attempt).await?;
    let name = history::current_job(&current, env.get("RUNNER_NAME"))
        .map(|job| job.name.clone())
        .or_else(|| env.get("GITHUB_JOB").map(str::to_owned))
        .unwrap_or_default();
    let first = attempt.saturating_sub(MAX_EARLIER_ATTEMPTS).max(1);
    let mut earlier = Vec::new();
    for n in first..attempt {
        earlier.push((n, api.jobs(n).await?));
    }
    let mut lines = history::describe(&earlier, &name);
    if first > 1 {
        lines.insert(0, format!("attempts 1 to {} not listed", first - 1));
    }
    Ok(lines)
}
