//! idempotent-request: send one HTTP request exactly once from CI, and
//! `idempotency-gateway`, the proxy that gives any API Idempotency-Key
//! semantics.
//!
//! The tree is the map (`docs/architecture.md` has the details):
//! - [`client`]: the `idempotent-request` pipeline, one folder per stage in
//!   the order data flows: [`client::input`] → [`client::key`] →
//!   [`client::send`] → [`client::report`], wired by
//!   [`client::pipeline`].
//! - [`github`]: the GitHub platform steps the client runs under GitHub
//!   Actions (re-run guard, earlier attempts, OIDC).
//! - `gateway` (feature `gateway`): the reverse proxy and its stores.
//! - [`shared`]: the few pieces more than one part needs; it imports none
//!   of them. The gateway and the client never import each other
//!   (`tests/layout.rs` holds the tree to that).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod github;
pub mod shared;

#[cfg(feature = "gateway")]
pub mod gateway;
