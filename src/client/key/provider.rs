//! Detection of the CI system and its attempt-independent identity of the
//! current step, the part of the key that makes it stable across retries and
//! re-runs (see "Key derivation v1" in the README).

use crate::shared::env::Env;

/// Which key scope the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// One key for every attempt of the run: survives "Re-run failed jobs".
    Run,
    /// A new key per run attempt.
    Attempt,
}

/// The CI identity that feeds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `github`, `gitlab` or `local`.
    pub provider: &'static str,
    /// The provider's identity fields, in derivation order.
    pub fields: Vec<String>,
    /// Empty under [`KeyScope::Run`]; the attempt's id under
    /// [`KeyScope::Attempt`].
    pub attempt: String,
}

/// The matrix leg index the action passes from `strategy.job-index`.
pub const JOB_INDEX_VAR: &str = "IDEMPOTENT_REQUEST_JOB_INDEX";

impl Identity {
    /// Detects the provider from `GITHUB_ACTIONS` / `GITLAB_CI` and collects
    /// its fields. Missing variables become empty fields.
    pub fn detect(env: &Env, scope: KeyScope) -> Self {
        let var = |name: &str| env.get(name).unwrap_or_default().to_owned();
        let attempt = |name: &str| match scope {
            KeyScope::Run => String::new(),
            KeyScope::Attempt => var(name),
        };
        if env.is_true("GITHUB_ACTIONS") {
            let repository = env
                .get("GITHUB_REPOSITORY_ID")
                .or_else(|| env.get("GITHUB_REPOSITORY"))
                .unwrap_or_default()
                .to_owned();
            Self {
                provider: "github",
                fields: vec![
                    var("GITHUB_SERVER_URL"),
                    repository,
                    var("GITHUB_RUN_ID"),
                    var("GITHUB_JOB"),
                    var(JOB_INDEX_VAR),
                    var("GITHUB_ACTION"),
                ],
                attempt: attempt("GITHUB_RUN_ATTEMPT"),
            }
        } else if env.is_true("GITLAB_CI") {
            Self {
                provider: "gitlab",
                fields: vec![
                    var("CI_SERVER_URL"),
                    var("CI_PROJECT_ID"),
                    var("CI_PIPELINE_ID"),
                    var("CI_JOB_NAME"),
                ],
                attempt: attempt("CI_JOB_ID"),
            }
        } else {
            Self {
                provider: "local",
                fields: Vec::new(),
                attempt: String::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(extra: &[(&str, &str)]) -> Env {
        [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_ACTION", "create"),
            ("GITHUB_RUN_ATTEMPT", "3"),
        ]
        .iter()
        .chain(extra)
        .map(|&(k, v)| (k, v))
        .collect()
    }

    #[test]
    fn github_fields_in_order_and_repository_id_preferred() {
        let id = Identity::detect(&github(&[("GITHUB_REPOSITORY_ID", "99")]), KeyScope::Run);
        assert_eq!(id.provider, "github");
        assert_eq!(
            id.fields,
            ["https://github.com", "99", "42", "deploy", "", "create"]
        );
        assert_eq!(id.attempt, "");
        let id = Identity::detect(&github(&[]), KeyScope::Attempt);
        assert_eq!(id.fields[1], "o/r");
        assert_eq!(id.attempt, "3");
    }

    #[test]
    fn gitlab_uses_job_name_and_job_id_for_attempts() {
        let env: Env = [
            ("GITLAB_CI", "true"),
            ("CI_SERVER_URL", "https://gitlab.example"),
            ("CI_PROJECT_ID", "7"),
            ("CI_PIPELINE_ID", "8"),
            ("CI_JOB_NAME", "deploy 1/2"),
            ("CI_JOB_ID", "1234"),
        ]
        .into_iter()
        .collect();
        let id = Identity::detect(&env, KeyScope::Attempt);
        assert_eq!(id.provider, "gitlab");
        assert_eq!(
            id.fields,
            ["https://gitlab.example", "7", "8", "deploy 1/2"]
        );
        assert_eq!(id.attempt, "1234");
        assert_eq!(Identity::detect(&env, KeyScope::Run).attempt, "");
    }

    #[test]
    fn no_ci_is_local() {
        let id = Identity::detect(&Env::default(), KeyScope::Run);
        assert_eq!(id.provider, "local");
        assert!(id.fields.is_empty());
    }
}
