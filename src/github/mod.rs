//! GitHub platform integration, used only under GitHub Actions:
//! [`guard`] (refuse a re-run whose key may have expired on the server),
//! [`history`] (which earlier attempts of this job exist and how they
//! ended), [`api`] (the REST calls, through octocrab on the client's own
//! reqwest client), [`oidc`] (a GitHub OIDC token as the request's bearer).
//! First attempts make no API call.

pub mod api;
pub mod guard;
pub mod history;
pub mod oidc;
pub mod rerun;
