//! A GitHub OIDC token for `oidc-audience`, sent as the request's
//! `Authorization: Bearer`. The runner exposes the token service as
//! `ACTIONS_ID_TOKEN_REQUEST_URL` (with its own bearer,
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`) only to jobs granted
//! `permissions: id-token: write`. The token is fetched after the key is
//! derived, so it never feeds the key. [`Renewer`] fetches a fresh one
//! before a retry when the current one is about to expire.

use crate::shared::bounded_body::read_at_most;
use crate::shared::env::Env;
use std::time::{Duration, SystemTime};

/// The most of a token service's answer that is read (a GitHub OIDC token
/// is 1–2 KiB).
const MAX_TOKEN_RESPONSE: u64 = 64 << 10;

const PERMISSION_HINT: &str = "add `permissions: id-token: write` to the job (or the workflow)";

/// Requests a token for `audience` from the runner's token service.
pub async fn token(client: &reqwest::Client, env: &Env, audience: &str) -> Result<String, String> {
    let (Some(url), Some(bearer)) = (
        env.get("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(format!(
            "oidc-audience is set, but this job cannot request an OIDC token \
             (ACTIONS_ID_TOKEN_REQUEST_URL is not set): {PERMISSION_HINT}"
        ));
    };
    let mut url = url::Url::parse(url)
        .map_err(|e| format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let response = client
        .get(url)
        .bearer_auth(bearer)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("the OIDC token request failed: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "the OIDC token service answered HTTP {}; if the job lacks it, {PERMISSION_HINT}",
            status.as_u16()
        ));
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        value: String,
    }
    // A token is a few KiB; a service that sends without end is cut off.
    let bytes = read_at_most(response, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|e| format!("the OIDC token response: {e}"))?;
    let body: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|_| "the OIDC token service did not answer with a token".to_owned())?;
    // A JWT is visible ASCII; anything else could not be sent as a header
    // value (or would split it).
    if body.value.is_empty() || !body.value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the OIDC token service answered with an unusable token".to_owned());
    }
    Ok(body.value)
}

/// A token with less time than this left is replaced before a retry. The
/// server checks the token when the request arrives, so this covers the
/// trip and a modest clock skew; a token with more left is sent again,
/// unchanged, so a server that tells callers apart by the header's value
/// still sees one caller across the retries.
pub const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// When `token` expires, from its `exp` claim, read without verifying the
/// signature: the client holds the token it was given and only needs to
/// know when to ask for another. `None` when the token is not a JWT whose
/// payload has a numeric `exp`.
pub fn expires_at(token: &str) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: f64,
    }
    let exp = crate::shared::jwt_claims::unverified::<Claims>(token)?.exp;
    if !exp.is_finite() || exp < 0.0 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}

/// Whether a token that expires at `expires_at` should be replaced at
/// `now`. A token whose expiry cannot be read is kept: nothing says it is
/// about to lapse, and replacing it would change the caller's header.
pub fn due(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_some_and(|at| at.duration_since(now).unwrap_or_default() < RENEW_BEFORE)
}

/// What [`Renewer::renew_if_due`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The current token has time left (or its expiry is unknown): send it.
    Kept,
    /// A fresh token, to send instead.
    Renewed(String),
    /// The token is about to expire and no fresh one came; `expired` says
    /// whether the current one has lapsed already (then sending it is
    /// pointless), `reason` why the fetch failed.
    Failed {
        /// The current token's `exp` has passed.
        expired: bool,
        /// Why no fresh token came (never a token or a URL's secret).
        reason: String,
    },
}

/// Asks the runner's token service for tokens for one audience.
pub struct Minter<'a> {
    client: reqwest::Client,
    env: &'a Env,
    audience: String,
}

impl<'a> Minter<'a> {
    /// For `audience`, through `client`.
    pub fn new(client: reqwest::Client, env: &'a Env, audience: String) -> Self {
        Self {
            client,
            env,
            audience,
        }
    }

    /// A token minted now (the service mints a new one for every request),
    /// giving up after `within`.
    pub async fn mint(&self, within: Duration) -> Result<String, String> {
        tokio::time::timeout(within, token(&self.client, self.env, &self.audience))
            .await
            .unwrap_or_else(|_| Err("the OIDC token service did not answer in time".to_owned()))
    }
}

/// Keeps the request's OIDC token fresh across the retry loop.
pub struct Renewer<'a> {
    minter: Minter<'a>,
    expires_at: Option<SystemTime>,
}

impl<'a> Renewer<'a> {
    /// For `token`, just fetched through `minter`.
    pub fn new(minter: Minter<'a>, token: &str) -> Self {
        Self {
            minter,
            expires_at: expires_at(token),
        }
    }

    /// The minter, for requests that need a token of their own.
    pub fn into_minter(self) -> Minter<'a> {
        self.minter
    }

    /// When the current token is [`due`] at `now`, fetches a fresh one,
    /// giving up after `within`.
    pub async fn renew_if_due(&mut self, now: SystemTime, within: Duration) -> Renewal {
        if !due(self.expires_at, now) {
            return Renewal::Kept;
        }
        let fetched = self.minter.mint(within).await;
        match fetched {
            Ok(token) => {
                self.expires_at = expires_at(&token);
                Renewal::Renewed(token)
            }
            Err(reason) => Renewal::Failed {
                expired: self.expires_at.is_some_and(|at| at <= now),
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.signature", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_expiry_is_read_from_the_payloads_exp() {
        assert_eq!(
            expires_at(&jwt(r#"{"sub":"x","exp":1700000000}"#)),
            Some(at(1_700_000_000))
        );
        assert_eq!(
            expires_at(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(at(1_700_000_000) + Duration::from_millis(500))
        );
    }

    #[test]
    fn a_token_without_a_readable_expiry_has_none() {
        for token in [
            "opaque-token".to_owned(),
            "a.!!!.c".to_owned(),
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":-1}"#),
            jwt(r#"{"exp":1e300}"#),
            jwt("not json"),
        ] {
            assert_eq!(expires_at(&token), None, "{token}");
        }
    }

    #[test]
    fn a_token_is_due_within_a_minute_of_its_expiry_and_after_it() {
        let now = at(1_000_000);
        assert!(!due(Some(now + Duration::from_secs(61)), now));
        assert!(due(Some(now + Duration::from_secs(59)), now));
        assert!(due(Some(now - Duration::from_secs(5)), now));
        assert!(!due(None, now), "an unknown expiry keeps the token");
    }
}
