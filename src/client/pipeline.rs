//! The pipeline of one invocation, and the one place that knows the order
//! of the stages: inputs → validated config → key and request → (the GitHub
//! steps) → retry loop → report. I/O happens only here and in the modules
//! that own it (transport, report, the GitHub API); the stages in between
//! are pure.

use crate::client::input::body::Body;
use crate::client::input::cli::{Action, Invocation, OutputMode};
use crate::client::input::config::{Config, ConfigError};
use crate::client::input::headers::is_secret;
use crate::client::key::prepare::{KeySource, PrepareError, Prepared, prepare};
use crate::client::key::provider::KeyScope;
use crate::client::report::exit::Exit;
use crate::client::report::log::Log;
use crate::client::report::outcome::{Report, Sinks};
use crate::client::report::unsent;
use crate::client::send::retry::Failure;
use crate::client::send::retry_loop::{self, Attempter, Limits};
use crate::client::send::transport::{AttemptFailure, Attempted, Transport};
use crate::client::verify::{
    self, judge,
    probe::{self, Probe, ProbeSettings},
};
use crate::github::{self, guard::Verdict, oidc::Renewal, rerun};
use crate::shared::env::Env;
use crate::shared::redact::redact_url;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Runs one invocation and returns its exit code.
pub fn run(invocation: Invocation, env: &Env, log: &mut Log) -> Exit {
    match stages(&invocation, env, log) {
        Ok(exit) | Err(Halt::Exit(exit)) => exit,
        Err(Halt::Invalid(error)) => unsent::invalid_input(&error, env, log),
    }
}

/// The stages in order; each call's name says what it does.
fn stages(invocation: &Invocation, env: &Env, log: &mut Log) -> Result<Exit, Halt> {
    let started = Instant::now();
    let config = validate(invocation, log)?;
    let verify = match invocation.action {
        Action::Verify => true,
        Action::Send => config.verify.enabled,
        Action::Key => false,
    };
    if verify {
        return verify_stages(config, invocation, env, started, log);
    }
    let mut plan = Plan::new(&config, invocation, env, started, log);
    let transport = Transport::new(&config, plan.body_dir.clone())?;
    let mut prepared = prepare(config, env)?;
    if invocation.action == Action::Key {
        return Ok(unsent::print_key(&prepared, log));
    }
    check_dotenv(&plan)?;
    if let Some(line) = prepared.key_line() {
        log.info(&line);
    }
    if plan.dry_run {
        return Ok(unsent::dry_run(&prepared, &plan.sinks, log));
    }
    check_body_dir(&transport, env)?;
    let runtime = start_runtime(log)?;
    let renewer = if log.is_github() {
        github_steps(&runtime, &mut plan, &mut prepared, env, log)?
    } else {
        None
    };
    let finished = send(
        &runtime,
        &transport,
        &mut prepared,
        renewer,
        plan.limits(),
        log,
    );
    let rerun_safe = plan.github.same_key_on_rerun && sends_stable_key(&prepared);
    let report = Report::new(finished, &prepared, plan.sinks.max_output_size, rerun_safe);
    Ok(report.emit(&prepared, &plan.sinks, log))
}

/// A `dotenv-file` that the report could not append to (a FIFO, a
/// directory, a file in a missing directory) is an invalid input, found
/// before anything is sent rather than after.
fn check_dotenv(plan: &Plan) -> Result<(), ConfigError> {
    let Some(path) = &plan.sinks.dotenv else {
        return Ok(());
    };
    crate::shared::regular_file::check_appendable(path).map_err(|e| ConfigError {
        input: "dotenv-file",
        message: format!("`{}` cannot be appended to: {e}", path.display()),
    })
}

/// The directory every response body is written to must take a file
/// before the request goes out ([`Transport::check_body_dir`]): found
/// afterwards, the server would have acted and its answer would be lost.
fn check_body_dir(transport: &Transport, env: &Env) -> Result<(), ConfigError> {
    transport.check_body_dir().map_err(|e| {
        let variable = if env.get("RUNNER_TEMP").is_some() {
            "RUNNER_TEMP"
        } else {
            "TMPDIR"
        };
        ConfigError {
            input: variable,
            message: format!(
                "it names a directory that cannot hold the response body's file ({e}); point \
                 {variable} at a writable directory"
            ),
        }
    })
}

/// Why the pipeline ended before the report stage.
enum Halt {
    /// Invalid input or configuration (exit 2, nothing sent).
    Invalid(ConfigError),
    /// Ended with this exit code; everything is reported already.
    Exit(Exit),
}

