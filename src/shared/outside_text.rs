//! Text that did not come from this program (a server's error description,
//! HTTP/2 GOAWAY debug data, a TLS certificate's names, a GitHub API field)
//! made inert before it is printed.
//!
//! The GitHub Actions runner reads every line of a step's stdout and stderr
//! (split at LF, CR and CRLF) for workflow commands in two forms
//! (`ActionCommand.cs` in actions/runner): `::name …::data` at the start of
//! a line after leading whitespace is trimmed, and the legacy `##[name …]data`
//! anywhere in a line. [`one_line`] turns any text into one line that
//! contains neither: line breaks and other control characters become
//! visible escapes, `##[` becomes `##\[`, and a leading `::` becomes `\::`.
//! It is applied where outside text enters a message and again by the
//! client's log to every plain line it writes.

/// Characters .NET's `string.TrimStart()` removes (`char.IsWhiteSpace`):
/// the runner trims them before looking for `::`.
pub fn is_dotnet_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{d}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Whether `c` could end a line for some reader of the log: CR and LF (what
/// the runner splits on), and VT, FF, NEL and the Unicode line and paragraph
/// separators, which other viewers treat as line ends.
fn breaks_lines(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// `text` as one inert line (see the module documentation). Printable text
/// without `##[` or a leading `::` is returned unchanged.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || breaks_lines(c) => {
                out.push_str(&c.escape_unicode().to_string());
            }
            '[' if out.ends_with("##") => out.push_str("\\["),
            c => out.push(c),
        }
    }
    let start = out.len() - out.trim_start_matches(is_dotnet_whitespace).len();
    if out[start..].starts_with("::") {
        out.insert(start, '\\');
    }
    out
}

/// The runner's reading of one line: the command's name when the line is a
/// workflow command in either form (any name counts, registered or not).
/// The tests' stand-in for the runner.
pub fn command_like_runner(line: &str) -> Option<String> {
    let trimmed = line.trim_start_matches(is_dotnet_whitespace);
    if let Some(rest) = trimmed.strip_prefix("::")
        && let Some(end) = rest.find("::")
    {
        return Some(rest[..end].split(' ').next().unwrap_or("").to_owned());
    }
    let start = line.find("##[")?;
    let info = &line[start + 3..];
    let end = info.find(']')?;
    Some(info[..end].split(' ').next().unwrap_or("").to_owned())
}

/// Splits output into lines the way the runner's `StreamReader.ReadLine`
/// does (at CRLF, CR and LF). The tests' stand-in for the runner.
pub fn lines_like_runner(text: &str) -> Vec<&str> {
    text.split("\r\n")
        .flat_map(|part| part.split(['\r', '\n']))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_unchanged() {
        for text in [
            "connection refused",
            "https://[::1]:8080/x",
            "a ## b [c] d",
            "",
        ] {
            assert_eq!(one_line(text), text);
        }
    }

    #[test]
    fn commands_and_line_breaks_are_made_inert() {
        assert_eq!(one_line("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(
            one_line("x ##[set-output name=a]b"),
            "x ##\\[set-output name=a]b"
        );
        assert_eq!(one_line("::error::boom"), "\\::error::boom");
        assert_eq!(one_line(" \u{a0}::warning::x"), " \u{a0}\\::warning::x");
        assert_eq!(one_line("a\u{2028}b\u{85}c"), "a\\u{2028}b\\u{85}c");
        assert_eq!(one_line("###["), "###\\[");
    }

    proptest! {
        #[test]
        fn no_text_forms_a_command_or_a_second_line(text in any::<String>(), prefix in "[a-z0-9/ ]{0,12}: ") {
            // Alone, and after a prefix like this program's own
            // (`attempt 1/5: `).
            for line in [one_line(&text), format!("{prefix}{}", one_line(&text))] {
                prop_assert_eq!(lines_like_runner(&line).len(), 1);
                prop_assert!(!line.chars().any(breaks_lines));
                prop_assert_eq!(command_like_runner(&line), None, "{:?}", line);
            }
        }

        #[test]
        fn hostile_shapes_never_survive(parts in proptest::collection::vec(prop_oneof![
            Just("::".to_owned()), Just("##[".to_owned()), Just("#".to_owned()), Just("[".to_owned()),
            Just("]".to_owned()), Just("\n".to_owned()), Just("\r".to_owned()), Just(" ".to_owned()),
            Just("\u{a0}".to_owned()), Just("error".to_owned()), "[a-z=,%]{0,4}".prop_map(|s| s),
        ], 0..24)) {
            let line = one_line(&parts.concat());
            prop_assert_eq!(lines_like_runner(&line).len(), 1);
            prop_assert_eq!(command_like_runner(&line), None, "{:?}", line);
        }
    }
}
