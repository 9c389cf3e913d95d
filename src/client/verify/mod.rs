//! `idempotent-request verify`: does the server honour idempotency keys?
//! The same inputs and request as a normal call, then a fixed set of checks
//! instead of the retry loop:
//!
//! ```text
//! Config ─key─▶ Prepared ─probe─▶ Observations ─judge─▶ Findings ─report─▶ table, outputs, summary, exit code
//! ```
//!
//! [`checks`] is the table of checks, [`probe`] sends their requests (the
//! only I/O), [`judge`] turns what was seen into verdicts (pure), and
//! [`report`] writes them. The order is in [`crate::client::pipeline`].

pub mod checks;
pub mod judge;
pub mod probe;
pub mod report;
