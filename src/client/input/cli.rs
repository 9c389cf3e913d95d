//! Command-line and environment parsing into [`RawInputs`]: strings only,
//! validated later by [`super::config`].
//!
//! Every input of [`super::table::INPUTS`] is a `--NAME` flag and an
//! `INPUT_NAME` variable (hyphen or underscore spelling); a flag wins over
//! the environment, and an empty value counts as unset.

use crate::client::input::table::{INPUTS, Input, env_names};
use crate::shared::env::Env;
use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the request.
    Send,
    /// Print the key that would be sent; send nothing.
    Key,
    /// Check that the server honours idempotency keys.
    Verify,
}

/// Where results go when `GITHUB_OUTPUT` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The response body on stdout, like curl.
    Body,
    /// All outputs as one JSON object on stdout.
    Json,
}

/// Input values as given, trimmed (except verbatim inputs), empty ones dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawInputs {
    values: BTreeMap<&'static str, String>,
    /// Values of the repeatable `-H` flag.
    pub header_flags: Vec<String>,
}

impl RawInputs {
    /// The value of input `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Sets input `name` (tests and the library API).
    pub fn set(&mut self, input: &Input, value: &str) {
        let value = if input.verbatim { value } else { value.trim() };
        if value.is_empty() {
            self.values.remove(input.name);
        } else {
            self.values.insert(input.name, value.to_owned());
        }
    }
}

/// A parsed invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Send, or only print the key.
    pub action: Action,
    /// The inputs.
    pub raw: RawInputs,
    /// `--output`.
    pub output: OutputMode,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success (also --dry-run and `key`); `verify`: every required check passed
  1  the final response's status is not in accept-status; `verify`: a check failed
  2  invalid input or configuration; nothing was sent (also a body-file that
     changed during the run: its changed bytes were never sent whole)
  3  no HTTP response (transport errors until attempts or the deadline ran out,
     TLS failure, response larger than max-response-size, a response head too
     large or not valid HTTP); `verify`: the server could not be reached
  4  a re-run refused by the re-run guard (key-ttl): the key may have expired

Every option can also be set as the environment variable INPUT_<NAME>
(INPUT_KEY-SCOPE or INPUT_KEY_SCOPE); an option on the command line wins.";

fn is_bool(input: &Input) -> bool {
    input.value_name == "BOOL"
}

