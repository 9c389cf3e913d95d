//! Stage 4, the report: [`outcome`] turns how the loop finished into
//! outputs, an exit code and messages, and writes them; [`outputs`] is the
//! `$GITHUB_OUTPUT` format, [`summary`] the step summary, [`workflow`] the
//! workflow-command encoding, [`log`] where log lines go, [`exit`] the exit
//! codes. Encoding is pure; only
//! `outcome`, `unsent` and `log` write; [`unsent`] reports the invocations
//! that send nothing (invalid input, a refused re-run, a dry run, `key`).

pub mod exit;
pub mod log;
pub mod outcome;
pub mod outputs;
pub mod summary;
pub mod unsent;
pub mod workflow;
