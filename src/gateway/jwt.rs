//! Bearer JWTs verified against a JWKS, so that a caller is who its token's
//! verified claims say (`iss` and `sub` by default), not the bytes of a
//! token that is minted afresh for every CI job attempt.
//!
//! Verification is required, not optional: a replay is answered without the
//! upstream, so an unverified claim would let anyone read another caller's
//! stored answer by writing a token with that caller's `sub`. A token is
//! accepted when its signature verifies with a key of the JWKS (RS256,
//! RS384, RS512, PS256, PS384, PS512, ES256, ES384: asymmetric algorithms
//! only; `none` and HMAC never, so a public key can never serve as an HMAC
//! secret), its `iss` and `aud` are among those configured, and `exp` (and
//! `nbf` when present) hold within the leeway. The signature work is
//! `jsonwebtoken`'s.
//!
//! The JWKS (from a URL or a file) is read at start-up, and again when a
//! token names an unknown `kid` (keys rotate; a file can be a mounted
//! secret that is replaced): the first time at once, then at most once per
//! [`REFRESH_EVERY`], so a stream of made-up `kid`s cannot turn into a
//! stream of fetches. A read that fails keeps the keys already loaded.

use super::config::{JwksSource, JwtSettings};
use crate::shared::bounded_body::read_at_most;
use crate::shared::framing::FramedHasher;
use crate::shared::regular_file::read_regular;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The shortest time between two fetches of the JWKS.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Largest JWKS document read.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// The algorithms a token may be signed with.
const ACCEPTED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why a token was not accepted (the `401` detail; never quotes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization: Bearer …`.
    #[error(
        "the request carries no bearer token (Authorization: Bearer <JWT>), which this gateway needs to tell callers apart"
    )]
    Missing,
    /// Not a JWT, or an unsupported header.
    #[error("the bearer token is not a JWT this gateway can read")]
    Malformed,
    /// `alg` is `none`, HMAC, or otherwise not accepted.
    #[error("the token's algorithm is not accepted (RS*, PS* and ES256/ES384 only)")]
    Algorithm,
    /// No key of the JWKS matches.
    #[error("the token is signed with a key this gateway does not know")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    Signature,
    /// `exp` passed (or `nbf` not reached).
    #[error("the token has expired or is not valid yet")]
    Expired,
    /// `iss` is not accepted.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` is not accepted.
    #[error("the token's audience is not accepted")]
    Audience,
    /// A claim that identifies callers is missing.
    #[error("the token lacks the claim `{0}`, which identifies callers here")]
    MissingClaim(String),
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// The `alg` the JWK declares, when it does.
    alg: Option<Algorithm>,
}

/// A verifier with its keys.
pub struct Jwt {
    settings: JwtSettings,
    http: reqwest::Client,
    keys: RwLock<Vec<Key>>,
    /// When an unknown `kid` last caused a fetch.
    refreshed: std::sync::Mutex<Option<Instant>>,
}

/// Parses a JWKS document into keys; keys of unsupported types are skipped.
fn parse(document: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter(|jwk| {
            // Public keys only: an `oct` (HMAC) key must never verify a token.
            matches!(
                jwk.algorithm,
                AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
            )
        })
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key {
                kid: jwk.common.key_id.clone(),
                key,
                alg,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS holds no RSA or EC key".to_owned());
    }
    Ok(keys)
}

impl Jwt {
    /// Loads the keys: fetches the URL or reads the file.
    pub async fn load(settings: JwtSettings, http: reqwest::Client) -> Result<Self, String> {
        let keys = fetch(&settings.jwks, &http).await?;
        Ok(Self {
            settings,
            http,
            keys: RwLock::new(keys),
            refreshed: std::sync::Mutex::new(None),
        })
    }

    /// The caller hash from a verified `Authorization` bearer token.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<[u8; 32], Rejection> {
        let token = bearer_token(authorization).ok_or(Rejection::Missing)?;
        let claims = self.verify(token).await?;
        let mut hasher = FramedHasher::default();
        hasher.field(b"jwt");
        for name in &self.settings.claims {
            let value = claims
                .get(name)
                .ok_or_else(|| Rejection::MissingClaim(name.clone()))?;
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            hasher.field(name.as_bytes()).field(text.as_bytes());
        }
        Ok(hasher.finish())
    }

    /// Verifies `token`; returns its claims.
    pub async fn verify(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Rejection::Algorithm);
        }
        let kid = header.kid.clone();
        match self.verify_with_known_keys(token, header.alg, kid.as_deref()) {
            Err(Rejection::UnknownKey) if self.take_refresh() => {
                self.refresh().await;
                self.verify_with_known_keys(token, header.alg, kid.as_deref())
            }
            result => result,
        }
    }

    fn verify_with_known_keys(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Rejection> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let candidates: Vec<&Key> = keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .filter(|key| key.alg.is_none_or(|declared| declared == alg))
            .collect();
        if candidates.is_empty() {
            return Err(Rejection::UnknownKey);
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let mut last = Rejection::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = rejection(&e),
            }
        }
        Err(last)
    }

    /// Whether this request may fetch the JWKS again; marks the fetch at
    /// once, so concurrent requests with unknown `kid`s fetch once, and a
    /// failing JWKS server is asked once per interval, not once per request.
    fn take_refresh(&self) -> bool {
        let mut refreshed = self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
        if refreshed.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return false;
        }
        *refreshed = Some(Instant::now());
        true
    }

    async fn refresh(&self) {
        match fetch(&self.settings.jwks, &self.http).await {
            Ok(fresh) => {
                let count = fresh.len();
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                tracing::info!(keys = count, "JWKS refreshed for an unknown key id");
            }
            Err(error) => tracing::warn!(%error, "JWKS refresh failed; keeping the keys we have"),
        }
    }
}

