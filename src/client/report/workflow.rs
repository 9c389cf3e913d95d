//! Encoding of GitHub Actions workflow commands (`::name props::data`).
//!
//! The runner unescapes `%25`, `%0D`, `%0A` in data and additionally `%3A`,
//! `%2C` in properties, so escaping those is what keeps a value on one
//! command line and literal. Pure string functions; [`super::log`] prints.

/// Escapes a command's data part: `%`, CR and LF as the runner unescapes
/// them; other control characters, which it cannot carry, as visible
/// `\u{…}` escapes.
pub fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a command property's value.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// `::add-mask::` commands for `secret`: one per line (split on CR and LF),
/// because the runner masks each registered value as a whole.
pub fn add_mask(secret: &str) -> Vec<String> {
    secret
        .split(['\r', '\n'])
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("::add-mask::{}", escape_data(line)))
        .collect()
}

/// An annotation (`error` or `warning`) with a title.
pub fn annotation(level: &str, title: &str, message: &str) -> String {
    format!(
        "::{level} title={}::{}",
        escape_property(title),
        escape_data(message)
    )
}

/// The pair of lines that stop and resume command processing around text
/// that came from outside, so it cannot issue workflow commands.
pub fn stop_commands(token: &str) -> (String, String) {
    (format!("::stop-commands::{token}"), format!("::{token}::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_escaping_keeps_one_line() {
        assert_eq!(escape_data("a%b\r\nc"), "a%25b%0D%0Ac");
        assert_eq!(escape_property("t: a,b"), "t%3A a%2Cb");
    }

    #[test]
    fn masks_are_registered_per_line_on_cr_and_lf() {
        assert_eq!(
            add_mask("one\rtwo\n\nthree%0A"),
            [
                "::add-mask::one",
                "::add-mask::two",
                "::add-mask::three%250A"
            ]
        );
        assert!(add_mask("").is_empty());
    }

    #[test]
    fn annotation_escapes_title_and_message() {
        assert_eq!(
            annotation("error", "Request failed: 503", "line1\nline2"),
            "::error title=Request failed%3A 503::line1%0Aline2"
        );
    }
}
