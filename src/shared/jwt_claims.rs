//! A JWT's claims read without verifying anything: for a holder that only
//! needs to know when its own token lapses (the client's OIDC renewal), or
//! for a hint that decides nothing (the gateway's warning about tokens
//! minted per job attempt). Never for deciding who a caller is: that takes
//! a verified signature (`gateway::jwt`).

use base64::Engine as _;
use serde::de::DeserializeOwned;

/// The payload (the second of the token's dot-separated parts), base64url
/// decoded and read as `T`; `None` when it is not one.
pub fn unverified<T: DeserializeOwned>(token: &str) -> Option<T> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Exp {
        exp: u64,
    }

    #[test]
    fn the_payload_is_read_and_anything_else_is_none() {
        // {"exp":1} and {"alg":"RS256"}, base64url without padding.
        assert_eq!(
            unverified::<Exp>("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.sig"),
            Some(Exp { exp: 1 })
        );
        for token in ["", "opaque", "a.!!!.c", "a.eyJ9.c", "eyJhbGciOiJSUzI1NiJ9"] {
            assert_eq!(unverified::<Exp>(token), None, "{token}");
        }
    }
}
