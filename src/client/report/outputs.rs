//! Step outputs: their names, their values' encoding, and the
//! `$GITHUB_OUTPUT` file format.
//!
//! Every value is written as `name<<DELIMITER`, the value, `DELIMITER`, with
//! a fresh random delimiter per value that is checked not to occur in the
//! value. The runner ends a value only at a line equal to its delimiter, so
//! a value can neither end early nor start another output (see the runner's
//! `FileCommandManager`: lines split at LF, at CRLF first on Windows).

use std::fmt::Write as _;

/// One output: its name, its type under `--output json`, and what it holds.
pub struct OutputSpec {
    /// The output's name.
    pub name: &'static str,
    /// Its JSON type under `--output json` (`$GITHUB_OUTPUT` values are
    /// always strings: that is the platform's format).
    pub json: JsonType,
    /// Whether `dotenv-file` carries it: only values this program writes
    /// itself, always one line (numbers, booleans, the key, the trace-id).
    pub dotenv: bool,
    /// What it holds, for `action.yml` and the README.
    pub help: &'static str,
}

/// The JSON type of an output under `--output json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// A string.
    String,
    /// A whole number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object (the response headers).
    Object,
}

impl JsonType {
    /// The name the README's outputs table uses.
    pub fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
        }
    }

    /// `text` as a value of this type; text that is not one (which this
    /// program never writes) stays a string rather than being lost.
    fn value(self, text: &str) -> serde_json::Value {
        let parsed = match self {
            JsonType::String => None,
            JsonType::Number => text.parse::<u64>().ok().map(serde_json::Value::from),
            JsonType::Boolean => text.parse::<bool>().ok().map(serde_json::Value::Bool),
            JsonType::Object => serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .filter(serde_json::Value::is_object),
        };
        parsed.unwrap_or_else(|| serde_json::Value::String(text.to_owned()))
    }
}

/// Every output, in the order they are written.
pub const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "status",
        json: JsonType::Number,
        dotenv: true,
        help: "Final HTTP status code.",
    },
    OutputSpec {
        name: "headers",
        json: JsonType::Object,
        dotenv: false,
        help: "Response headers as a JSON object with lower-case names; repeated headers as arrays.",
    },
    OutputSpec {
        name: "body",
        json: JsonType::String,
        dotenv: false,
        help: "Response body as text, cut at `max-output-size` on a UTF-8 boundary.",
    },
    OutputSpec {
        name: "body-truncated",
        json: JsonType::Boolean,
        dotenv: true,
        help: "`true` when `body` holds less than the whole response body.",
    },
    OutputSpec {
        name: "body-file",
        json: JsonType::String,
        dotenv: false,
        help: "Path of a file holding the whole response body, kept for later steps (under RUNNER_TEMP, which the runner empties after the job; elsewhere under TMPDIR or /tmp, yours to remove).",
    },
    OutputSpec {
        name: "idempotency-key",
        json: JsonType::String,
        dotenv: true,
        help: "The key that was sent (empty when none was).",
    },
    OutputSpec {
        name: "trace-id",
        json: JsonType::String,
        dotenv: true,
        help: "Trace-id of the `traceparent` every attempt sent (derived from the key; empty when none was sent).",
    },
    OutputSpec {
        name: "attempts",
        json: JsonType::Number,
        dotenv: true,
        help: "Number of attempts made.",
    },
    OutputSpec {
        name: "replayed",
        json: JsonType::Boolean,
        dotenv: true,
        help: "`true` when the server marked the response as a replay of an earlier one.",
    },
    OutputSpec {
        name: "elapsed-ms",
        json: JsonType::Number,
        dotenv: true,
        help: "Wall time of all attempts and waits, in milliseconds.",
    },
    OutputSpec {
        name: "verify-result",
        json: JsonType::String,
        dotenv: true,
        help: "`verify` only: `passed` when every required check passed, else `failed`.",
    },
    OutputSpec {
        name: "verify-checks",
        json: JsonType::Object,
        dotenv: false,
        help: "`verify` only: each check by name (`replay`, `lost-response`, `changed-payload`, `concurrent`, `no-key`, `new-token`, `retention`) with its `verdict` (`passed`, `failed`, `not-applicable`, `info`), `required` and what was `seen`.",
    },
    OutputSpec {
        name: "error",
        json: JsonType::String,
        dotenv: false,
        help: "What went wrong, when the step failed.",
    },
];

/// Output values, in the order they were set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outputs {
    values: Vec<(&'static str, String)>,
}

