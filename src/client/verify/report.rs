//! The report of `verify`: the plan before anything is sent, the table of
//! verdicts in the log and the step summary, the `verify-*` outputs, error
//! annotations with what to do, and the exit code.

use crate::client::report::exit::Exit;
use crate::client::report::log::Log;
use crate::client::report::outcome::{self, Sinks};
use crate::client::report::outputs::Outputs;
use crate::client::report::summary::cell;
use crate::client::verify::checks::{CHECKS, CheckId, check, planned_requests};
use crate::client::verify::judge::{Finding, Verdict, passed};

/// What the plan says.
pub struct Plan<'a> {
    /// Method.
    pub method: &'a str,
    /// The redacted URL.
    pub url: &'a str,
    /// `verify-concurrency`.
    pub concurrency: u32,
    /// Whether the request has a body (check 3 applies).
    pub has_body: bool,
    /// Whether the request carries an OIDC token (check 6 applies).
    pub new_token: bool,
    /// `verify-retention`, shown.
    pub retention: Option<String>,
}

/// Says how many requests will be sent, that each may act, and what each
/// check sends.
pub fn plan(plan: &Plan<'_>, log: &mut Log) {
    let n = planned_requests(
        plan.concurrency,
        plan.has_body,
        plan.new_token,
        plan.retention.is_some(),
    );
    log.info(&format!(
        "verify: up to {n} requests {} {}, each of which may act on the server (create, deploy, \
         charge): aim verify at a staging or test endpoint; answers refused while a key is in \
         flight (409, 425, 429) are asked again",
        plan.method, plan.url
    ));
    for c in CHECKS {
        let note = match c.id {
            CheckId::ChangedPayload if !plan.has_body => " (skipped: no body)",
            CheckId::NewToken if !plan.new_token => {
                " (skipped: needs oidc-audience in a GitHub Actions job)"
            }
            CheckId::Retention if plan.retention.is_none() => {
                " (skipped: verify-retention is not set)"
            }
            _ => "",
        };
        let sends = match (c.id, &plan.retention) {
            (CheckId::Retention, Some(wait)) => {
                format!("{}, {wait}", c.sends)
            }
            _ => c
                .sends
                .replace("`verify-concurrency`", &plan.concurrency.to_string()),
        };
        log.info(&format!("  {:<16} {sends}{note}", c.name));
    }
}

/// `dry-run`: the plan only.
pub fn dry_run(log: &mut Log) -> Exit {
    log.info("dry run: nothing was sent");
    Exit::Success
}

/// The server could not be reached: nothing was judged (exit 3).
pub fn unreachable(reason: &str, sinks: &Sinks, log: &mut Log) -> Exit {
    let message = format!(
        "the first request got no answer ({reason}); nothing was judged. Check the URL, the \
         network path and the TLS settings"
    );
    log.error("Verification could not reach the server", &message);
    let mut outputs = Outputs::default();
    outputs.set("verify-result", "failed");
    outputs.set("error", message);
    if let Err(e) = outcome::write_outputs(&outputs, sinks, log) {
        log.error("Cannot write outputs", &format!("{e:#}"));
    }
    Exit::NoResponse
}

/// Reports the findings: the table, an annotation per failed check, the
/// outputs and the summary. Exit 0 when every required check passed.
pub fn emit(findings: &[Finding], sent: u32, sinks: &Sinks, log: &mut Log) -> Exit {
    log.info(&format!("verify: {sent} requests sent"));
    for f in findings {
        log.info(&format!(
            "  {:<16} {:<15} {}",
            check(f.check).name,
            f.verdict.word(),
            f.seen
        ));
    }
    let ok = passed(findings);
    let failed: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Failed && check(f.check).required)
        .collect();
    for f in &failed {
        let c = check(f.check);
        log.error(
            &format!("{} check failed", c.title),
            &format!(
                "{}. A correct server {}. What to do: {}.",
                f.seen, c.correct, c.remedy
            ),
        );
    }
    let mut outputs = Outputs::default();
    outputs.set("verify-result", if ok { "passed" } else { "failed" });
    outputs.set("verify-checks", checks_json(findings));
    if !ok {
        let names: Vec<&str> = failed.iter().map(|f| check(f.check).name).collect();
        outputs.set(
            "error",
            format!("verification failed: {}", names.join(", ")),
        );
    } else {
        log.info("verify: every required check passed");
    }
    let mut exit = if ok { Exit::Success } else { Exit::Rejected };
    if let Err(e) = outcome::write_outputs(&outputs, sinks, log) {
        log.error("Cannot write outputs", &format!("{e:#}"));
        exit = Exit::NoResponse;
    }
    if let Some(path) = &sinks.step_summary
        && let Err(e) = outcome::append(path, summary(findings, sent).as_bytes())
    {
        log.warning(
            "Cannot write the step summary",
            &format!("{}: {e}", path.display()),
        );
    }
    exit
}

/// The `verify-checks` output: each check by name.
fn checks_json(findings: &[Finding]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = findings
        .iter()
        .map(|f| {
            let c = check(f.check);
            let value = serde_json::json!({
                "verdict": f.verdict.word(),
                "required": c.required,
                "seen": f.seen,
            });
            (c.name.to_owned(), value)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The step summary's Markdown section.
fn summary(findings: &[Finding], sent: u32) -> String {
    let mut out = format!(
        "### idempotent-request verify\n\n{sent} requests sent.\n\n| Check | Verdict | Seen |\n|---|---|---|\n"
    );
    for f in findings {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            check(f.check).title,
            f.verdict.word(),
            cell(&f.seen)
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_puts_every_seen_text_in_a_code_span() {
        let findings = [Finding {
            check: CheckId::Replay,
            verdict: Verdict::Failed,
            seen: "headers differ: x|y".to_owned(),
        }];
        let text = summary(&findings, 2);
        assert!(
            text.contains("| Replay | failed | ` headers differ: x\\|y ` |"),
            "{text}"
        );
    }

    #[test]
    fn the_checks_output_is_one_object_by_name() {
        let findings = [Finding {
            check: CheckId::NoKey,
            verdict: Verdict::Info,
            seen: "answered 201".to_owned(),
        }];
        let value: serde_json::Value = serde_json::from_str(&checks_json(&findings)).unwrap();
        assert_eq!(value["no-key"]["verdict"], "info");
        assert_eq!(value["no-key"]["required"], false);
    }
}
