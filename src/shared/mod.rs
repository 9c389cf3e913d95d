//! Code that more than one part needs (the client, the GitHub steps, the
//! gateway). It imports none of them, so a part that uses it never reaches
//! into another part: [`framing`] (the length-prefixed SHA-256 framing of
//! the key and both fingerprints), [`units`] (durations and sizes as users
//! write them), [`http_error`] (a reqwest error in plain words, without the
//! URL), [`mod@env`] (an explicit snapshot of the process environment),
//! [`outside_text`] (text from outside the program made inert before it is
//! printed), [`redact`] (the printable form of a URL, without credentials),
//! [`traceparent`] (the W3C trace context header both halves read),
//! [`protocol`] (replay headers, the gateway's problem types, delta-seconds),
//! [`secret_names`] (which header and query names carry credentials),
//! [`cli_error`] (command-line errors that never quote a value),
//! [`regular_file`] (opening a named file to read or append to without
//! blocking on a FIFO),
//! [`bounded_body`] (a small response body read up to a limit),
//! [`jwt_claims`] (a JWT's claims read unverified, for hints and expiry),
//! [`url_text`] (a URL's host written where the text says it is, before
//! a lenient parser guesses one).

pub mod bounded_body;
pub mod cli_error;
pub mod env;
pub mod framing;
pub mod http_error;
pub mod jwt_claims;
pub mod outside_text;
pub mod protocol;
pub mod redact;
pub mod regular_file;
pub mod secret_names;
pub mod traceparent;
pub mod units;
pub mod url_text;
