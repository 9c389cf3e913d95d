//! The process exit codes, in one place (documented in the README and in
//! `--help`).

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The response was accepted (also `dry-run` and `key`).
    Success = 0,
    /// A final response whose status is not accepted.
    Rejected = 1,
    /// Invalid input or configuration; nothing was sent.
    Usage = 2,
    /// No HTTP response at all.
    NoResponse = 3,
    /// The re-run guard refused to send: the key may have expired on the server.
    RerunRefused = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}
