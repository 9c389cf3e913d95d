//! The integration tests: one binary, one module per file, each named after
//! the part it exercises (the tree is described in `docs/architecture.md`).
//! They run the real binaries against servers started on 127.0.0.1.

mod support;

mod action_install;
mod action_metadata;
mod client_inputs;
mod client_large_body;
mod client_providers;
mod client_reruns;
mod client_retries;
mod client_security;
mod client_verify;
mod docs_drift;
mod gateway;
mod gateway_forwarding;
mod gateway_identity;
mod gateway_limits;
mod gateway_postgres;
mod gateway_process;
mod github;
mod gitlab_template;
mod layout;
mod store_contract;