impl From<ConfigError> for Halt {
    fn from(e: ConfigError) -> Self {
        Halt::Invalid(e)
    }
}

impl From<PrepareError> for Halt {
    fn from(e: PrepareError) -> Self {
        Halt::Invalid(ConfigError {
            input: "body-file",
            message: e.to_string(),
        })
    }
}

/// What the later stages need from the config, taken before `prepare`
/// consumes it.
struct Plan {
    sinks: Sinks,
    limits: Limits,
    /// When `deadline` runs out, counted from the start of the invocation:
    /// it bounds everything, the GitHub API calls and the OIDC token too.
    deadline_at: Instant,
    github: GithubSettings,
    body_dir: PathBuf,
    dry_run: bool,
}

/// The settings of the GitHub-only steps.
struct GithubSettings {
    token: Option<String>,
    same_key_on_rerun: bool,
    key_ttl: Option<Duration>,
    allow_expired: bool,
    oidc_audience: Option<String>,
}

impl Plan {
    fn new(
        config: &Config,
        invocation: &Invocation,
        env: &Env,
        started: Instant,
        log: &mut Log,
    ) -> Self {
        let token = config
            .github_token
            .clone()
            .or_else(|| env.get("GITHUB_TOKEN").map(str::to_owned));
        if let Some(token) = &token {
            log.mask(token);
        }
        Self {
            sinks: Sinks {
                github_output: env.get("GITHUB_OUTPUT").map(PathBuf::from),
                dotenv: config.dotenv_file.clone(),
                step_summary: env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from),
                json: invocation.output == OutputMode::Json,
                mask_response: config.mask_response,
                max_output_size: config.max_output_size,
                earlier_attempts: Vec::new(),
            },
            limits: Limits {
                policy: config.policy.clone(),
                backoff: config.backoff,
                timeout: config.timeout,
                deadline: config.deadline,
            },
            deadline_at: started + config.deadline,
            github: GithubSettings {
                token,
                same_key_on_rerun: config.key.scope == KeyScope::Run,
                key_ttl: config.key_ttl,
                allow_expired: config.allow_expired_key,
                oidc_audience: config.oidc_audience.clone(),
            },
            body_dir: env
                .get("RUNNER_TEMP")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            dry_run: config.dry_run,
        }
    }

    /// Time left before the deadline.
    fn remaining(&self) -> Duration {
        self.deadline_at.saturating_duration_since(Instant::now())
    }

    /// The loop's limits, with the deadline shortened by what the earlier
    /// stages took.
    fn limits(&self) -> Limits {
        Limits {
            deadline: self.remaining(),
            ..self.limits.clone()
        }
    }
}

/// Stage 1: the inputs into a typed config; masks its secrets before
/// anything else is printed.
fn validate(invocation: &Invocation, log: &mut Log) -> Result<Config, Halt> {
    let config = Config::from_raw(&invocation.raw)?;
    register_secrets(&config, log);
    if config.tls.insecure {
        log.warning(
            "TLS verification is off",
            "`insecure` is true: the server's certificate is not checked, so anyone on the path can read and change this request",
        );
    }
    Ok(config)
}

fn start_runtime(log: &mut Log) -> Result<tokio::runtime::Runtime, Halt> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            log.error(
                "Cannot start",
                &format!("the async runtime failed to start: {e}"),
            );
            Halt::Exit(Exit::NoResponse)
        })
}

/// The GitHub-only steps, between the key and the retry loop: on a re-run
/// the earlier attempts and the re-run guard, then the OIDC bearer (and
/// what renews it before a retry).
fn github_steps<'e>(
    runtime: &tokio::runtime::Runtime,
    plan: &mut Plan,
    prepared: &mut Prepared,
    env: &'e Env,
    log: &mut Log,
) -> Result<Option<github::oidc::Renewer<'e>>, Halt> {
    let settings = &plan.github;
    let checks = rerun::Checks {
        env,
        token: settings.token.as_deref(),
        same_key_on_rerun: settings.same_key_on_rerun,
        key_ttl: settings.key_ttl,
        allow_expired: settings.allow_expired,
    };
    // Timers need the runtime: the timeouts are made inside `block_on`.
    let within = plan.remaining();
    let findings = runtime
        .block_on(async {
            tokio::time::timeout(within, rerun::check(&checks, SystemTime::now())).await
        })
        .unwrap_or_else(|_| {
            let why = "the GitHub API did not answer before the deadline".to_owned();
            rerun::unknown(&checks, why)
        });
    if findings.attempt > 1 {
        log.info(&format!(
            "this is run attempt {}; earlier attempts of this job:",
            findings.attempt
        ));
        for line in &findings.history {
            log.info(&format!("  {line}"));
        }
    }
    plan.sinks.earlier_attempts = findings.history;
    match findings.verdict {
        Some(Verdict::Refuse(message)) => {
            return Err(Halt::Exit(unsent::refused(
                prepared,
                &plan.sinks,
                &message,
                log,
            )));
        }
        Some(Verdict::SendAnyway(warning)) => {
            log.warning("The idempotency key may have expired", &warning);
        }
        Some(Verdict::Send) | None => {}
    }
    oidc_bearer(runtime, plan, prepared, env, log)
}

