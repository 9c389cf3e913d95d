//! idempotent-request: send one HTTP request exactly once from CI.
//!
//! The client is a straight pipeline with a pure core and I/O at the edges:
//! [`cli`] (raw inputs) → [`config`] (validated) → [`prepare`] (key and
//! fingerprint) → [`retry_loop`] ([`retry`] decides, [`transport`] acts) →
//! [`report`] (outputs, logs, summary). [`app`] wires the stages together.
//! See `docs/architecture.md` for the map.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod backoff;
pub mod body;
pub mod cli;
pub mod config;
pub mod env;
pub mod exit;
pub mod fingerprint;
pub mod framing;
pub mod github;
pub mod headers;
pub mod inputs;
pub mod json;
pub mod key;
pub mod log;
pub mod outputs;
pub mod prepare;
pub mod provider;
pub mod redact;
pub mod redirect;
pub mod report;
pub mod retry;
pub mod retry_after;
pub mod retry_loop;
pub mod status;
pub mod summary;
pub mod transport;
pub mod units;
pub mod workflow;

#[cfg(feature = "gateway")]
pub mod gateway;