impl Outputs {
    /// Sets `name` (one of [`OUTPUTS`]) to `value`.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        debug_assert!(
            OUTPUTS.iter().any(|o| o.name == name),
            "unknown output {name}"
        );
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value.into()));
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// All outputs as one JSON object (`--output json`), each value of its
    /// output's [`JsonType`].
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .iter()
            .map(|(name, text)| {
                let json = OUTPUTS
                    .iter()
                    .find(|o| o.name == name)
                    .map_or(JsonType::String, |o| o.json);
                (name.to_owned(), json.value(text))
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The variable name an output has in a dotenv file (`trace-id` →
/// `IDEMPOTENT_REQUEST_TRACE_ID`).
pub fn dotenv_name(output: &str) -> String {
    format!(
        "IDEMPOTENT_REQUEST_{}",
        output.to_ascii_uppercase().replace('-', "_")
    )
}

/// The outputs that [`OutputSpec::dotenv`] marks, as `NAME=value` lines
/// (a GitLab CI `dotenv` report). Their values are this program's own and
/// always one line; a value that is not (which cannot happen) is left out
/// rather than allowed to start another line.
pub fn render_dotenv(outputs: &Outputs) -> String {
    let mut out = String::new();
    for (name, value) in outputs.iter() {
        let carried = OUTPUTS.iter().any(|o| o.name == name && o.dotenv);
        if carried && !value.contains(['\r', '\n']) {
            let _ = writeln!(out, "{}={value}", dotenv_name(name));
        }
    }
    out
}

/// An output name the file format cannot carry safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("output name {0:?} is empty or contains CR, LF, `=` or `<<`")]
pub struct BadOutputName(pub String);

/// Renders `outputs` in the `$GITHUB_OUTPUT` heredoc format. `delimiter`
/// yields candidate delimiters; one found inside its value is discarded.
pub fn render(
    outputs: &Outputs,
    mut delimiter: impl FnMut() -> String,
) -> Result<String, BadOutputName> {
    let mut out = String::new();
    for (name, value) in outputs.iter() {
        if name.is_empty() || name.contains(['\r', '\n', '=']) || name.contains("<<") {
            return Err(BadOutputName(name.to_owned()));
        }
        let delim = loop {
            let candidate = delimiter();
            if !candidate.is_empty() && !value.contains(&candidate) {
                break candidate;
            }
        };
        let _ = write!(out, "{name}<<{delim}\n{value}\n{delim}\n");
    }
    Ok(out)
}

/// A fresh unguessable delimiter.
pub fn random_delimiter() -> String {
    format!("ghadelimiter_{}", uuid::Uuid::new_v4())
}

/// Reads an output file the way the runner does on Linux and macOS; used by
/// the tests as the runner's stand-in. Returns `None` where the runner
/// would fail the step (malformed line, missing delimiter).
pub fn parse_like_runner(text: &str) -> Option<Vec<(String, String)>> {
    let mut outputs = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(raw) = lines.next() {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                outputs.push((line[..e].to_owned(), line[e + 1..].to_owned()));
            }
            (_, Some(h)) => {
                let (name, delim) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delim.is_empty() {
                    return None;
                }
                let mut value = String::new();
                loop {
                    let next = lines.next()?;
                    if next.strip_suffix('\n').unwrap_or(next) == delim {
                        break;
                    }
                    value.push_str(next);
                }
                // The newline before the delimiter line belongs to the format.
                if value.ends_with('\n') {
                    value.pop();
                }
                outputs.push((name.to_owned(), value));
            }
            _ => return None,
        }
    }
    Some(outputs)
}

/// The `body` output: `head` (the first bytes of a `total`-byte body) as
/// text, cut to at most `max` bytes on a UTF-8 boundary. Returns the text
/// and whether it holds less than the whole body.
pub fn body_text(head: &[u8], total: u64, max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(head);
    if total <= max as u64 && text.len() <= max {
        return (text.into_owned(), total > head.len() as u64);
    }
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (text[..cut].to_owned(), true)
}

/// The `headers` output: a JSON object with lower-case names in first-seen
/// order; a repeated header becomes an array of its values.
pub fn headers_json<'a>(headers: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value = serde_json::Value::String(value);
        match map.get_mut(name) {
            None => {
                map.insert(name.to_owned(), value);
            }
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, value]);
            }
        }
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outputs_with_body(body: &str) -> Outputs {
        let mut outputs = Outputs::default();
        outputs.set("status", "200");
        outputs.set("body", body);
        outputs.set("replayed", "false");
        outputs
    }

    fn round_trip(outputs: &Outputs) -> Vec<(String, String)> {
        let text = render(outputs, random_delimiter).unwrap();
        parse_like_runner(&text).expect("the runner accepts the file")
    }

    fn expected(outputs: &Outputs) -> Vec<(String, String)> {
        outputs
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn hostile_bodies_cannot_add_or_change_outputs() {
        let guessed = "ghadelimiter_00000000-0000-0000-0000-000000000000";
        let bodies = [
            "status=500\nreplayed<<EOF\ntrue\nEOF".to_owned(),
            format!("x\n{guessed}\nstatus=500\n{guessed}"),
            "ghadelimiter_\nghadelimiter_".to_owned(),
            "\r\n\r\nstatus<<X\r\n1\r\nX\r\n".to_owned(),
            "a".repeat(300_000),
            "\n\n".to_owned(),
            String::new(),
            "trailing newline\n".to_owned(),
        ];
        for body in bodies {
            let outputs = outputs_with_body(&body);
            assert_eq!(
                round_trip(&outputs),
                expected(&outputs),
                "body {:.60?}",
                body
            );
        }
    }

    #[test]
    fn a_delimiter_found_in_the_value_is_regenerated() {
        let outputs = outputs_with_body("contains D1\nD1\n");
        let mut candidates = ["D1".to_owned(), "D2".to_owned()].into_iter().cycle();
        let text = render(&outputs, || candidates.next().unwrap()).unwrap();
        assert!(text.contains("body<<D2\n"));
        assert_eq!(parse_like_runner(&text).unwrap(), expected(&outputs));
    }

    #[test]
    fn names_with_line_breaks_are_rejected() {
        let outputs = Outputs {
            values: vec![("bad\nname", "v".to_owned())],
        };
        assert!(render(&outputs, random_delimiter).is_err());
    }

    proptest! {
        #[test]
        fn any_value_round_trips(body in "(?s).{0,400}", lines in proptest::collection::vec("[a-z=<\r\n]{0,12}", 0..8)) {
            let mut outputs = outputs_with_body(&body);
            outputs.set("error", lines.join("\n"));
            prop_assert_eq!(round_trip(&outputs), expected(&outputs));
        }
    }

    #[test]
    fn body_text_cuts_on_a_char_boundary() {
        let body = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(body_text(body, 6, 10), ("aé€".to_owned(), false));
        assert_eq!(body_text(body, 6, 5), ("aé".to_owned(), true));
        assert_eq!(body_text(body, 6, 2), ("a".to_owned(), true));
        assert_eq!(body_text(&body[..3], 6, 3), ("aé".to_owned(), true));
    }

    #[test]
    fn body_text_replaces_invalid_utf8() {
        let (text, truncated) = body_text(b"ok\xff", 3, 100);
        assert_eq!(text, "ok\u{fffd}");
        assert!(!truncated);
    }

    #[test]
    fn headers_json_groups_repeats() {
        let json = headers_json([
            ("content-type", "text/plain".to_owned()),
            ("set-cookie", "a=1".to_owned()),
            ("set-cookie", "b=2".to_owned()),
            ("set-cookie", "c=3".to_owned()),
        ]);
        assert_eq!(
            json,
            r#"{"content-type":"text/plain","set-cookie":["a=1","b=2","c=3"]}"#
        );
    }

    #[test]
    fn dotenv_carries_only_one_line_values_of_its_own() {
        let mut outputs = outputs_with_body("line\nbreak ##[x]");
        outputs.set("idempotency-key", "k-1");
        outputs.set("error", "server said\nthis");
        assert_eq!(
            render_dotenv(&outputs),
            "IDEMPOTENT_REQUEST_STATUS=200\nIDEMPOTENT_REQUEST_REPLAYED=false\nIDEMPOTENT_REQUEST_IDEMPOTENCY_KEY=k-1\n"
        );
    }

    #[test]
    fn json_mode_has_the_same_names_with_typed_values() {
        let mut outputs = outputs_with_body("{\"id\":1}");
        outputs.set("headers", r#"{"date":"x","set-cookie":["a","b"]}"#);
        outputs.set("attempts", "2");
        outputs.set("idempotency-key", "");
        assert_eq!(
            outputs.to_json(),
            r#"{"status":200,"body":"{\"id\":1}","replayed":false,"headers":{"date":"x","set-cookie":["a","b"]},"attempts":2,"idempotency-key":""}"#
        );
    }
}
