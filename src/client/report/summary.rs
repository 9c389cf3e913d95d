//! The Markdown table appended to `$GITHUB_STEP_SUMMARY`. Every cell is
//! escaped, because the URL, the key and the status text come from outside.

/// One run's summary.
pub struct Summary<'a> {
    /// Request method.
    pub method: &'a str,
    /// The redacted URL.
    pub url: &'a str,
    /// The idempotency key, if one was sent.
    pub key: Option<&'a str>,
    /// Attempts made.
    pub attempts: u32,
    /// Final status code, or how it failed.
    pub outcome: &'a str,
    /// Whether the server marked the response as a replay.
    pub replayed: bool,
    /// Wall time of the whole run.
    pub elapsed_ms: u128,
    /// On a re-run: one line per earlier attempt of this job.
    pub earlier_attempts: &'a [String],
}

/// Renders the summary as a Markdown section.
pub fn render(summary: &Summary<'_>) -> String {
    let rows = [
        ("Method", escape(summary.method)),
        ("URL", escape(summary.url)),
        ("Idempotency key", escape(summary.key.unwrap_or("(none)"))),
        ("Attempts", summary.attempts.to_string()),
        ("Final status", escape(summary.outcome)),
        ("Replayed", summary.replayed.to_string()),
        ("Elapsed", format!("{} ms", summary.elapsed_ms)),
    ];
    let mut out = String::from("### idempotent-request\n\n| | |\n|---|---|\n");
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }
    if !summary.earlier_attempts.is_empty() {
        out.push_str("\nThis is a re-run. Earlier attempts of this job:\n\n");
        for line in summary.earlier_attempts {
            out.push_str(&format!("- {}\n", escape(line)));
        }
    }
    out.push('\n');
    out
}

/// Escapes text for a table cell: Markdown and HTML punctuation become
/// numeric character references, line breaks become spaces.
pub fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' => " ".to_owned(),
            c if c.is_control() => "\u{fffd}".to_owned(),
            '&' | '<' | '>' | '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!'
            | '~' | '"' | '\'' | '{' | '}' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table_or_inject_markup() {
        let hostile = "a|b\n<script>x</script> [l](http://e) `c`";
        let escaped = escape(hostile);
        for forbidden in ['|', '\n', '<', '>', '[', ']', '(', ')', '`'] {
            assert!(!escaped.contains(forbidden), "{forbidden:?} in {escaped}");
        }
    }

    #[test]
    fn renders_every_row() {
        let text = render(&Summary {
            method: "POST",
            url: "https://api.example/deploy",
            key: Some("k-1"),
            attempts: 3,
            outcome: "201",
            replayed: true,
            elapsed_ms: 1234,
            earlier_attempts: &["attempt 1: failure <b>".to_owned()],
        });
        assert!(text.contains("- attempt 1: failure &#60;b&#62;"), "{text}");
        assert!(text.contains("| Method | POST |"));
        assert!(text.contains("| Idempotency key | k-1 |"));
        assert!(text.contains("| Attempts | 3 |"));
        assert!(text.contains("| Replayed | true |"));
        assert!(text.contains("| Elapsed | 1234 ms |"));
    }
}
