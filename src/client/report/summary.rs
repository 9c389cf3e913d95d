//! The Markdown table appended to `$GITHUB_STEP_SUMMARY`.
//!
//! Text in it can come from outside (a transport error in the outcome, job
//! names from the API, the URL), and GitHub renders the summary as
//! GitHub-flavoured Markdown, which turns `<b>`, `[t](u)`, `![i](u)` and bare
//! `https://…`, `www.…` and e-mail addresses into markup and links. So every
//! such value is written as a code span ([`code`]): inside one, Markdown,
//! HTML and autolinks are not interpreted. Pipes are escaped for the table,
//! line breaks become spaces and other control characters U+FFFD.

/// One run's summary.
pub struct Summary<'a> {
    /// Request method.
    pub method: &'a str,
    /// The redacted URL.
    pub url: &'a str,
    /// The idempotency key, if one was sent.
    pub key: Option<&'a str>,
    /// The trace-id sent, if any.
    pub trace_id: Option<&'a str>,
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
        ("Method", cell(summary.method)),
        ("URL", cell(summary.url)),
        (
            "Idempotency key",
            summary.key.map_or_else(|| "(none)".to_owned(), cell),
        ),
        (
            "Trace id",
            summary.trace_id.map_or_else(|| "(none)".to_owned(), cell),
        ),
        ("Attempts", summary.attempts.to_string()),
        ("Final status", cell(summary.outcome)),
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
            out.push_str(&format!("- {}\n", code(line)));
        }
    }
    out.push('\n');
    out
}

/// `text` as a code span in a table cell: [`code`] with `|` escaped, which
/// the table reads as a literal pipe even inside a code span.
pub fn cell(text: &str) -> String {
    code(&text.replace('|', "\\|"))
}

/// `text` as a code span that renders literally: the fence is one backtick
/// longer than the longest run inside, the content padded with a space on
/// each side (Markdown strips one of each), line breaks made spaces, other
/// control characters U+FFFD.
pub fn code(text: &str) -> String {
    let content: String = text
        .chars()
        .map(|c| match c {
            '\r' | '\n' | '\u{2028}' | '\u{2029}' | '\u{85}' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    let longest_run = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    format!("{fence} {content} {fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table_or_inject_markup() {
        let hostile = "a|b\n<script>x</script> [l](http://e) `c` ``d``";
        let text = cell(hostile);
        assert!(!text.contains('\n'));
        assert!(text.starts_with("``` ") && text.ends_with(" ```"), "{text}");
        assert!(text.contains("a\\|b"), "{text}");
        assert_eq!(code("a|b"), "` a|b `");
    }

    #[test]
    fn renders_every_row() {
        let text = render(&Summary {
            method: "POST",
            url: "https://api.example/deploy",
            key: Some("k-1"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            attempts: 3,
            outcome: "201",
            replayed: true,
            elapsed_ms: 1234,
            earlier_attempts: &["attempt 1: failure <b>".to_owned()],
        });
        assert!(text.contains("- ` attempt 1: failure <b> `"), "{text}");
        assert!(text.contains("| Method | ` POST ` |"));
        assert!(text.contains("| Idempotency key | ` k-1 ` |"));
        assert!(text.contains("| Trace id | ` 4bf92f3577b34da6a3ce929d0e0e4736 ` |"));
        assert!(text.contains("| Attempts | 3 |"));
        assert!(text.contains("| Replayed | true |"));
        assert!(text.contains("| Elapsed | 1234 ms |"));
    }
}
