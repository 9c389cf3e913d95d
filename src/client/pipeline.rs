//! The pipeline of one invocation: inputs → validated config → key and
//! request → retry loop → report. I/O happens only here and in the modules
//! that own it (transport, report); the stages in between are pure.

use crate::cli::{Action, Invocation, OutputMode};
use crate::config::Config;
use crate::env::Env;
use crate::exit::Exit;
use crate::github::{self, guard::Verdict, rerun};
use crate::headers::is_secret;
use crate::log::Log;
use crate::outputs::{self, Outputs};
use crate::prepare::{KeySource, Prepared, is_safe, prepare};
use crate::provider::KeyScope;
use crate::redact::redact_url;
use crate::report::{Report, Sinks};
use crate::retry_loop::{self, Attempter, Limits};
use crate::transport::{Attempted, Transport};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Runs one invocation and returns its exit code.
pub fn run(invocation: Invocation, env: &Env, log: &mut Log) -> Exit {
    let config = match Config::from_raw(&invocation.raw) {
        Ok(config) => config,
        Err(e) => return usage_error(log, env, &e.to_string()),
    };
    register_secrets(&config, log);
    if config.tls.insecure {
        log.warning(
            "TLS verification is off",
            "`insecure` is true: the server's certificate is not checked, so anyone on the path can read and change this request",
        );
    }
    let dry_run = config.dry_run;
    let scope = config.key.scope;
    let mut sinks = Sinks {
        github_output: env.get("GITHUB_OUTPUT").map(PathBuf::from),
        step_summary: env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        json: invocation.output == OutputMode::Json,
        mask_response: config.mask_response,
        max_output_size: config.max_output_size,
        earlier_attempts: Vec::new(),
    };
    let github_token = config
        .github_token
        .clone()
        .or_else(|| env.get("GITHUB_TOKEN").map(str::to_owned));
    if let Some(token) = &github_token {
        log.mask(token);
    }
    let checks = rerun::Checks {
        env,
        token: github_token.as_deref(),
        scope,
        key_ttl: config.key_ttl,
        allow_expired: config.allow_expired_key,
    };
    let oidc_audience = config.oidc_audience.clone();
    let limits = Limits {
        policy: config.policy.clone(),
        backoff: config.backoff,
        timeout: config.timeout,
        deadline: config.deadline,
    };
    let body_dir = env
        .get("RUNNER_TEMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let transport = match Transport::new(&config, body_dir) {
        Ok(transport) => transport,
        Err(e) => return usage_error(log, env, &e.to_string()),
    };
    let prepared = match prepare(config, env) {
        Ok(prepared) => prepared,
        Err(e) => return usage_error(log, env, &e.to_string()),
    };
    if invocation.action == Action::Key {
        // Under GitHub Actions the log shares stdout, which `key` reserves
        // for the key so that `$(idempotent-request key …)` captures it.
        if !log.is_github() {
            describe_key(&prepared, log);
        }
        println!("{}", prepared.key_value());
        return Exit::Success;
    }
    describe_key(&prepared, log);
    let request_line = format!("{} {}", prepared.method, redact_url(&prepared.url));
    if dry_run {
        log.info(&format!(
            "dry run: would send {request_line}; nothing was sent"
        ));
        if invocation.output == OutputMode::Json || sinks.github_output.is_none() {
            println!("{}", prepared.key_value());
        }
        let mut outputs = Outputs::default();
        outputs.set("idempotency-key", prepared.key_value());
        return write_outputs_only(&outputs, &sinks, log).unwrap_or(Exit::Success);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log.error(
                "Cannot start",
                &format!("the async runtime failed to start: {e}"),
            );
            return Exit::NoResponse;
        }
    };
    let mut prepared = prepared;
    if log.is_github() {
        let findings = runtime.block_on(rerun::check(&checks, SystemTime::now()));
        if findings.attempt > 1 {
            log.info(&format!(
                "this is run attempt {}; earlier attempts of this job:",
                findings.attempt
            ));
            for line in &findings.history {
                log.info(&format!("  {line}"));
            }
        }
        sinks.earlier_attempts = findings.history;
        match findings.verdict {
            Some(Verdict::Refuse(message)) => return refuse(&prepared, &sinks, &message, log),
            Some(Verdict::SendAnyway(warning)) => {
                log.warning("The idempotency key may have expired", &warning);
            }
            Some(Verdict::Send) | None => {}
        }
    }
    if let Some(audience) = &oidc_audience {
        let token = github::api::http_client()
            .and_then(|client| runtime.block_on(github::oidc::token(&client, env, audience)));
        match token {
            Ok(token) => {
                log.mask(&token);
                add_bearer(&mut prepared, &token);
                log.info("Authorization: a GitHub OIDC token for the given audience (masked)");
            }
            Err(message) => {
                return usage_error(
                    log,
                    env,
                    &format!("invalid input `oidc-audience`: {message}"),
                );
            }
        }
    }
    log.info(&format!("sending {request_line}"));
    let mut attempter = Sender {
        transport: &transport,
        request: &prepared,
    };
    let finished = runtime.block_on(retry_loop::run(
        &mut attempter,
        &limits,
        rand::rng(),
        SystemTime::now,
        log,
    ));
    let rerun_safe = prepared.key.is_some()
        && scope == KeyScope::Run
        && !matches!(prepared.key, Some((ref k, _)) if k.source == KeySource::Random);
    Report::new(finished, &prepared, sinks.max_output_size, rerun_safe).emit(&prepared, &sinks, log)
}

