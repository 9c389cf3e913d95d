//! The last stage: turns how the loop finished into step outputs, an exit
//! code, a final log line or error annotation, and the step summary.
//! [`Report::new`] is pure; [`Report::emit`] does the writing.

use crate::client::key::prepare::Prepared;
use crate::client::report::exit::Exit;
use crate::client::report::log::Log;
use crate::client::report::outputs::{self, Outputs};
use crate::client::report::summary::{self, Summary};
use crate::client::send::retry::{Failure, StopReason};
use crate::client::send::retry_loop::Finished;
use crate::client::send::transport::{Response, is_replayed};
use crate::shared::units::show;
use std::io::Write;
use std::path::PathBuf;

/// Where results go.
pub struct Sinks {
    /// `$GITHUB_OUTPUT`, when set.
    pub github_output: Option<PathBuf>,
    /// `dotenv-file`, when set.
    pub dotenv: Option<PathBuf>,
    /// `$GITHUB_STEP_SUMMARY`, when set.
    pub step_summary: Option<PathBuf>,
    /// Without `$GITHUB_OUTPUT`: JSON (`--output json`) instead of the body.
    pub json: bool,
    /// `mask-response`.
    pub mask_response: bool,
    /// `max-output-size`.
    pub max_output_size: usize,
    /// On a re-run: one line per earlier attempt of this job (summary).
    pub earlier_attempts: Vec<String>,
}

/// Everything the run reports.
pub struct Report {
    /// The step outputs.
    pub outputs: Outputs,
    /// The exit code.
    pub exit: Exit,
    /// Title and message of the failure, when it failed.
    pub error: Option<(String, String)>,
    response: Option<Response>,
    summary_outcome: String,
}