/// Reads a JWKS file on the blocking pool (a refresh runs while requests
/// wait): a regular file only, so a FIFO cannot block the read forever.
/// The token of an `Authorization: Bearer` value, if it is one.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// The longest life, from `iat` to `exp`, of a token taken to be minted per
/// job attempt or refreshed (a CI system's OIDC token lives minutes to a
/// few hours).
pub const SHORT_LIFE_SECONDS: f64 = 24.0 * 3600.0;

/// Whether `token` looks like a compact JWS (three dot-separated parts, a
/// JSON header first): a test of its shape only, costing no decoding.
pub fn has_jwt_shape(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

/// Whether `token` has the form of a JWT that lives [`SHORT_LIFE_SECONDS`]
/// or less. Read without verifying anything: only a hint for the operator
/// (see [`super::caller`]), never a decision about a caller.
pub fn is_short_lived(token: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Life {
        iat: Option<f64>,
        exp: Option<f64>,
    }
    if jsonwebtoken::decode_header(token).is_err() {
        return false;
    }
    match crate::shared::jwt_claims::unverified::<Life>(token) {
        Some(Life {
            iat: Some(iat),
            exp: Some(exp),
        }) => exp > iat && exp - iat <= SHORT_LIFE_SECONDS,
        _ => false,
    }
}

async fn read_file(path: std::path::PathBuf) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || read_regular(&path, MAX_JWKS_BYTES));
    read.await.map_err(std::io::Error::other)?
}

fn rejection(error: &jsonwebtoken::errors::Error) -> Rejection {
    use jsonwebtoken::errors::ErrorKind::*;
    match error.kind() {
        ExpiredSignature | ImmatureSignature => Rejection::Expired,
        InvalidIssuer => Rejection::Issuer,
        InvalidAudience => Rejection::Audience,
        MissingRequiredClaim(claim) => Rejection::MissingClaim(claim.clone()),
        InvalidAlgorithm | InvalidAlgorithmName => Rejection::Algorithm,
        InvalidSignature | InvalidEcdsaKey | InvalidRsaKey(_) => Rejection::Signature,
        _ => Rejection::Malformed,
    }
}

/// The client that fetches a JWKS URL: redirects not followed (a JWKS that
/// moved is a setting to fix, not to follow), the platform's roots and the
/// CA certificates in `ca_file` (`--jwt-jwks-ca-file`) trusted.
pub fn jwks_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let certificates = crate::gateway::tls::ca_certificates(path, "--jwt-jwks-ca-file")?
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "a certificate in --jwt-jwks-ca-file `{}` is not usable: {e}",
                    path.display()
                )
            })?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the JWKS client: {e}"))
}

async fn fetch(source: &JwksSource, http: &reqwest::Client) -> Result<Vec<Key>, String> {
    match source {
        JwksSource::File(path) => {
            let bytes = read_file(path.clone())
                .await
                .map_err(|e| format!("cannot read the JWKS file `{}`: {e}", path.display()))?;
            parse(&bytes).map_err(|e| format!("the JWKS file `{}`: {e}", path.display()))
        }
        JwksSource::Url(url) => {
            let shown = crate::shared::redact::redact_url(url);
            let response = http
                .get(url.clone())
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot fetch the JWKS from {shown}: {}",
                        crate::shared::http_error::error_chain(&e)
                    )
                })?;
            if !response.status().is_success() {
                return Err(format!(
                    "the JWKS at {shown} answered HTTP {}",
                    response.status().as_u16()
                ));
            }
            // Read to the limit and no further: a JWKS endpoint that sends
            // without end must not fill the gateway's memory.
            let bytes = read_at_most(response, MAX_JWKS_BYTES)
                .await
                .map_err(|e| format!("the JWKS at {shown}: {e}"))?;
            parse(&bytes).map_err(|e| format!("the JWKS at {shown}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &serde_json::Value) -> String {
        use base64::Engine as _;
        let part = |value: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        format!("{}.{}.c2ln", part(&header), part(claims))
    }

    #[test]
    fn tokens_that_live_a_day_or_less_are_short_lived() {
        let now = 1_800_000_000_u64;
        for life in [1, 300, 3600, 86_400] {
            let jwt = token(&serde_json::json!({"iat": now, "exp": now + life, "sub": "x"}));
            assert!(is_short_lived(&jwt), "{life}");
        }
        for claims in [
            serde_json::json!({"iat": now, "exp": now + 86_401}),
            serde_json::json!({"iat": now, "exp": now}),
            serde_json::json!({"exp": now + 60}),
            serde_json::json!({"iat": now}),
            serde_json::json!({"iat": "now", "exp": "later"}),
        ] {
            assert!(!is_short_lived(&token(&claims)), "{claims}");
        }
        for opaque in ["", "abc", "a.b.c", "ghp_0123456789", "..", "x.eyJ9.y"] {
            assert!(!is_short_lived(opaque), "{opaque}");
            assert!(!has_jwt_shape(opaque), "{opaque}");
        }
        assert!(has_jwt_shape(&token(&serde_json::json!({"iat": now}))));
    }
}