/// With `oidc-audience`: a GitHub OIDC token as the request's bearer, and
/// the [`github::oidc::Renewer`] that replaces it before a retry when it is
/// about to expire.
fn oidc_bearer<'e>(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    prepared: &mut Prepared,
    env: &'e Env,
    log: &mut Log,
) -> Result<Option<github::oidc::Renewer<'e>>, Halt> {
    let Some(audience) = &plan.github.oidc_audience else {
        return Ok(None);
    };
    let (client, token) = github::api::http_client()
        .and_then(|client| {
            let request = github::oidc::token(&client, env, audience);
            let within = plan.remaining();
            runtime
                .block_on(async { tokio::time::timeout(within, request).await })
                .unwrap_or_else(|_| {
                    Err("the OIDC token service did not answer before the deadline".to_owned())
                })
                .map(|token| (client, token))
        })
        .map_err(|message| {
            Halt::Invalid(ConfigError {
                input: "oidc-audience",
                message,
            })
        })?;
    log.mask(&token);
    prepared.add_bearer(&token);
    log.info("Authorization: a GitHub OIDC token for the given audience (masked)");
    Ok(Some(github::oidc::Renewer::new(
        github::oidc::Minter::new(client, env, audience.clone()),
        &token,
    )))
}

/// The stages of `verify`: the same config and request, then the checks'
/// requests instead of the retry loop, their verdicts and their report.
fn verify_stages(
    mut config: Config,
    invocation: &Invocation,
    env: &Env,
    started: Instant,
    log: &mut Log,
) -> Result<Exit, Halt> {
    let plan = Plan::new(&config, invocation, env, started, log);
    check_dotenv(&plan)?;
    let transport = Transport::new(&config, plan.body_dir.clone())?;
    if config.key.explicit.is_some() {
        log.warning(
            "idempotency-key is not used by verify",
            "verify sends random keys of its own, one per check, so that no real step's key is ever spent on a test",
        );
    }
    let settings = config.verify.clone();
    let rules = judge::Rules {
        ignore_headers: settings
            .ignore_headers
            .iter()
            .map(|name| name.as_str().to_owned())
            .collect(),
        id_field: settings.id_field.clone(),
    };
    let probe_settings = ProbeSettings {
        key_header: config.key.header.clone(),
        key_format: config.key.format,
        timeout: config.timeout,
        deadline_at: plan.deadline_at,
        id_field: settings.id_field.clone(),
        accept: config.policy.accept.clone(),
    };
    // Read once, here: the key's derivation then hashes these bytes, and
    // every check sends them.
    config.body =
        probe::in_memory(std::mem::replace(&mut config.body, Body::Empty)).map_err(|e| {
            ConfigError {
                input: "body-file",
                message: format!("verify reads the body into memory to send it several times: {e}"),
            }
        })?;
    let mut prepared = prepare(config, env)?;
    // OIDC tokens come from a GitHub job's token service.
    let oidc = log.is_github() && plan.github.oidc_audience.is_some();
    verify::report::plan(
        &verify::report::Plan {
            method: prepared.method.as_str(),
            url: &redact_url(&prepared.url),
            concurrency: settings.concurrency,
            has_body: !prepared.body.is_empty(),
            new_token: oidc,
            retention: settings.retention.map(crate::shared::units::show),
        },
        log,
    );
    if plan.dry_run {
        return Ok(verify::report::dry_run(log));
    }
    check_body_dir(&transport, env)?;
    let runtime = start_runtime(log)?;
    let minter = if oidc {
        // verify's checks are quick: the token is not renewed between them,
        // but the new-token and retention checks mint their own.
        oidc_bearer(&runtime, &plan, &mut prepared, env, log)?
            .map(github::oidc::Renewer::into_minter)
    } else {
        None
    };
    let mut probe = Probe::new(&transport, prepared, probe_settings);
    if let Some(minter) = minter {
        probe = probe.with_minter(minter);
    }
    let observed = runtime.block_on(probe.observe(settings.concurrency, settings.retention));
    for token in &probe.minted {
        log.mask(token);
    }
    Ok(match observed {
        Err(probe::Unreachable(reason)) => verify::report::unreachable(&reason, &plan.sinks, log),
        Ok(observed) => verify::report::emit(
            &judge::findings(&observed, &rules),
            probe.sent,
            &plan.sinks,
            log,
        ),
    })
}