/// The clap command, built from the input table.
pub fn command() -> Command {
    let mut cmd = Command::new("idempotent-request")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Send one HTTP request exactly once from CI: a stable Idempotency-Key, safe retries, step outputs.")
        .after_help(EXIT_CODES)
        .subcommand(
            Command::new("key")
                .about("Print the idempotency key that would be sent; send nothing."),
        )
        .subcommand(Command::new("verify").about(
            "Check that the server honours idempotency keys: replay, lost response, changed \
             payload, concurrent duplicates (sends several requests; aim it at a staging endpoint).",
        ));
    for input in INPUTS {
        let help = match input.default {
            "" => input.help.to_owned(),
            default => format!("{} [default: {default}]", input.help),
        };
        let mut arg = Arg::new(input.name)
            .long(input.name)
            .value_name(input.value_name)
            .help(help)
            .global(true)
            // `--timeout -1` reaches the input's own validation, which says
            // what `timeout` accepts; clap would only say `-1` is unexpected.
            .allow_hyphen_values(!is_bool(input));
        if is_bool(input) {
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("header")
            .short('H')
            .long("header")
            .value_name("NAME: VALUE")
            .help("A request header; repeatable. Added to `--headers`.")
            .action(ArgAction::Append)
            .global(true),
    )
    .arg(
        Arg::new("output")
            .long("output")
            .value_name("body|json")
            .value_parser(["body", "json"])
            .help("Without GITHUB_OUTPUT: print the response body (body) or all outputs as one JSON object (json) [default: body]")
            .global(true),
    )
}

pub use crate::shared::cli_error::describe as describe_error;

/// Parses `args` (program name first) and fills unset inputs from `env`.
pub fn parse<I, T>(args: I, env: &Env) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let action = match matches.subcommand_name() {
        Some("key") => Action::Key,
        Some("verify") => Action::Verify,
        _ => Action::Send,
    };
    let matches = matches.subcommand().map_or(&matches, |(_, sub)| sub);
    let mut raw = RawInputs::default();
    for input in INPUTS {
        let from_flag = matches.get_one::<String>(input.name).cloned();
        let from_env = || {
            env_names(input.name)
                .iter()
                .find_map(|name| env.get(name).map(str::to_owned))
        };
        if let Some(value) = from_flag.or_else(from_env) {
            raw.set(input, &value);
        }
    }
    raw.header_flags = matches
        .get_many::<String>("header")
        .map(|values| values.cloned().collect())
        .unwrap_or_default();
    let output = match matches.get_one::<String>("output").map(String::as_str) {
        Some("json") => OutputMode::Json,
        _ => OutputMode::Body,
    };
    Ok(Invocation {
        action,
        raw,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Invocation {
        let env: Env = env.iter().copied().collect();
        parse(
            std::iter::once("idempotent-request").chain(args.iter().copied()),
            &env,
        )
        .unwrap()
    }

    #[test]
    fn flags_win_over_the_environment() {
        let inv = parse_with(&["--method", "put"], &[("INPUT_METHOD", "PATCH")]);
        assert_eq!(inv.raw.get("method"), Some("put"));
    }

    #[test]
    fn both_env_spellings_are_read_and_empty_is_unset() {
        let inv = parse_with(
            &[],
            &[
                ("INPUT_KEY-SCOPE", "attempt"),
                ("INPUT_KEY_SALT", " s "),
                ("INPUT_URL", ""),
            ],
        );
        assert_eq!(inv.raw.get("key-scope"), Some("attempt"));
        assert_eq!(inv.raw.get("key-salt"), Some("s"));
        assert_eq!(inv.raw.get("url"), None);
    }

    #[test]
    fn body_and_json_are_verbatim() {
        let inv = parse_with(&[], &[("INPUT_BODY", "  x \n"), ("INPUT_JSON", " {} ")]);
        assert_eq!(inv.raw.get("body"), Some("  x \n"));
        assert_eq!(inv.raw.get("json"), Some(" {} "));
    }

    #[test]
    fn bool_flags_work_bare_or_with_a_value() {
        let inv = parse_with(&["--dry-run", "--insecure=false"], &[]);
        assert_eq!(inv.raw.get("dry-run"), Some("true"));
        assert_eq!(inv.raw.get("insecure"), Some("false"));
    }

    #[test]
    fn key_subcommand_takes_the_same_flags() {
        let inv = parse_with(&["key", "--url", "http://x/", "-H", "A: b"], &[]);
        assert_eq!(inv.action, Action::Key);
        assert_eq!(inv.raw.get("url"), Some("http://x/"));
        assert_eq!(inv.raw.header_flags, ["A: b"]);
    }

    #[test]
    fn output_mode() {
        assert_eq!(
            parse_with(&["--output", "json"], &[]).output,
            OutputMode::Json
        );
        assert_eq!(parse_with(&[], &[]).output, OutputMode::Body);
    }

    #[test]
    fn unknown_flags_are_errors() {
        let err = parse(["idempotent-request", "--nope"], &Env::default()).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(describe_error(&err).contains("`--nope`"));
    }

    #[test]
    fn errors_never_quote_stray_values() {
        let args = [
            "idempotent-request",
            "-H",
            "Authorization:",
            "Bearer",
            "s3cret",
        ];
        let err = parse(args, &Env::default()).unwrap_err();
        let text = describe_error(&err);
        assert!(
            !text.contains("s3cret") && !text.contains("Bearer"),
            "{text}"
        );
        assert!(text.contains("quote values"), "{text}");
        let err = parse(
            ["idempotent-request", "--output", "s3cret"],
            &Env::default(),
        )
        .unwrap_err();
        let text = describe_error(&err);
        assert!(
            text.contains("`--output`") && text.contains("body, json"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn values_may_start_with_a_hyphen() {
        let inv = parse_with(&["--timeout", "-1", "--dry-run"], &[]);
        assert_eq!(inv.raw.get("timeout"), Some("-1"));
        assert_eq!(inv.raw.get("dry-run"), Some("true"));
    }
}
