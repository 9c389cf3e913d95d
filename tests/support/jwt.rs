//! An OIDC issuer for tests: signing keys generated per test (RSA 2048 and
//! EC P-256, by the `openssl` command), their JWKS served on 127.0.0.1 and
//! changeable (key rotation), and tokens signed with them.

use super::{Reply, Response, Server};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::process::Command;
use std::sync::{Arc, Mutex};

pub const ISSUER: &str = "https://token.actions.example";
pub const AUDIENCE: &str = "https://deploy.example";

/// A signing key and the id it is published under.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    /// A new key: `Algorithm::RS256` or `Algorithm::ES256`.
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let mut openssl = Command::new("openssl");
        openssl.args(["genpkey", "-out"]).arg(&path);
        match alg {
            Algorithm::RS256 => {
                openssl.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            }
            Algorithm::ES256 => {
                openssl.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
            }
            other => panic!("no test keys for {other:?}"),
        };
        let status = openssl
            .output()
            .expect("the openssl command (scripts/test.sh installs it)");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let pem = std::fs::read(&path).unwrap();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    /// A token with `claims`, signed by this key, naming its `kid`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a GitHub-style OIDC token for `sub`, valid for ten
/// minutes, unique per call (`jti`), as a token service mints one per job
/// attempt.
pub fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now(),
        "exp": now() + 600,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// A JWKS document holding the public halves of `keys`.
pub fn document(keys: &[&SigningKey]) -> String {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    };
    serde_json::to_string(&set).unwrap()
}

/// A JWKS endpoint whose keys the test can replace.
pub struct Jwks {
    pub server: Server,
    published: Arc<Mutex<String>>,
}

impl Jwks {
    pub fn serve(keys: &[&SigningKey]) -> Self {
        let published = Arc::new(Mutex::new(String::new()));
        let document = published.clone();
        let server = Server::start(move |_| {
            Reply::Respond(
                Response::new(200)
                    .header("content-type", "application/json")
                    .body(document.lock().unwrap().clone()),
            )
        });
        let jwks = Self { server, published };
        jwks.publish(keys);
        jwks
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().unwrap() = document(keys);
    }

    pub fn url(&self) -> String {
        self.server.url("/.well-known/jwks")
    }

    /// The gateway flags that verify tokens of this issuer.
    pub fn gateway_args(&self) -> Vec<String> {
        vec![
            "--jwt-jwks-url".into(),
            self.url(),
            "--jwt-issuer".into(),
            ISSUER.into(),
            "--jwt-audience".into(),
            AUDIENCE.into(),
        ]
    }
}

/// A token service like GitHub's runner's (`ACTIONS_ID_TOKEN_REQUEST_URL`,
/// its bearer `runner-request-token`): every request mints a new token (a
/// new `jti` and `iat`) for the same subject; the tokens minted are kept.
pub fn token_service(key: Arc<SigningKey>, sub: &'static str) -> (Server, Arc<Mutex<Vec<String>>>) {
    short_lived_token_service(key, sub, 600)
}

/// [`token_service`] with tokens that expire `lifetime_secs` after minting.
pub fn short_lived_token_service(
    key: Arc<SigningKey>,
    sub: &'static str,
    lifetime_secs: u64,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let minted = Arc::new(Mutex::new(Vec::new()));
    let log = minted.clone();
    let server = Server::start(move |request| {
        if request.header("authorization") != Some("Bearer runner-request-token") {
            return Reply::Respond(Response::new(403).body("{}"));
        }
        let mut claims = claims(sub);
        claims["exp"] = (now() + lifetime_secs).into();
        let token = key.sign(&claims);
        log.lock().unwrap().push(token.clone());
        Reply::Respond(Response::new(200).body(format!("{{\"value\":\"{token}\"}}")))
    });
    (server, minted)
}
