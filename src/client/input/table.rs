//! The table of inputs: the one place where every input's name, default and
//! meaning is defined.
//!
//! The CLI flags, the `INPUT_*` environment lookup, `--help`, the README's
//! input table and `action.yml` are all derived from (or checked against)
//! [`INPUTS`], so they cannot drift apart.

/// One input of the client, settable as `--NAME` or `INPUT_NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// Kebab-case name, as used in `action.yml` and for the flag.
    pub name: &'static str,
    /// Default as the user would write it; empty when there is none.
    pub default: &'static str,
    /// One-sentence meaning, shown by `--help` and in the docs.
    pub help: &'static str,
    /// Placeholder shown by `--help` for the value.
    pub value_name: &'static str,
    /// `true` when the value is taken verbatim (not trimmed).
    pub verbatim: bool,
    /// The default `action.yml` declares, where it differs from the CLI's
    /// (an expression only the runner can evaluate).
    pub action_default: Option<&'static str>,
    /// Whether it acts only under GitHub Actions (the re-run guard, OIDC);
    /// the GitLab template leaves these out.
    pub github_only: bool,
}

const fn input(
    name: &'static str,
    default: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Input {
    Input {
        name,
        default,
        help,
        value_name,
        verbatim: false,
        action_default: None,
        github_only: false,
    }
}

const fn verbatim(name: &'static str, value_name: &'static str, help: &'static str) -> Input {
    Input {
        name,
        default: "",
        help,
        value_name,
        verbatim: true,
        action_default: None,
        github_only: false,
    }
}

/// An input that acts only under GitHub Actions.
const fn github(
    name: &'static str,
    default: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Input {
    Input {
        github_only: true,
        ..input(name, default, value_name, help)
    }
}

/// Every input, in the order the docs list them.
pub const INPUTS: &[Input] = &[
    input(
        "url",
        "",
        "URL",
        "Absolute http(s) URL to send the request to (required).",
    ),
    input(
        "method",
        "POST",
        "METHOD",
        "HTTP method; any token but `CONNECT`, upper-cased.",
    ),
    input(
        "headers",
        "",
        "LINES",
        "Request headers, one `Name: value` per line; blank lines are ignored.",
    ),
    verbatim(
        "body",
        "TEXT",
        "Raw request body, sent verbatim (excludes `body-file` and `json`).",
    ),
    input(
        "body-file",
        "",
        "PATH",
        "File sent as the request body, streamed and re-opened for every attempt.",
    ),
    verbatim(
        "json",
        "DOCUMENT",
        "A JSON or YAML document, sent as JSON (Content-Type: application/json unless set).",
    ),
    input(
        "content-type",
        "",
        "TYPE",
        "Shorthand for the Content-Type header.",
    ),
    input(
        "idempotency-key",
        "",
        "KEY",
        "Explicit key sent verbatim instead of a derived one (1-255 visible ASCII characters).",
    ),
    input(
        "key-header",
        "Idempotency-Key",
        "NAME",
        "Header that carries the key.",
    ),
    input(
        "key-scope",
        "run",
        "run|attempt",
        "`run`: one key for every attempt of the run (survives re-runs); `attempt`: a new key per run attempt.",
    ),
    input(
        "key-salt",
        "",
        "TEXT",
        "Extra string mixed into the derived key, to tell apart otherwise identical requests.",
    ),
    input(
        "key-include-body",
        "true",
        "BOOL",
        "Whether the request body feeds the derived key.",
    ),
    input(
        "key-headers",
        "",
        "NAMES",
        "Comma-separated header names whose values feed the derived key.",
    ),
    input(
        "key-format",
        "plain",
        "plain|structured",
        "`plain` sends the bare key; `structured` sends it as an RFC 8941 sf-string (quoted).",
    ),
    input(
        "accept-status",
        "200-299",
        "LIST",
        "Comma-separated status codes and ranges that count as success.",
    ),
    input(
        "max-attempts",
        "5",
        "N",
        "Total number of attempts, the first included.",
    ),
    input(
        "retry-on-status",
        "408,409,425,429,500,502,503,504",
        "LIST",
        "Comma-separated status codes and ranges that are retried, or `none`.",
    ),
    input(
        "retry-delay",
        "1s",
        "DURATION",
        "Base of the exponential backoff between attempts.",
    ),
    input(
        "retry-max-delay",
        "30s",
        "DURATION",
        "Cap of one backoff sleep.",
    ),
    input(
        "timeout",
        "60s",
        "DURATION",
        "Time limit of one attempt, response body included.",
    ),
    input(
        "connect-timeout",
        "10s",
        "DURATION",
        "Time limit for establishing a connection.",
    ),
    input(
        "deadline",
        "10m",
        "DURATION",
        "Time limit for all attempts and waits together.",
    ),
    input(
        "follow-redirects",
        "false",
        "BOOL",
        "Follow up to 10 redirects; unsafe methods follow only 307/308; credentials never cross origins.",
    ),
    input(
        "redirect-key-origins",
        "",
        "ORIGINS",
        "Comma-separated origins (`https://host[:port]`) a redirect may take a keyed request to, with its key; other cross-origin redirects of a keyed request are not followed.",
    ),
    input(
        "ca-file",
        "",
        "PATH",
        "PEM bundle of certificates trusted in addition to the platform roots.",
    ),
    input(
        "client-cert",
        "",
        "PATH",
        "PEM certificate (chain) for mutual TLS; needs `client-key`.",
    ),
    input(
        "client-key",
        "",
        "PATH",
        "PEM private key for mutual TLS; needs `client-cert`.",
    ),
    input(
        "insecure",
        "false",
        "BOOL",
        "Skip TLS certificate verification (prints a warning on every run).",
    ),
    input(
        "max-output-size",
        "1MiB",
        "SIZE",
        "Largest response body put into the `body` output; the rest is cut on a UTF-8 boundary.",
    ),
    input(
        "max-response-size",
        "100MiB",
        "SIZE",
        "Largest response body accepted at all; a larger one fails with exit code 3.",
    ),
    input(
        "mask-response",
        "false",
        "BOOL",
        "Register every line of the `body` output as a secret (`::add-mask::`), splitting on CR and LF.",
    ),
    github(
        "key-ttl",
        "",
        "DURATION",
        "How long the target server keeps keys; on a re-run past it, refuse to send (exit 4). Unset: no guard.",
    ),
    Input {
        name: "github-token",
        default: "",
        help: "Token for the GitHub API (re-run guard and history; needs `actions: read`). Falls back to GITHUB_TOKEN.",
        value_name: "TOKEN",
        verbatim: false,
        action_default: Some("${{ github.token }}"),
        github_only: true,
    },
    github(
        "allow-expired-key",
        "false",
        "BOOL",
        "Send on a re-run even when the key may have expired on the server, or its age cannot be checked.",
    ),
    github(
        "oidc-audience",
        "",
        "AUDIENCE",
        "Request a GitHub OIDC token for this audience and send it as `Authorization: Bearer`, renewed before a retry when it is about to expire (needs `id-token: write`).",
    ),
    input(
        "dotenv-file",
        "",
        "PATH",
        "Also append the one-line outputs (status, key, trace-id, attempts, replayed, elapsed-ms, body-truncated) to this file as `IDEMPOTENT_REQUEST_<NAME>=value` lines, for a GitLab `dotenv` report.",
    ),
    input(
        "send-traceparent",
        "true",
        "BOOL",
        "Send a W3C `traceparent` whose trace-id is derived from the key, so every attempt and re-run shares it (a `traceparent` in `headers` is sent instead).",
    ),
    input(
        "verify",
        "false",
        "BOOL",
        "Instead of sending the request once, check that the server honours idempotency keys (the `verify` command); sends several requests, each of which may act: aim it at a staging or test endpoint.",
    ),
    input(
        "verify-concurrency",
        "5",
        "N",
        "`verify`: how many requests the concurrent-duplicates check sends at once with one key (2-50).",
    ),
    input(
        "verify-id-field",
        "",
        "POINTER",
        "`verify`: JSON pointer (RFC 6901, e.g. `/id`) to the response field that identifies what a request created; answers are compared by it as well as byte for byte.",
    ),
    input(
        "verify-ignore-headers",
        "",
        "NAMES",
        "`verify`: comma-separated response headers that may differ between an answer and its replay (e.g. `X-Request-Id`), besides Date, Age, framing and the replay markers.",
    ),
    input(
        "verify-retention",
        "",
        "DURATION",
        "`verify`: also check that a key is still replayed after this wait (the figure to give `key-ttl`); unset: not checked.",
    ),
    input(
        "dry-run",
        "false",
        "BOOL",
        "Derive and print the key and the request line; send nothing.",
    ),
];

/// Looks an input up by name.
///
/// # Panics
/// Panics when `name` is not in [`INPUTS`]: that is a programming error,
/// caught by every test that builds a config.
pub fn spec(name: &str) -> &'static Input {
    INPUTS
        .iter()
        .find(|input| input.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not in the input table"))
}

/// The environment variable spellings of an input, in lookup order:
/// `INPUT_KEY-SCOPE` (what the runner sets for JavaScript and Docker actions)
/// and `INPUT_KEY_SCOPE` (what survives every shell, used by `action.yml`).
pub fn env_names(name: &str) -> [String; 2] {
    let upper = name.to_ascii_uppercase();
    [
        format!("INPUT_{upper}"),
        format!("INPUT_{}", upper.replace('-', "_")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for input in INPUTS {
            assert!(seen.insert(input.name), "duplicate input {}", input.name);
            assert!(
                input
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{} is not kebab-case",
                input.name
            );
            assert!(
                input.help.ends_with('.'),
                "{} help lacks a period",
                input.name
            );
        }
    }

    #[test]
    fn env_names_cover_both_spellings() {
        assert_eq!(
            env_names("key-scope"),
            ["INPUT_KEY-SCOPE".to_owned(), "INPUT_KEY_SCOPE".to_owned()]
        );
    }
}
