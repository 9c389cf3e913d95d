//! The pipeline of one invocation: inputs → validated config → key and
//! request → retry loop → report. I/O happens only here and in the modules
//! that own it (transport, report); the stages in between are pure.

use crate::cli::{Action, Invocation, OutputMode};
use crate::config::Config;
use crate::env::Env;
use crate::exit::Exit;
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
    let sinks = Sinks {
        github_output: env.get("GITHUB_OUTPUT").map(PathBuf::from),
        step_summary: env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        json: invocation.output == OutputMode::Json,
        mask_response: config.mask_response,
        max_output_size: config.max_output_size,
    };
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
        println!(
            "{}",
            prepared.key.as_ref().map_or("", |(k, _)| k.value.as_str())
        );
        return Exit::Success;
    }
    describe_key(&prepared, log);
    let request_line = format!("{} {}", prepared.method, redact_url(&prepared.url));
    if dry_run {
        log.info(&format!(
            "dry run: would send {request_line}; nothing was sent"
        ));
        if invocation.output == OutputMode::Json || sinks.github_output.is_none() {
            println!(
                "{}",
                prepared.key.as_ref().map_or("", |(k, _)| k.value.as_str())
            );
        }
        let mut outputs = Outputs::default();
        outputs.set(
            "idempotency-key",
            prepared
                .key
                .as_ref()
                .map(|(k, _)| k.value.clone())
                .unwrap_or_default(),
        );
        return write_outputs_only(&outputs, &sinks, log).unwrap_or(Exit::Success);
    }
    log.info(&format!("sending {request_line}"));
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
    };
    write_outputs_only(&outputs, &sinks, log);
    Exit::Usage
}

fn write_outputs_only(outputs: &Outputs, sinks: &Sinks, log: &mut Log) -> Option<Exit> {
    let path = sinks.github_output.as_ref()?;
    let written = outputs::render(outputs, outputs::random_delimiter)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
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
