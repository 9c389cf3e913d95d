//! The log: plain lines, warnings, errors, masks and text from outside.
//!
//! Under GitHub Actions everything goes to stdout, in order, as workflow
//! commands where needed: the runner does not keep the order of lines across
//! stdout and stderr, so a `::stop-commands::` guard only protects text on
//! its own stream. Elsewhere the log goes to stderr, leaving stdout for the
//! response. No header value, body, token or client key is ever passed here
//! except through [`Log::mask`] and [`Log::untrusted`].

use crate::client::report::workflow;
use crate::shared::outside_text::one_line;
use std::io::Write;

/// Where and how log lines are written.
pub struct Log {
    out: Box<dyn Write + Send>,
    github: bool,
}

impl Log {
    /// A log for this process: stdout under GitHub Actions, else stderr.
    pub fn for_process(github: bool) -> Self {
        let out: Box<dyn Write + Send> = if github {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::io::stderr())
        };
        Self { out, github }
    }

    /// A log on stderr, with workflow commands under GitHub Actions (the
    /// runner reads them from stderr too).
    pub fn to_stderr(github: bool) -> Self {
        Self {
            out: Box::new(std::io::stderr()),
            github,
        }
    }

    /// A log into any writer (tests).
    pub fn to_writer(out: Box<dyn Write + Send>, github: bool) -> Self {
        Self { out, github }
    }

    /// Whether workflow commands are emitted.
    pub fn is_github(&self) -> bool {
        self.github
    }

    /// A plain line, made one inert line first
    /// ([`crate::shared::outside_text::one_line`]): parts of it may have come
    /// from outside (a transport error, an API field), and no such part may
    /// start a new line or be read as a workflow command.
    pub fn info(&mut self, line: &str) {
        self.write(&one_line(line));
    }

    /// A warning (an annotation under GitHub Actions).
    pub fn warning(&mut self, title: &str, message: &str) {
        self.annotation("warning", title, message);
    }

    /// An error (an annotation under GitHub Actions).
    pub fn error(&mut self, title: &str, message: &str) {
        self.annotation("error", title, message);
    }

    /// `::level title=…::message` under GitHub Actions; elsewhere one line,
    /// `level: title: message`, with the title's first letter in lower case
    /// (`error: invalid input …`).
    fn annotation(&mut self, level: &str, title: &str, message: &str) {
        if self.github {
            self.write(&workflow::annotation(level, title, message));
        } else {
            let mut chars = title.chars();
            let title: String = chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect())
                .unwrap_or_default();
            self.write(&one_line(&format!("{level}: {title}: {message}")));
        }
    }

    /// Registers `secret` with the runner so it is masked in every later log
    /// line. Does nothing outside GitHub Actions.
    pub fn mask(&mut self, secret: &str) {
        if self.github {
            for line in workflow::add_mask(secret) {
                self.write(&line);
            }
        }
    }

    /// Prints `text` that came from outside (a server's error body) after
    /// `label`: control characters are made visible, and under GitHub
    /// Actions command processing is stopped around it with a fresh token.
    pub fn untrusted(&mut self, label: &str, text: &str) {
        let shown: String = text
            .chars()
            .map(|c| match c {
                '\n' | '\t' => c.to_string(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect();
        self.write(label);
        if self.github {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let (stop, resume) = workflow::stop_commands(&token);
            self.write(&stop);
            self.write(&shown);
            self.write(&resume);
        } else {
            self.write(&shown);
        }
    }

    fn write(&mut self, line: &str) {
        // A closed log stream must not turn a finished request into a crash.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shared::outside_text::{command_like_runner, lines_like_runner};
    use std::sync::{Arc, Mutex};

    /// A log that records into a shared buffer.
    pub(crate) fn capture(github: bool) -> (Log, Arc<Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        (
            Log::to_writer(Box::new(Shared(buffer.clone())), github),
            buffer,
        )
    }

    fn text(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn untrusted_text_is_fenced_by_stop_commands() {
        let (mut log, buffer) = capture(true);
        log.untrusted("server said:", "::set-output name=x::y\n::error::boom");
        let out = text(&buffer);
        let lines: Vec<&str> = out.lines().collect();
        let token = lines[1]
            .strip_prefix("::stop-commands::")
            .expect("stop first");
        assert_eq!(lines.last().unwrap(), &format!("::{token}::"));
        assert_eq!(token.len(), 32);
    }

    #[test]
    fn control_characters_are_made_visible() {
        let (mut log, buffer) = capture(false);
        log.untrusted("body:", "\u{1b}[31mred");
        assert!(text(&buffer).contains("\\u{1b}[31mred"));
    }

    #[test]
    fn plain_lines_cannot_start_a_command() {
        let (mut log, buffer) = capture(true);
        log.info("::error::not really");
        log.info("  ::warning::indented");
        log.info("attempt 1/5: ##[set-output name=a]b");
        log.info("two\n::error::lines");
        let out = text(&buffer);
        let lines = lines_like_runner(&out);
        assert_eq!(lines.len(), 5, "{out}");
        for line in lines {
            assert_eq!(command_like_runner(line), None, "{line}");
        }
    }

    proptest::proptest! {
        /// Whatever text reaches the log, the runner reads exactly the
        /// commands this program meant: none from `info`, one `error` or
        /// `warning` from an annotation, nothing from outside text.
        #[test]
        fn the_runner_reads_only_the_intended_commands(text in proptest::prelude::any::<String>()) {
            let (mut log, buffer) = capture(true);
            log.info(&text);
            log.info(&format!("attempt 1/5: {text}; retrying in 1s (backoff)"));
            log.error(&text, &text);
            log.warning("Title", &text);
            let out = self::text(&buffer);
            let commands: Vec<String> = lines_like_runner(&out)
                .into_iter()
                .filter_map(command_like_runner)
                .collect();
            proptest::prop_assert_eq!(commands, ["error", "warning"]);
        }
    }

    #[test]
    fn masks_only_under_github() {
        let (mut log, buffer) = capture(false);
        log.mask("s3cret");
        assert_eq!(text(&buffer), "");
        let (mut log, buffer) = capture(true);
        log.mask("s3cret");
        assert_eq!(text(&buffer), "::add-mask::s3cret\n");
    }
}