/// Stage 3: the retry loop over the transport.
fn send(
    runtime: &tokio::runtime::Runtime,
    transport: &Transport,
    prepared: &mut Prepared,
    renewer: Option<github::oidc::Renewer<'_>>,
    limits: Limits,
    log: &mut Log,
) -> retry_loop::Finished {
    log.info(&format!(
        "sending {} {}",
        prepared.method,
        redact_url(&prepared.url)
    ));
    let mut attempter = Sender {
        transport,
        request: prepared,
        renewer,
    };
    runtime.block_on(retry_loop::run(
        &mut attempter,
        &limits,
        rand::rng(),
        SystemTime::now,
        log,
    ))
}

/// Whether a re-run sends this key again: one is sent, it is not random,
/// and the CI system keeps the identity on re-runs (the caller checks the
/// scope).
fn sends_stable_key(prepared: &Prepared) -> bool {
    matches!(&prepared.key, Some((key, _)) if key.source != KeySource::Random && key.caveat.is_none())
}

struct Sender<'a, 'e> {
    transport: &'a Transport,
    request: &'a mut Prepared,
    renewer: Option<github::oidc::Renewer<'e>>,
}

/// What renewing the bearer adds to an attempt: a note for its log, the
/// fresh token to mask, and whether the token service was asked (then the
/// time that took comes off the attempt's time limit).
#[derive(Default)]
struct Renewed {
    note: Option<String>,
    mask: Option<String>,
    asked: bool,
}

impl Sender<'_, '_> {
    /// Before a retry: a fresh OIDC token when the current one is about to
    /// expire. `Err` when it has expired and none came: the attempt is then
    /// not sent, and the loop may try again.
    async fn renew_bearer(&mut self, within: Duration) -> Result<Renewed, AttemptFailure> {
        let Some(renewer) = &mut self.renewer else {
            return Ok(Renewed::default());
        };
        let renewed = match renewer.renew_if_due(SystemTime::now(), within).await {
            Renewal::Kept => Renewed::default(),
            Renewal::Renewed(token) => {
                self.request.replace_bearer(&token);
                Renewed {
                    note: Some(
                        "the OIDC token was about to expire; sending a fresh one (masked)".into(),
                    ),
                    mask: Some(token),
                    asked: true,
                }
            }
            Renewal::Failed {
                expired: false,
                reason,
            } => Renewed {
                note: Some(format!(
                    "the OIDC token is about to expire and no fresh one came ({reason}); sending the current one"
                )),
                mask: None,
                asked: true,
            },
            Renewal::Failed {
                expired: true,
                reason,
            } => {
                return Err(AttemptFailure {
                    kind: Failure::NotSent,
                    reason: format!(
                        "not sent: the OIDC token has expired and no fresh one came ({reason})"
                    ),
                });
            }
        };
        Ok(renewed)
    }
}

impl Attempter for Sender<'_, '_> {
    async fn attempt(&mut self, n: u32, timeout: Duration) -> Attempted {
        let started = Instant::now();
        // The first attempt sends the token fetched just before it.
        let renewed = if n > 1 {
            self.renew_bearer(timeout).await
        } else {
            Ok(Renewed::default())
        };
        let renewed = match renewed {
            Ok(renewed) => renewed,
            Err(failure) => {
                return Attempted {
                    result: Err(failure),
                    notes: Vec::new(),
                    masks: Vec::new(),
                };
            }
        };
        let left = if renewed.asked {
            timeout.saturating_sub(started.elapsed())
        } else {
            timeout
        };
        let mut attempted = self.transport.attempt(self.request, left).await;
        attempted.notes.splice(0..0, renewed.note);
        attempted.masks.extend(renewed.mask);
        attempted
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