/// Describes a failure and what to do about it.
fn failure_message(
    finished: &Finished,
    response: Option<&Response>,
    failure: Option<&crate::client::send::transport::AttemptFailure>,
    rerun_safe: bool,
) -> (String, String) {
    let n = finished.attempts;
    let rerun = if rerun_safe {
        " Re-running the job is safe: it sends the same idempotency key."
    } else {
        ""
    };
    let what = match (response, failure) {
        (Some(r), _) => format!(
            "the server answered {} {}",
            r.status.as_u16(),
            r.status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
        (None, Some(f)) => f.reason.clone(),
        (None, None) => "no response".to_owned(),
    };
    // Retried 409s that ran out: the first request with this key is most
    // likely still being processed, which changes what to do.
    let in_flight = if response.is_some_and(|r| r.status.as_u16() == 409) {
        " A 409 is how a server that honours idempotency keys says an earlier request with this \
         key is still in progress (idempotency-gateway answers so while it forwards the first); \
         once that request completes its answer is stored, and the same key gets it."
    } else {
        ""
    };
    match (finished.stop, failure.map(|f| f.kind)) {
        (Some(StopReason::FinalStatus), _) if response.is_some_and(Response::is_key_reused) => (
            "Request rejected: key used for another request".to_owned(),
            format!(
                "After {n} attempt(s) the gateway answered 422: this idempotency key was already \
                 used for a different request (another method, path, query, content type, body \
                 or content coding), so nothing was forwarded. A derived key stays the same while \
                 the request changes when the body does not feed it (`key-include-body: false`) \
                 or when the Content-Type changes. Send the same request as the first time, or \
                 give this one its own key: change `key-salt`, or `idempotency-key` if you set it."
            ),
        ),
        (Some(StopReason::FinalStatus), _) if response.is_some_and(Response::is_unauthorized) => (
            "Request rejected: the gateway did not accept the token".to_owned(),
            format!(
                "After {n} attempt(s) the gateway answered 401: it tells callers apart by a \
                 verified bearer JWT, and this request's was missing or did not verify (the \
                 reason is in the log's excerpt of the answer); nothing was forwarded. With \
                 `oidc-audience`, it must be one of the gateway's `--jwt-audience` values, and \
                 the job needs `permissions: id-token: write`; with a token of your own in \
                 `headers`, check its issuer, audience and expiry against the gateway's \
                 `--jwt-issuer`, `--jwt-audience` and `--jwt-leeway`."
            ),
        ),
        (Some(StopReason::FinalStatus), _) => (
            format!(
                "Request rejected: HTTP {}",
                response.map_or(0, |r| r.status.as_u16())
            ),
            format!(
                "After {n} attempt(s) {what}, which is not in accept-status and is not retried. \
                 The response is in the `status`, `headers` and `body` outputs; fix the request, \
                 or widen accept-status if this status means success."
            ),
        ),
        (Some(StopReason::OutcomeUnknown), _) => (
            "Outcome unknown: not re-sent".to_owned(),
            format!(
                "After {n} attempt(s) the gateway answered that it forwarded this request once \
                 and never got a complete answer, so whether the API acted is unknown. It will \
                 not send the request again with this key, so retrying and re-running only \
                 replay this answer. Check on the API's side whether the operation happened; to \
                 send it again on purpose, change `key-salt` (a new key)."
            ),
        ),
        (Some(StopReason::DeadlineWouldPass { wait }), _) => (
            "Request gave up: deadline".to_owned(),
            format!(
                "After {n} attempt(s) {what}; the next wait ({}) would pass the deadline. \
                 Raise `deadline` to wait longer.{in_flight}{rerun}",
                show(wait)
            ),
        ),
        (_, Some(Failure::Tls)) => (
            "Request failed: TLS".to_owned(),
            format!(
                "{what}. Not retried: this is a configuration problem. Trust the server's CA with \
                 `ca-file`, check `client-cert`/`client-key`, or fix the server's certificate."
            ),
        ),
        (_, Some(Failure::TooLarge)) => (
            "Request failed: response too large".to_owned(),
            format!(
                "{what}. Raise `max-response-size` if the response is expected to be this large."
            ),
        ),
        (_, Some(Failure::HeadTooLarge)) => (
            "Request failed: response head too large".to_owned(),
            format!(
                "{what}. Not retried: the server answered, and every retry would get the same \
                 head. The server may have acted on the request. Have it send fewer or shorter \
                 headers (a proxy in front of it may be adding them) and a Content-Length it \
                 can send.{rerun}"
            ),
        ),
        (_, Some(Failure::NotHttp)) => (
            "Request failed: not an HTTP response".to_owned(),
            format!(
                "{what}. Not retried: something answered, and every retry would get the same \
                 answer. Check that `url` names an HTTP server and that its scheme matches the \
                 port (an `http://` URL to a TLS port, or a port that speaks another protocol, \
                 can be answered like this), or whether a proxy in between breaks HTTP. An \
                 HTTP server may have acted on the request.{rerun}"
            ),
        ),
        (_, Some(Failure::Local)) => ("Request failed".to_owned(), format!("{what}.")),
        (_, Some(Failure::BodyChanged)) => (
            "Request stopped: body-file changed".to_owned(),
            format!(
                "{what}. Not retried: the file must hold the same bytes for every attempt, because \
                 the key stands for them. If an earlier attempt may have reached the server, it \
                 sent the original bytes. Write the file before this step and leave it alone \
                 while the step runs."
            ),
        ),
        (_, Some(_)) => (
            "Request failed: no response".to_owned(),
            format!(
                "No HTTP response after {n} attempt(s): {what}. Check that the URL is reachable \
                 from this runner, or raise `max-attempts` or `deadline`.{rerun}"
            ),
        ),
        (_, None) => (
            format!(
                "Request failed: HTTP {}",
                response.map_or(0, |r| r.status.as_u16())
            ),
            format!(
                "After {n} attempt(s) {what}; max-attempts is used up. Raise `max-attempts` or \
                 `deadline` to keep trying.{in_flight}{rerun}"
            ),
        ),
    }
}

impl Report {
    /// Builds the report. `rerun_safe` says whether a re-run sends the same
    /// key (run scope), which the failure message then mentions.
    pub fn new(
        finished: Finished,
        prepared: &Prepared,
        max_output_size: usize,
        rerun_safe: bool,
    ) -> Self {
        let mut out = Outputs::default();
        let (response, failure) = match finished.last {
            Ok(ref r) => (Some(r), None),
            Err(ref f) => (None, Some(f)),
        };
        if let Some(r) = response {
            out.set("status", r.status.as_u16().to_string());
            out.set(
                "headers",
                outputs::headers_json(r.headers.iter().map(|(n, v)| (n.as_str(), v.clone()))),
            );
            let (text, truncated) = outputs::body_text(&r.head, r.body_len, max_output_size);
            out.set("body", text);
            out.set("body-truncated", truncated.to_string());
            out.set("body-file", r.body_file.display().to_string());
        }
        out.set("idempotency-key", prepared.key_value());
        out.set("trace-id", prepared.trace.id_hex());
        out.set("attempts", finished.attempts.to_string());
        out.set("replayed", response.is_some_and(is_replayed).to_string());
        out.set("elapsed-ms", finished.elapsed.as_millis().to_string());
        let error = finished
            .stop
            .map(|_| failure_message(&finished, response, failure, rerun_safe));
        if let Some((_, message)) = &error {
            out.set("error", message.clone());
        }
        let exit = match (&finished.last, finished.stop) {
            (Ok(_), None) => Exit::Success,
            (Ok(_), Some(_)) => Exit::Rejected,
            (Err(f), _) if f.kind == Failure::BodyChanged => Exit::Usage,
            (Err(_), _) => Exit::NoResponse,
        };
        let summary_outcome = match (response, failure) {
            (Some(r), _) => r.status.as_u16().to_string(),
            (None, Some(f)) => format!("no response ({})", f.reason),
            (None, None) => "no response".to_owned(),
        };
        Self {
            outputs: out,
            exit,
            error,
            response: finished.last.ok(),
            summary_outcome,
        }
    }

    /// Writes outputs, the summary and the final log lines; prints the body
    /// (or JSON) on stdout when there is no `$GITHUB_OUTPUT`. Returns the
    /// exit code (a failure to write outputs turns success into failure).
    pub fn emit(self, prepared: &Prepared, sinks: &Sinks, log: &mut Log) -> Exit {
        let Report {
            outputs,
            mut exit,
            error,
            response,
            summary_outcome,
        } = self;
        if let (true, Some(body)) = (sinks.mask_response, outputs.get("body")) {
            log.mask(body);
        }
        if let (Some(r), Some(_)) = (&response, &error) {
            let (excerpt, _) = outputs::body_text(&r.head, r.body_len, 500);
            if !excerpt.trim().is_empty() {
                log.untrusted("response body (excerpt):", &excerpt);
            }
        }
        if let Some((title, message)) = &error {
            log.error(title, message);
        }
        // The body file outlives this process only where something points at it.
        let keep_body = sinks.github_output.is_some() || sinks.json;
        if let Err(e) = write_results(&outputs, response, keep_body, sinks, log) {
            log.error("Cannot write outputs", &format!("{e:#}"));
            // The result never reached the workflow: not a success.
            if exit == Exit::Success {
                exit = Exit::NoResponse;
            }
        }
        append_summary(
            sinks,
            &Summary {
                method: prepared.method.as_str(),
                url: &crate::shared::redact::redact_url(&prepared.url),
                key: prepared.key.as_ref().map(|(k, _)| k.value.as_str()),
                trace_id: outputs.get("trace-id").filter(|id| !id.is_empty()),
                attempts: outputs
                    .get("attempts")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                outcome: &summary_outcome,
                replayed: outputs.get("replayed") == Some("true"),
                elapsed_ms: outputs
                    .get("elapsed-ms")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                earlier_attempts: &sinks.earlier_attempts,
            },
            log,
        );
        exit
    }
}

/// Appends `summary` to `$GITHUB_STEP_SUMMARY`, when set; a failure is a
/// warning (the request's outcome stands).
pub fn append_summary(sinks: &Sinks, summary: &Summary<'_>, log: &mut Log) {
    if let Some(path) = &sinks.step_summary
        && let Err(e) = append(path, summary::render(summary).as_bytes())
    {
        log.warning(
            "Cannot write the step summary",
            &format!("{}: {e}", path.display()),
        );
    }
}

/// Appends `bytes` to the file at `path`, creating it if needed (the
/// runner's file commands are appended to, never overwritten). Only a
/// regular file: a FIFO named by `dotenv-file` must not hold the step.
pub fn append(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use crate::shared::regular_file::{DEFAULT_MODE, append_regular};
    append_regular(path, DEFAULT_MODE)?.write_all(bytes)
}

/// Appends the one-line outputs to `dotenv-file`, when set.
pub fn write_dotenv(outputs: &Outputs, sinks: &Sinks) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(path) = &sinks.dotenv {
        append(path, outputs::render_dotenv(outputs).as_bytes())
            .with_context(|| format!("appending to dotenv-file ({})", path.display()))?;
    }
    Ok(())
}

