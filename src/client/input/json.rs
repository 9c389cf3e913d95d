//! The `json` input: a JSON or YAML document turned into the JSON bytes that
//! are sent.
//!
//! Valid JSON is sent exactly as written (so the user's formatting, key
//! order and number spelling reach the server, and the key is hashed over
//! what is sent). Anything else is read as one YAML document (through
//! `serde-saphyr`, a maintained pure-Rust YAML reader) and serialised as
//! compact JSON, keeping the document's key order.
//!
//! A plain scalar whose type YAML's two versions disagree on is refused
//! rather than guessed: `yes`, `no`, `on`, `off`, `y`, `n` (booleans in
//! YAML 1.1, text in 1.2: `country: no` would otherwise send `false`) and
//! numbers with a leading zero (`0123`: octal in 1.1, a number in 1.2, an
//! id or a postcode to whoever wrote it). The document is read both ways;
//! where the two readings differ, the user says which was meant.

/// Returns the JSON bytes for `document`, or a message saying why it is
/// neither JSON nor YAML. The message gives positions and kinds of error,
/// never the document's text: it may hold a templated secret.
pub fn to_json_bytes(document: &str) -> Result<Vec<u8>, String> {
    let json_error = match serde_json::from_str::<serde::de::IgnoredAny>(document) {
        Ok(_) => return Ok(document.as_bytes().to_vec()),
        Err(e) => e,
    };
    let value: serde_json::Value = serde_saphyr::from_str(document).map_err(|yaml_error| {
        format!(
            "not valid JSON ({}) and not valid YAML either ({}); the text is not shown, \
             as it may hold a secret",
            describe_json(&json_error),
            describe_yaml(&yaml_error)
        )
    })?;
    if let Some(ambiguity) = ambiguity(document, &value) {
        return Err(ambiguity);
    }
    serde_json::to_vec(&value).map_err(|_| {
        "a YAML document that cannot be expressed as JSON (for example a mapping with a \
         non-string key)"
            .to_owned()
    })
}

/// Why `document`, read as `lenient` (YAML 1.1's booleans, leading zeros
/// read as numbers), means something else under YAML 1.2's rules; `None`
/// when both readings agree.
fn ambiguity(document: &str, lenient: &serde_json::Value) -> Option<String> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    // The same reader with stricter scalars cannot fail where the lenient
    // one passed; if it did, there is nothing to compare.
    let strict: serde_json::Value = serde_saphyr::from_str_with_options(document, options).ok()?;
    let mut counts = Differences::default();
    counts.add(lenient, &strict);
    let Differences {
        booleans,
        numbers,
        others,
    } = counts;
    let mut kinds = Vec::new();
    if booleans > 0 {
        kinds.push(format!(
            "{booleans} unquoted value(s) among yes, no, on, off, y and n, which YAML 1.1 reads as \
             booleans and YAML 1.2 as text: write true or false, or quote the text"
        ));
    }
    if numbers > 0 {
        kinds.push(format!(
            "{numbers} unquoted number(s) with a leading zero, such as 0123, which YAML 1.1 reads \
             as octal and YAML 1.2 as decimal: quote it to send text (an id, a postcode), or drop \
             the zeros"
        ));
    }
    if others > 0 {
        kinds.push(format!("{others} other unquoted value(s): quote them"));
    }
    (!kinds.is_empty()).then(|| {
        format!(
            "a YAML document that YAML 1.1 and 1.2 read differently: {}; the text is not shown, \
             as it may hold a secret",
            kinds.join("; and ")
        )
    })
}

/// The scalars where two readings of one document differ, by kind.
#[derive(Default)]
struct Differences {
    /// Booleans in one reading, text in the other.
    booleans: usize,
    /// Numbers in one reading, text in the other.
    numbers: usize,
    /// Any other difference (a mapping key, say).
    others: usize,
}

impl Differences {
    fn add(&mut self, lenient: &serde_json::Value, strict: &serde_json::Value) {
        use serde_json::Value;
        match (lenient, strict) {
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (a, b) in a.iter().zip(b) {
                    self.add(a, b);
                }
            }
            (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
                for ((key_a, a), (key_b, b)) in a.iter().zip(b) {
                    if key_a != key_b {
                        self.others += 1;
                    }
                    self.add(a, b);
                }
            }
            (Value::Bool(_), Value::String(_)) => self.booleans += 1,
            (Value::Number(_), Value::String(_)) => self.numbers += 1,
            (a, b) if a != b => self.others += 1,
            _ => {}
        }
    }
}

fn describe_json(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Eof => "it ends early",
        _ => "a syntax error",
    };
    format!("{kind} at line {}, column {}", error.line(), error.column())
}

