//! Who is asking: the caller, a SHA-256 that scopes every record, so a
//! stored answer is only ever replayed to the caller that created it (a
//! key guessed by another caller names a different record).
//!
//! - [`CallerRule::Credentials`] (`--scope-headers auto`, the default):
//!   every request header whose name marks a credential
//!   ([`crate::shared::secret_names::is_secret_header`]: `Authorization`,
//!   `Proxy-Authorization`, `Cookie`, `X-Api-Key`, `Private-Token`,
//!   `X-Session-Id`, …),
//!   except the key header itself. Callers who authenticate by cookie or by
//!   API-key header are then apart as well as bearer callers.
//! - [`CallerRule::Headers`]: exactly the headers named.
//! - [`CallerRule::Jwt`]: the verified claims of a bearer JWT (`iss` and
//!   `sub` by default), which stay the same when the token is minted again
//!   for every CI job attempt.
//!
//! The trade-off of header rules: a header whose value changes from request
//! to request (a per-request signature, a rotating cookie) makes every
//! request a new caller, and a retry then runs again. Name the stable
//! headers, or use JWT claims, where clients send such headers. The
//! commonest case, a CI job's OIDC token (minted anew for every attempt)
//! under a header rule, is warned about once, the first time a keyed
//! request carries one.

use super::jwt::{Jwt, Rejection};
use crate::shared::framing::FramedHasher;
use crate::shared::secret_names::is_secret_header;
use axum::http::{HeaderMap, HeaderName, header::AUTHORIZATION};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Set once a header-scoped request with a short-lived bearer JWT was
/// warned about: once per process is enough to be seen, and afterwards the
/// check costs one load.
static SHORT_LIVED_WARNED: AtomicBool = AtomicBool::new(false);

/// Bearer JWTs seen under a header rule before the warning: the first
/// [`LOOK_AT_FIRST`] are decoded, then one in [`LOOK_AT_FIRST`], so callers
/// with long-lived JWTs do not pay a decode on every request for ever.
/// Opaque tokens are not counted (they are told apart by their shape).
static BEARERS_SEEN: AtomicU64 = AtomicU64::new(0);
const LOOK_AT_FIRST: u64 = 256;

/// How callers are told apart.
#[derive(Clone)]
pub enum CallerRule {
    /// Every credential header but the key header.
    Credentials,
    /// Exactly these headers.
    Headers(Vec<HeaderName>),
    /// Verified JWT claims.
    Jwt(Arc<Jwt>),
}

impl std::fmt::Debug for CallerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerRule::Credentials => f.write_str("credential headers"),
            CallerRule::Headers(names) => write!(f, "headers {names:?}"),
            CallerRule::Jwt(_) => f.write_str("verified JWT claims"),
        }
    }
}

/// The headers' names and values, framed, in name order.
fn hash_headers<'a>(headers: &HeaderMap, names: impl Iterator<Item = &'a HeaderName>) -> [u8; 32] {
    let mut names: Vec<&HeaderName> = names.collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let mut hasher = FramedHasher::default();
    for name in names {
        hasher.field(name.as_str().as_bytes());
        for value in headers.get_all(name) {
            hasher.field(value.as_bytes());
        }
        hasher.field(b"");
    }
    hasher.finish()
}

/// The caller of a request, or why it cannot be identified (`401`).
pub async fn identify(
    rule: &CallerRule,
    headers: &HeaderMap,
    key_header: &HeaderName,
) -> Result<[u8; 32], Rejection> {
    match rule {
        CallerRule::Credentials => {
            if key_header != AUTHORIZATION {
                warn_of_short_lived_tokens(headers);
            }
            Ok(hash_headers(
                headers,
                headers
                    .keys()
                    .filter(|name| *name != key_header && is_secret_header(name.as_str())),
            ))
        }
        CallerRule::Headers(names) => {
            if names.contains(&AUTHORIZATION) {
                warn_of_short_lived_tokens(headers);
            }
            Ok(hash_headers(headers, names.iter()))
        }
        CallerRule::Jwt(jwt) => {
            let mut values = headers.get_all(AUTHORIZATION).iter();
            let authorization = values.next().and_then(|v| v.to_str().ok());
            if values.next().is_some() {
                return Err(Rejection::Malformed);
            }
            jwt.caller(authorization).await
        }
    }
}

/// Warns, once per process, when a caller taken from headers includes a
/// short-lived bearer JWT: such a token is minted anew for every CI job
/// attempt (GitHub's and GitLab's OIDC tokens), so each attempt is a new
/// caller, and a re-run with the same key would be forwarded again. The
/// token and its claims are never logged.
fn warn_of_short_lived_tokens(headers: &HeaderMap) {
    if SHORT_LIVED_WARNED.load(Ordering::Relaxed) {
        return;
    }
    let short_lived = headers.get_all(AUTHORIZATION).iter().any(|value| {
        let token = super::jwt::bearer_token(value.to_str().ok());
        token
            .filter(|token| super::jwt::has_jwt_shape(token))
            .is_some_and(|token| {
                let seen = BEARERS_SEEN.fetch_add(1, Ordering::Relaxed);
                (seen < LOOK_AT_FIRST || seen.is_multiple_of(LOOK_AT_FIRST))
                    && super::jwt::is_short_lived(token)
            })
    });
    if short_lived && !SHORT_LIVED_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a keyed request carried a bearer JWT that lives a day or less (such as a CI job's \
             OIDC token), and the caller is taken from request headers: a token minted for each \
             job attempt makes each attempt a new caller, so a re-run with the same key is \
             forwarded again; set --jwt-jwks-url (or --jwt-jwks-file), --jwt-issuer and \
             --jwt-audience to take the caller from the token's verified claims (warned once)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_headers::headers;

    fn caller(rule: &CallerRule, pairs: &[(&'static str, &'static str)]) -> [u8; 32] {
        let key = HeaderName::from_static("idempotency-key");
        futures_util::FutureExt::now_or_never(identify(rule, &headers(pairs), &key))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn by_default_every_credential_header_scopes_the_caller() {
        let rule = CallerRule::Credentials;
        let alice = caller(&rule, &[("cookie", "session=a"), ("idempotency-key", "k1")]);
        assert_eq!(
            alice,
            caller(
                &rule,
                &[
                    ("cookie", "session=a"),
                    ("idempotency-key", "k2"),
                    ("accept", "x")
                ]
            ),
            "the key header and ordinary headers are not the caller"
        );
        for other in [
            &[("cookie", "session=b")][..],
            &[("x-api-key", "a")],
            &[("authorization", "Bearer a")],
            &[("proxy-authorization", "Basic a")],
            &[],
        ] {
            assert_ne!(alice, caller(&rule, other), "{other:?}");
        }
        assert_ne!(
            caller(&rule, &[("x-api-key", "one")]),
            caller(&rule, &[("x-api-key", "two")])
        );
    }

    #[test]
    fn named_headers_only() {
        let rule = CallerRule::Headers(vec![HeaderName::from_static("authorization")]);
        assert_eq!(
            caller(&rule, &[("authorization", "Bearer a"), ("cookie", "1")]),
            caller(&rule, &[("authorization", "Bearer a"), ("cookie", "2")])
        );
        assert_ne!(
            caller(&rule, &[("authorization", "Bearer a")]),
            caller(&rule, &[("authorization", "Bearer b")])
        );
    }
}