/// Writes `outputs` alone (no response body): `dotenv-file`, then
/// `$GITHUB_OUTPUT`, or JSON on stdout under `--output json`.
pub fn write_outputs(outputs: &Outputs, sinks: &Sinks, log: &mut Log) -> anyhow::Result<()> {
    write_results(outputs, None, false, sinks, log)
}

fn write_results(
    outputs: &Outputs,
    response: Option<Response>,
    keep_body: bool,
    sinks: &Sinks,
    log: &mut Log,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let body_path = response.map(|r| r.body_file);
    write_dotenv(outputs, sinks)?;
    if let Some(path) = &sinks.github_output {
        let text = outputs::render(outputs, outputs::random_delimiter)?;
        append(path, text.as_bytes())
            .with_context(|| format!("appending to GITHUB_OUTPUT ({})", path.display()))?;
    } else if log.is_github() {
        log.warning(
            "No GITHUB_OUTPUT",
            "GITHUB_OUTPUT is not set, so no step outputs were written; the body is not printed under GitHub Actions",
        );
    } else if sinks.json {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", outputs.to_json()).context("writing to stdout")?;
    } else if let Some(path) = &body_path {
        let mut file = std::fs::File::open(path).context("reading the response body file")?;
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut file, &mut stdout).context("writing the body to stdout")?;
        stdout.flush().context("writing the body to stdout")?;
    }
    // Dropping the path deletes the file; keep it where an output names it.
    if let (true, Some(path)) = (keep_body, body_path) {
        path.keep().context("keeping the response body file")?;
    }
    Ok(())
}