fn describe_yaml(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    // The reader wraps its error in a snippet of the document (never shown
    // here) and in an alias's locations; the kind is the innermost error's.
    let mut inner = error;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = inner {
        inner = error;
    }
    let kind = match inner {
        Error::Eof { .. } => "it ends early".to_owned(),
        Error::Unexpected { expected, .. } => format!("expected {expected}"),
        Error::MultipleDocuments { .. } => "more than one document".to_owned(),
        Error::DuplicateMappingKey { .. } => "a key repeated in one mapping".to_owned(),
        Error::UnknownAnchor { .. } => "an alias to an anchor that is not defined".to_owned(),
        Error::NonFiniteFloat { .. } => {
            "a number JSON cannot hold (.inf or .nan; quote it to send text)".to_owned()
        }
        Error::Budget { .. } => "more than the YAML reader takes (its aliases expand to too \
                                 many values, or it is too large or too deeply nested)"
            .to_owned(),
        _ => "a syntax error".to_owned(),
    };
    match error.location() {
        Some(at) => format!("{kind} at line {}, column {}", at.line(), at.column()),
        None => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_sent_verbatim() {
        let doc = "{ \"b\": 1.50, \"a\": [1, 2] }";
        assert_eq!(to_json_bytes(doc).unwrap(), doc.as_bytes());
    }

    #[test]
    fn yaml_becomes_compact_json_in_document_order() {
        let doc = "ref: main\nenvironment: production\ninputs:\n  replicas: 3\n  canary: true\n";
        assert_eq!(
            String::from_utf8(to_json_bytes(doc).unwrap()).unwrap(),
            r#"{"ref":"main","environment":"production","inputs":{"replicas":3,"canary":true}}"#
        );
    }

    #[test]
    fn scalars_yaml_versions_read_differently_are_refused_unshown() {
        for (document, kind, count) in [
            ("country: no\n", "yes, no, on", "1 unquoted value"),
            (
                "a: [on, off, Yes, y]\nb: {c: N}\n",
                "yes, no, on",
                "5 unquoted value",
            ),
            ("postcode: 01234\n", "leading zero", "1 unquoted number"),
            (
                "id: 0123\nenabled: off\n",
                "leading zero",
                "1 unquoted value",
            ),
        ] {
            let err = to_json_bytes(document).unwrap_err();
            assert!(err.contains(kind), "{document}: {err}");
            assert!(err.contains(count), "{document}: {err}");
            for text in ["country", "postcode", "01234", "0123", "enabled"] {
                assert!(!err.contains(&format!("{text}:")), "{text} in {err}");
            }
        }
        // What both versions read alike is sent as before.
        let doc = "enabled: true\ncountry: \"no\"\nid: \"0123\"\nn: 0\nx: 0.5\nhex: 0x1F\nword: yesterday\n";
        assert_eq!(
            String::from_utf8(to_json_bytes(doc).unwrap()).unwrap(),
            r#"{"enabled":true,"country":"no","id":"0123","n":0,"x":0.5,"hex":31,"word":"yesterday"}"#
        );
        // JSON is JSON: no YAML rule applies to it.
        assert!(to_json_bytes("{\"country\": \"no\", \"id\": 123}").is_ok());
    }

    #[test]
    fn junk_is_an_error_that_mentions_both_formats() {
        let err = to_json_bytes("a: [unclosed").unwrap_err();
        assert!(
            err.contains("not valid JSON") && err.contains("YAML"),
            "{err}"
        );
    }

    /// Each kind of YAML error is named, wrapped or not, and none quotes
    /// the document: a key's name, an anchor's, a value.
    #[test]
    fn yaml_errors_are_named_by_kind() {
        let laughs = (1..8).fold("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n".to_owned(), |doc, n| {
            let prev = format!("*a{}", n - 1);
            format!("{doc}a{n}: &a{n} [{}]\n", vec![prev; 10].join(", "))
        });
        for (document, kind) in [
            ("token: 1\ntoken: 2\n", "a key repeated in one mapping"),
            (
                "token: *hunter2\n",
                "an alias to an anchor that is not defined",
            ),
            (laughs.as_str(), "more than the YAML reader takes"),
            ("token: .inf\n", "a number JSON cannot hold"),
            ("token: [-.Inf, .NaN]\n", "a number JSON cannot hold"),
        ] {
            let err = to_json_bytes(document).unwrap_err();
            assert!(err.contains(kind), "{kind}: {err}");
            for secret in ["token", "hunter2", "lol"] {
                assert!(!err.contains(secret), "{secret} in {err}");
            }
        }
    }

    #[test]
    fn errors_give_positions_but_never_the_text() {
        let document = "ref: main\npassword: \"s3cret\n  token: [hunter2, {\n";
        let err = to_json_bytes(document).unwrap_err();
        assert!(err.contains("line "), "{err}");
        for secret in ["s3cret", "hunter2", "password", "token"] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }
        let err = to_json_bytes("{\"password\": \"s3cret\",").unwrap_err();
        assert!(
            err.contains("line 1, column 22") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