/// Sends the OIDC token as `Authorization: Bearer`. Added after the key is
/// derived, so it never feeds it, and as a user header, so it never follows
/// a redirect to another origin.
fn add_bearer(prepared: &mut Prepared, token: &str) {
    let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) else {
        return;
    };
    value.set_sensitive(true);
    prepared
        .headers
        .insert(0, (reqwest::header::AUTHORIZATION, value));
    prepared.user_header_count += 1;
}

/// The re-run guard refused: outputs, an error annotation, the summary,
/// exit code 4. Nothing was sent.
fn refuse(prepared: &Prepared, sinks: &Sinks, message: &str, log: &mut Log) -> Exit {
    log.error(
        "Re-run refused: the idempotency key may have expired",
        message,
    );
    let mut outputs = Outputs::default();
    outputs.set("idempotency-key", prepared.key_value());
    outputs.set("attempts", "0");
    outputs.set("replayed", "false");
    outputs.set("error", message);
    // A failure to write outputs is logged there; the refusal stays the outcome.
    let _ = write_outputs_only(&outputs, sinks, log);
    crate::report::append_summary(
        sinks,
        &crate::summary::Summary {
            method: prepared.method.as_str(),
            url: &redact_url(&prepared.url),
            key: prepared.key.as_ref().map(|(k, _)| k.value.as_str()),
            attempts: 0,
            outcome: "not sent: refused by the re-run guard (key-ttl)",
            replayed: false,
            elapsed_ms: 0,
            earlier_attempts: &sinks.earlier_attempts,
        },
        log,
    );
    Exit::RerunRefused
}

struct Sender<'a> {
    transport: &'a Transport,
    request: &'a Prepared,
}

impl Attempter for Sender<'_> {
    async fn attempt(&mut self, _n: u32, timeout: Duration) -> Attempted {
        self.transport.attempt(self.request, timeout).await
    }
}

/// Masks every credential the request carries before anything is logged:
/// the whole value, and for `Scheme credential` values the credential alone.
fn register_secrets(config: &Config, log: &mut Log) {
    for (name, value) in &config.headers {
        if is_secret(name, Some(&config.key.header)) {
            let value = String::from_utf8_lossy(value.as_bytes());
            log.mask(&value);
            if let Some((_, credential)) = value.split_once(' ') {
                log.mask(credential.trim());
            }
        }
    }
    if let Some(password) = config.url.password() {
        log.mask(password);
    }
}

fn describe_key(prepared: &Prepared, log: &mut Log) {
    match &prepared.key {
        None if is_safe(&prepared.method) => log.info(&format!(
            "{} is a safe method: no idempotency key is sent (give `idempotency-key` to send one)",
            prepared.method
        )),
        None => {}
        Some((key, (header, _))) => {
            let source = match key.source {
                KeySource::Explicit => "given with idempotency-key".to_owned(),
                KeySource::Derived(provider) => format!("derived from the {provider} run identity"),
                KeySource::Random => {
                    "random for this invocation: no CI was detected and no key-salt is set, so \
                     another invocation sends a different key (set key-salt for a stable one)"
                        .to_owned()
                }
            };
            log.info(&format!("{header}: {} ({source})", key.value));
        }
    }
}

/// Reports invalid input: an error line (annotation under GitHub Actions),
/// the `error` output, exit code 2. Nothing has been sent.
fn usage_error(log: &mut Log, env: &Env, message: &str) -> Exit {
    log.error("Invalid input", &format!("{message}. Nothing was sent."));
    let mut outputs = Outputs::default();
    outputs.set("error", message);
    let sinks = Sinks {
        github_output: env.get("GITHUB_OUTPUT").map(PathBuf::from),
        step_summary: None,
        json: false,
        mask_response: false,
        max_output_size: 0,
        earlier_attempts: Vec::new(),
    };
    write_outputs_only(&outputs, &sinks, log);
    Exit::Usage
}

fn write_outputs_only(outputs: &Outputs, sinks: &Sinks, log: &mut Log) -> Option<Exit> {
    let path = sinks.github_output.as_ref()?;
    let written = outputs::render(outputs, outputs::random_delimiter)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            crate::report::append(path, text.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))
        });
    match written {
        Ok(()) => None,
        Err(e) => {
            log.error("Cannot write outputs", &e);
            Some(Exit::NoResponse)
        }
    }
}
