//! The `json` input: a JSON or YAML document turned into the JSON bytes that
//! are sent.
//!
//! Valid JSON is sent exactly as written (so the user's formatting, key
//! order and number spelling reach the server, and the key is hashed over
//! what is sent). Anything else is read as one YAML document (through
//! `serde-saphyr`, a maintained pure-Rust YAML reader) and serialised as
//! compact JSON, keeping the document's key order.

/// Returns the JSON bytes for `document`, or a message saying why it is
/// neither JSON nor YAML.
pub fn to_json_bytes(document: &str) -> Result<Vec<u8>, String> {
    if serde_json::from_str::<serde::de::IgnoredAny>(document).is_ok() {
        return Ok(document.as_bytes().to_vec());
    }
    let value: serde_json::Value = serde_saphyr::from_str(document)
        .map_err(|e| format!("not valid JSON, and not valid YAML either: {e}"))?;
    serde_json::to_vec(&value).map_err(|e| format!("cannot be expressed as JSON: {e}"))
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
    fn junk_is_an_error_that_mentions_both_formats() {
        let err = to_json_bytes("a: [unclosed").unwrap_err();
        assert!(
            err.contains("not valid JSON") && err.contains("YAML"),
            "{err}"
        );
    }
}
