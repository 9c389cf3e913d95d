//! `idempotent-request`, the client: a straight pipeline with a pure core
//! and I/O at the edges.
//!
//! ```text
//! argv + INPUT_* ─input─▶ Config ─key─▶ Prepared ─send─▶ Finished ─report─▶ outputs, log, summary, exit code
//! ```
//!
//! Each stage is a folder, in the order data flows: [`input`] (the input
//! table, flags and `INPUT_*`, validation into a typed config), [`key`] (CI
//! identity, fingerprint, derivation, the request every attempt sends),
//! [`send`] (the retry decision, backoff, redirects, the loop and the
//! transport), [`report`] (outputs, summary, workflow commands, the log,
//! exit codes). [`verify`] checks a server instead of sending once, from
//! the same config and request. [`pipeline`] is the one place that knows
//! the order of the stages.

pub mod input;
pub mod key;
pub mod pipeline;
pub mod report;
pub mod send;
pub mod verify;
