//! Stage 2, config → the request every attempt sends: [`provider`] reads
//! the CI system's attempt-independent identity, [`fingerprint`] hashes the
//! request, [`mod@derive`] turns both into the idempotency key (derivation v1),
//! and [`prepare`] assembles the [`prepare::Prepared`] request. Pure, except
//! that a `body-file` is hashed from disk.

pub mod derive;
pub mod fingerprint;
pub mod prepare;
pub mod provider;
pub mod trace;
