//! Idempotency key derivation v1 and the key's wire format.
//!
//! The key is the first 16 bytes of a SHA-256 over these framed fields
//! ([`crate::shared::framing`]), formatted as a UUID version 8 (RFC 9562):
//! `idempotent-request/v1`, the provider, each identity field, the attempt
//! field, `key-salt`, and the 32-byte request fingerprint. The README
//! documents the same rule with test vectors; changing any of it is a new
//! version, because keys must stay stable across releases for re-runs.

use crate::client::key::provider::Identity;
use crate::shared::framing::FramedHasher;
use uuid::Uuid;

/// The version tag that opens the derivation.
pub const VERSION_TAG: &str = "idempotent-request/v1";

/// How the key is written into its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// The bare key.
    Plain,
    /// An RFC 8941 sf-string (`"…"`), as the IETF idempotency-key draft specifies.
    Structured,
}

/// Derives the key for `identity`, `salt` and the request `fingerprint`.
pub fn derive(identity: &Identity, salt: &str, fingerprint: &[u8; 32]) -> Uuid {
    let mut hasher = FramedHasher::default();
    hasher
        .field(VERSION_TAG.as_bytes())
        .field(identity.provider.as_bytes());
    for field in &identity.fields {
        hasher.field(field.as_bytes());
    }
    hasher
        .field(identity.attempt.as_bytes())
        .field(salt.as_bytes())
        .field(fingerprint);
    let digest = hasher.finish();
    let mut first16 = [0u8; 16];
    first16.copy_from_slice(&digest[..16]);
    Uuid::new_v8(first16)
}

/// Checks a user-supplied key: 1-255 visible ASCII characters (0x21-0x7E).
pub fn validate_explicit(key: &str) -> Result<(), String> {
    if (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err("a key must be 1 to 255 visible ASCII characters (no spaces)".to_owned())
    }
}

