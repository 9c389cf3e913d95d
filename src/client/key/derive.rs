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

    /// The README's vector for every CI system, computed by
    /// `scripts/key-vectors.py` from the same environments and its own
    /// restatement of the provider table.
    #[test]
    fn published_provider_vectors() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (
                &[
                    ("JENKINS_URL", "https://jenkins.example/"),
                    ("JOB_NAME", "deploy/main"),
                    ("BUILD_NUMBER", "41"),
                    ("STAGE_NAME", "Deploy"),
                ],
                "1d17b1a7-f625-857c-bb51-605bda567c28",
            ),
            (
                &[
                    ("TF_BUILD", "True"),
                    (
                        "SYSTEM_COLLECTIONID",
                        "5b1c7c2e-0d77-4d3a-a1c7-1f6a2f7b2e11",
                    ),
                    ("BUILD_BUILDID", "1207"),
                    ("SYSTEM_STAGENAME", "deploy"),
                    ("SYSTEM_PHASENAME", "release"),
                    ("SYSTEM_JOBNAME", "linux"),
                ],
                "ef1b0fa4-8f4e-8bd0-96cb-bf7d004182c1",
            ),
            (
                &[
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_ORGANIZATION_SLUG", "acme"),
                    ("BUILDKITE_PIPELINE_SLUG", "app"),
                    ("BUILDKITE_BUILD_ID", "0190d1a2-7b3c-4d5e-8f90-a1b2c3d4e5f6"),
                    ("BUILDKITE_STEP_KEY", "deploy"),
                ],
                "b59e1b4b-01ba-8a0b-bce1-542542bce574",
            ),
            (
                &[
                    ("CIRCLECI", "true"),
                    (
                        "CIRCLE_WORKFLOW_WORKSPACE_ID",
                        "6c1e3f0a-2b4d-4e6f-8a0b-1c2d3e4f5a6b",
                    ),
                    ("CIRCLE_JOB", "deploy"),
                    ("CIRCLE_NODE_INDEX", "0"),
                ],
                "6ba2bc84-6f8d-84c9-9fae-c51d1e6f9984",
            ),
            (
                &[
                    ("BITBUCKET_BUILD_NUMBER", "77"),
                    (
                        "BITBUCKET_REPO_UUID",
                        "{1a2b3c4d-0000-4000-8000-000000000001}",
                    ),
                    (
                        "BITBUCKET_PIPELINE_UUID",
                        "{1a2b3c4d-0000-4000-8000-000000000002}",
                    ),
                    (
                        "BITBUCKET_STEP_UUID",
                        "{1a2b3c4d-0000-4000-8000-000000000003}",
                    ),
                ],
                "fb4f8acd-a62d-82f2-b6fd-50e37f04961c",
            ),
            (
                &[
                    ("TRAVIS", "true"),
                    ("TRAVIS_REPO_SLUG", "acme/app"),
                    ("TRAVIS_BUILD_ID", "987654"),
                    ("TRAVIS_JOB_ID", "987655"),
                ],
                "90c92ad7-4632-8f87-a9b4-70ba883652b0",
            ),
            (
                &[
                    ("CI", "woodpecker"),
                    ("CI_SYSTEM_URL", "https://ci.example"),
                    ("CI_REPO", "acme/app"),
                    ("CI_PIPELINE_NUMBER", "12"),
                    ("CI_PIPELINE_PARENT", "0"),
                    ("CI_WORKFLOW_NAME", "deploy"),
                    ("CI_STEP_NAME", "create"),
                ],
                "7aabbe64-25cc-8612-8590-9985784b4b53",
            ),
            (
                &[
                    ("DRONE", "true"),
                    ("DRONE_SYSTEM_HOST", "drone.example"),
                    ("DRONE_REPO", "acme/app"),
                    ("DRONE_BUILD_NUMBER", "5"),
                    ("DRONE_STAGE_NAME", "default"),
                    ("DRONE_STEP_NAME", "deploy"),
                ],
                "48e84dc4-c87b-8954-8a74-d7ebaa160a5c",
            ),
            (
                &[
                    ("TEAMCITY_VERSION", "2025.07"),
                    ("TEAMCITY_PROJECT_NAME", "App"),
                    ("TEAMCITY_BUILDCONF_NAME", "Deploy"),
                    ("BUILD_NUMBER", "3"),
                ],
                "86f5554b-6de2-8307-b937-f8d34fc3001b",
            ),
            (
                &[(
                    "CODEBUILD_BUILD_ARN",
                    "arn:aws:codebuild:eu-west-1:123456789012:build/app:8d2a",
                )],
                "cc29ec4f-2b56-877c-ad96-4561554ee8a4",
            ),
            (
                &[
                    ("PROJECT_ID", "acme-prod"),
                    ("BUILD_ID", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
                ],
                "cf547373-6b2d-8c3b-a4a3-44a53cd33fc1",
            ),
        ];
        for (vars, expected) in cases {
            let env: Env = vars.iter().copied().collect();
            assert_eq!(
                key_for(&env, KeyScope::Run, "", &[0u8; 32]),
                expected,
                "{vars:?}"
            );
        }
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
