//! Code that more than one part needs (the client, the GitHub steps, the
//! gateway). It imports none of them, so a part that uses it never reaches
//! into another part: [`framing`] (the length-prefixed SHA-256 framing of
//! the key and both fingerprints), [`units`] (durations and sizes as users
//! write them), [`http_error`] (a reqwest error in plain words, without the
//! URL), [`mod@env`] (an explicit snapshot of the process environment).

pub mod env;
pub mod framing;
pub mod http_error;
pub mod units;
