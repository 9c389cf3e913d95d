//! The report of an invocation that sends nothing: invalid input (exit 2),
//! a re-run refused by the guard (exit 4), a dry run, and the `key`
//! subcommand. Each writes what it has (the `error` or `idempotency-key`
//! output, an annotation, the summary) and returns the exit code.

use crate::client::input::config::ConfigError;
use crate::client::key::prepare::Prepared;
use crate::client::report::exit::Exit;
use crate::client::report::log::Log;
use crate::client::report::outcome::{self, Sinks};
use crate::client::report::outputs::{self, Outputs};
use crate::client::report::summary::Summary;
use crate::shared::env::Env;
use crate::shared::redact::redact_url;
use std::path::PathBuf;

/// Invalid input: an error line (an annotation under GitHub Actions) that
/// names the input, the `error` output, exit code 2. Nothing has been sent.
pub fn invalid_input(error: &ConfigError, env: &Env, log: &mut Log) -> Exit {
    log.error(
        &format!("Invalid input `{}`", error.input),
        &format!("{}. Nothing was sent.", error.message),
    );
    let mut outputs = Outputs::default();
    outputs.set("error", error.to_string());
    let sinks = Sinks {
        github_output: env.get("GITHUB_OUTPUT").map(PathBuf::from),
        dotenv: None,
        step_summary: None,
        json: false,
        mask_response: false,
        max_output_size: 0,
        earlier_attempts: Vec::new(),
    };
    write_outputs(&outputs, &sinks, log);
    Exit::Usage
}

/// The re-run guard refused: outputs, an error annotation, the summary,
/// exit code 4. Nothing was sent.
pub fn refused(prepared: &Prepared, sinks: &Sinks, message: &str, log: &mut Log) -> Exit {
    log.error(
        "Re-run refused: the idempotency key may have expired",
        message,
    );
    let mut outputs = Outputs::default();
    outputs.set("idempotency-key", prepared.key_value());
    outputs.set("trace-id", prepared.trace.id_hex());
    outputs.set("attempts", "0");
    outputs.set("replayed", "false");
    outputs.set("error", message);
    // A failure to write outputs is logged there; the refusal stays the outcome.
    let _ = write_outputs(&outputs, sinks, log);
    outcome::append_summary(
        sinks,
        &Summary {
            method: prepared.method.as_str(),
            url: &redact_url(&prepared.url),
            key: prepared.key.as_ref().map(|(k, _)| k.value.as_str()),
            trace_id: Some(prepared.trace.id_hex())
                .filter(|id| !id.is_empty())
                .as_deref(),
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

/// `--dry-run`: says what would be sent, prints the key where no output
/// file takes it, writes the `idempotency-key` output.
pub fn dry_run(prepared: &Prepared, sinks: &Sinks, log: &mut Log) -> Exit {
    log.info(&format!(
        "dry run: would send {} {}; nothing was sent",
        prepared.method,
        redact_url(&prepared.url)
    ));
    if (sinks.json || sinks.github_output.is_none())
        && let Err(exit) = print_key_line(prepared, log)
    {
        return exit;
    }
    let mut outputs = Outputs::default();
    outputs.set("idempotency-key", prepared.key_value());
    outputs.set("trace-id", prepared.trace.id_hex());
    write_outputs(&outputs, sinks, log).unwrap_or(Exit::Success)
}

/// `idempotent-request key`: the key on stdout.
pub fn print_key(prepared: &Prepared, log: &mut Log) -> Exit {
    // The binary gives `key` a log on stderr, so stdout holds the key alone.
    if let Some(line) = prepared.key_line() {
        log.info(&line);
    }
    print_key_line(prepared, log).err().unwrap_or(Exit::Success)
}

/// The key and a line break on stdout. A stdout that takes nothing (a pipe
/// whose reader has gone) is an output not written: exit 3, said on the
/// log, never a panic.
fn print_key_line(prepared: &Prepared, log: &mut Log) -> Result<(), Exit> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", prepared.key_value())
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            log.error(
                "Cannot write outputs",
                &format!("writing the key to stdout: {e}"),
            );
            Exit::NoResponse
        })
}

/// Appends `outputs` to `$GITHUB_OUTPUT` and `dotenv-file` where set;
/// `Some(exit)` when that failed (the failure is logged).
fn write_outputs(outputs: &Outputs, sinks: &Sinks, log: &mut Log) -> Option<Exit> {
    if let Err(e) = outcome::write_dotenv(outputs, sinks) {
        log.error("Cannot write outputs", &format!("{e:#}"));
        return Some(Exit::NoResponse);
    }
    let path = sinks.github_output.as_ref()?;
    let written = outputs::render(outputs, outputs::random_delimiter)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            outcome::append(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
        });
    match written {
        Ok(()) => None,
        Err(e) => {
            log.error("Cannot write outputs", &e);
            Some(Exit::NoResponse)
        }
    }
}