/// The header value that carries `key` in `format`.
pub fn header_value(key: &str, format: KeyFormat) -> String {
    match format {
        KeyFormat::Plain => key.to_owned(),
        KeyFormat::Structured => {
            let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::key::provider::KeyScope;
    use crate::shared::env::Env;

    fn github_env(overrides: &[(&'static str, &'static str)]) -> Env {
        let mut vars = vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY_ID", "123456"),
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_ACTION", "create-deployment"),
            ("GITHUB_RUN_ATTEMPT", "1"),
        ];
        for &(k, v) in overrides {
            vars.retain(|(name, _)| *name != k);
            vars.push((k, v));
        }
        vars.into_iter().collect()
    }

    fn key_for(env: &Env, scope: KeyScope, salt: &str, fp: &[u8; 32]) -> String {
        derive(&Identity::detect(env, scope), salt, fp).to_string()
    }

    /// The README's published vectors, computed independently by
    /// `scripts/key-vectors.py` (Python's hashlib, no shared code).
    #[test]
    fn published_test_vectors() {
        let zero = [0u8; 32];
        let github = github_env(&[]);
        assert_eq!(
            key_for(&github, KeyScope::Run, "", &zero),
            "f68997fe-688e-8524-8a30-b9aaff603b5a"
        );
        assert_eq!(
            key_for(&github, KeyScope::Run, "eu-west", &zero),
            "e2aa1179-0d2a-8180-81c7-30f7cb4fb8f1"
        );
        assert_eq!(
            key_for(&Env::default(), KeyScope::Run, "nightly", &zero),
            "5b560500-561a-8968-8e61-f18331fce919"
        );
        let body = crate::client::input::body::Body::Bytes(bytes::Bytes::from_static(
            br#"{"ref":"v1.2.3"}"#,
        ));
        let fp = crate::client::key::fingerprint::fingerprint(
            &crate::client::key::fingerprint::Request {
                method: "POST",
                url: &"https://api.example.com/deployments".parse().unwrap(),
                headers: &[],
                key_headers: &[],
                body: Some(&body),
            },
        )
        .unwrap();
        assert_eq!(
            fp.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "cdbb8ce02dd953c48fa3a690428620ea0ab2391a03f44dc6c3bf7150fbc699ab"
        );
        assert_eq!(
            key_for(&github, KeyScope::Run, "", &fp),
            "ae6cb888-153b-8630-a265-6925d0ff6072"
        );
        let rerun = github_env(&[("GITHUB_RUN_ATTEMPT", "2")]);
        assert_eq!(
            key_for(&rerun, KeyScope::Attempt, "", &fp),
            "69f6d47d-e2aa-8baa-b8c1-27cb44f92088"
        );
        // User-info and secret query values do not feed the key.
        let fp = crate::client::key::fingerprint::fingerprint(
            &crate::client::key::fingerprint::Request {
                method: "POST",
                url: &"https://ci:tok-1@api.example.com/deployments?access_token=tok-2&env=prod"
                    .parse()
                    .unwrap(),
                headers: &[],
                key_headers: &[],
                body: Some(&body),
            },
        )
        .unwrap();
        assert_eq!(
            fp.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "4dcbc06cc733230bd452538db3f8eea16445ae33091fec5443c93a7f9bffcadf"
        );
        assert_eq!(
            key_for(&github, KeyScope::Run, "", &fp),
            "71dab81e-92df-8563-ab40-d210a3174532"
        );
    }

    #[test]
    fn output_is_a_lowercase_uuid_v8() {
        let key = derive(
            &Identity::detect(&github_env(&[]), KeyScope::Run),
            "",
            &[1; 32],
        );
        assert_eq!(key.get_version_num(), 8);
        let text = key.to_string();
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.len(), 36);
    }

    #[test]
    fn run_scope_ignores_the_attempt_and_attempt_scope_does_not() {
        let fp = [3u8; 32];
        let first = github_env(&[("GITHUB_RUN_ATTEMPT", "1")]);
        let rerun = github_env(&[("GITHUB_RUN_ATTEMPT", "2")]);
        assert_eq!(
            key_for(&first, KeyScope::Run, "", &fp),
            key_for(&rerun, KeyScope::Run, "", &fp)
        );
        assert_ne!(
            key_for(&first, KeyScope::Attempt, "", &fp),
            key_for(&rerun, KeyScope::Attempt, "", &fp)
        );
    }

    #[test]
    fn key_changes_with_job_index_step_salt_and_fingerprint() {
        let fp = [3u8; 32];
        let reference = key_for(&github_env(&[]), KeyScope::Run, "", &fp);
        let variants = [
            key_for(
                &github_env(&[("IDEMPOTENT_REQUEST_JOB_INDEX", "1")]),
                KeyScope::Run,
                "",
                &fp,
            ),
            key_for(
                &github_env(&[("GITHUB_ACTION", "other")]),
                KeyScope::Run,
                "",
                &fp,
            ),
            key_for(
                &github_env(&[("GITHUB_RUN_ID", "1")]),
                KeyScope::Run,
                "",
                &fp,
            ),
            key_for(
                &github_env(&[("GITHUB_JOB", "other")]),
                KeyScope::Run,
                "",
                &fp,
            ),
            key_for(&github_env(&[]), KeyScope::Run, "salt", &fp),
            key_for(&github_env(&[]), KeyScope::Run, "", &[4u8; 32]),
        ];
        for variant in variants {
            assert_ne!(variant, reference);
        }
    }

    #[test]
    fn explicit_keys_are_validated() {
        assert!(validate_explicit("deploy-42").is_ok());
        assert!(validate_explicit(&"a".repeat(255)).is_ok());
        assert!(validate_explicit("").is_err());
        assert!(validate_explicit(&"a".repeat(256)).is_err());
        assert!(validate_explicit("has space").is_err());
        assert!(validate_explicit("caf\u{e9}").is_err());
    }

    #[test]
    fn structured_format_quotes() {
        assert_eq!(header_value("abc", KeyFormat::Plain), "abc");
        assert_eq!(header_value("abc", KeyFormat::Structured), "\"abc\"");
        assert_eq!(
            header_value("a\"b\\c", KeyFormat::Structured),
            r#""a\"b\\c""#
        );
    }
}
