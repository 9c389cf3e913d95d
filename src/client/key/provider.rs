//! The CI systems as data: [`PROVIDERS`] says, per system, how it is
//! detected, which variables identify the current step across retries and
//! re-runs (in derivation order), which one counts attempts (for
//! `key-scope: attempt`), and whether a re-run keeps that identity. The
//! code, the log, and the README's provider table (held to this table by
//! `tests/docs_drift.rs`) all read it; adding a CI system is adding a row
//! and its tests. Each row cites the system's documentation of its
//! variables and re-run behaviour.
//!
//! The identity is the attempt-independent part of the key (see "Key
//! derivation v1" in the README). A missing variable is an empty field.

use crate::shared::env::Env;

/// Which key scope the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// One key for every attempt of the run: survives "Re-run failed jobs".
    Run,
    /// A new key per run attempt.
    Attempt,
}

/// How a CI system is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// The variable has exactly this value.
    Equals(&'static str, &'static str),
    /// The variable has this value in any letter case (`TF_BUILD=True`).
    EqualsIgnoringCase(&'static str, &'static str),
    /// Every one of these variables is set (to anything).
    Set(&'static [&'static str]),
}

impl Detect {
    fn matches(self, env: &Env) -> bool {
        match self {
            Detect::Equals(name, value) => env.get(name) == Some(value),
            Detect::EqualsIgnoringCase(name, value) => {
                env.get(name).is_some_and(|v| v.eq_ignore_ascii_case(value))
            }
            Detect::Set(names) => names.iter().all(|name| env.get(name).is_some()),
        }
    }

    /// How the README states it.
    pub fn describe(self) -> String {
        match self {
            Detect::Equals(name, value) | Detect::EqualsIgnoringCase(name, value) => {
                format!("`{name}={value}`")
            }
            Detect::Set(names) => {
                let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
                format!("{} set", names.join(" and "))
            }
        }
    }
}

/// One identity field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The variable's value.
    Var(&'static str),
    /// The first of these variables that is set and not `0`.
    FirstOf(&'static [&'static str]),
}

impl Field {
    fn value(self, env: &Env) -> String {
        match self {
            Field::Var(name) => env.get(name).unwrap_or_default().to_owned(),
            Field::FirstOf(names) => names
                .iter()
                .find_map(|name| env.get(name).filter(|v| *v != "0"))
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// How the README states it.
    pub fn describe(self) -> String {
        match self {
            Field::Var(name) => format!("`{name}`"),
            Field::FirstOf(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                format!("{} (the first set and not 0)", names.join(" or "))
            }
        }
    }
}

/// What a re-run (or restart, or rebuild) does to the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reruns {
    /// Retrying a job, and re-running failed jobs, keep every identity
    /// field: the same key, the operation replayed.
    SameKey,
    /// Retries inside one build keep the identity; the action named here
    /// starts a new build, whose identity (and key) is new.
    NewBuild(&'static str),
}

/// One CI system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// The name that feeds the key and the log.
    pub name: &'static str,
    /// The system's name for people.
    pub title: &'static str,
    /// How it is detected.
    pub detect: Detect,
    /// The fields that identify the step, in derivation order.
    pub identity: &'static [Field],
    /// The variable that counts attempts, for `key-scope: attempt`.
    pub attempt: Option<&'static str>,
    /// What a re-run does to the identity.
    pub reruns: Reruns,
    /// Where the variables and the re-run behaviour are documented.
    pub docs: &'static str,
}

/// The matrix leg index the action passes from `strategy.job-index`.
pub const JOB_INDEX_VAR: &str = "IDEMPOTENT_REQUEST_JOB_INDEX";

/// Every CI system, in detection order (the first that matches wins).
pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "github",
        title: "GitHub Actions",
        detect: Detect::Equals("GITHUB_ACTIONS", "true"),
        identity: &[
            Field::Var("GITHUB_SERVER_URL"),
            Field::FirstOf(&["GITHUB_REPOSITORY_ID", "GITHUB_REPOSITORY"]),
            Field::Var("GITHUB_RUN_ID"),
            Field::Var("GITHUB_JOB"),
            Field::Var(JOB_INDEX_VAR),
            Field::Var("GITHUB_ACTION"),
        ],
        attempt: Some("GITHUB_RUN_ATTEMPT"),
        reruns: Reruns::SameKey,
        // Re-runs keep GITHUB_RUN_ID and raise GITHUB_RUN_ATTEMPT.
        docs: "https://docs.github.com/en/actions/reference/workflows-and-actions/variables",
    },
    Provider {
        name: "gitlab",
        title: "GitLab CI/CD",
        detect: Detect::Equals("GITLAB_CI", "true"),
        identity: &[
            Field::Var("CI_SERVER_URL"),
            Field::Var("CI_PROJECT_ID"),
            Field::Var("CI_PIPELINE_ID"),
            Field::Var("CI_JOB_NAME"),
        ],
        // A retried job is a new job with a new CI_JOB_ID in the same pipeline.
        attempt: Some("CI_JOB_ID"),
        reruns: Reruns::SameKey,
        docs: "https://docs.gitlab.com/ci/variables/predefined_variables/",
    },
    Provider {
        name: "jenkins",
        title: "Jenkins",
        detect: Detect::Set(&["JENKINS_URL"]),
        identity: &[
            Field::Var("JENKINS_URL"),
            Field::Var("JOB_NAME"),
            Field::Var("BUILD_NUMBER"),
            Field::Var("STAGE_NAME"),
        ],
        attempt: None,
        // `retry {}` re-runs its body inside the same build; Replay, Rebuild
        // and Restart from Stage queue a new build number.
        reruns: Reruns::NewBuild("Replay, Rebuild and Restart from Stage"),
        docs: "https://www.jenkins.io/doc/book/pipeline/jenkinsfile/#using-environment-variables",
    },
    Provider {
        name: "azure",
        title: "Azure Pipelines",
        detect: Detect::EqualsIgnoringCase("TF_BUILD", "True"),
        identity: &[
            Field::Var("SYSTEM_COLLECTIONID"),
            Field::Var("BUILD_BUILDID"),
            Field::Var("SYSTEM_STAGENAME"),
            Field::Var("SYSTEM_PHASENAME"),
            Field::Var("SYSTEM_JOBNAME"),
        ],
        // "Rerun failed jobs" keeps Build.BuildId and raises System.JobAttempt;
        // System.JobId changes per attempt and must not feed the key.
        attempt: Some("SYSTEM_JOBATTEMPT"),
        reruns: Reruns::SameKey,
        docs: "https://learn.microsoft.com/en-us/azure/devops/pipelines/build/variables",
    },
    Provider {
        name: "buildkite",
        title: "Buildkite",
        detect: Detect::Equals("BUILDKITE", "true"),
        identity: &[
            Field::Var("BUILDKITE_ORGANIZATION_SLUG"),
            Field::Var("BUILDKITE_PIPELINE_SLUG"),
            Field::Var("BUILDKITE_BUILD_ID"),
            Field::FirstOf(&["BUILDKITE_STEP_KEY", "BUILDKITE_STEP_ID"]),
            Field::Var("BUILDKITE_PARALLEL_JOB"),
        ],
        // A retried job keeps its build and step and gets a new
        // BUILDKITE_JOB_ID; BUILDKITE_RETRY_COUNT counts the retries.
        attempt: Some("BUILDKITE_RETRY_COUNT"),
        reruns: Reruns::NewBuild("Rebuild"),
        docs: "https://buildkite.com/docs/pipelines/configure/environment-variables",
    },
    Provider {
        name: "circleci",
        title: "CircleCI",
        detect: Detect::Equals("CIRCLECI", "true"),
        identity: &[
            // The workspace id is inherited by "Rerun workflow from failed";
            // CIRCLE_WORKFLOW_ID and CIRCLE_BUILD_NUM are new there.
            Field::Var("CIRCLE_WORKFLOW_WORKSPACE_ID"),
            Field::Var("CIRCLE_JOB"),
            Field::Var("CIRCLE_NODE_INDEX"),
        ],
        attempt: None,
        reruns: Reruns::SameKey,
        docs: "https://circleci.com/docs/reference/variables/",
    },
    Provider {
        name: "bitbucket",
        title: "Bitbucket Pipelines",
        detect: Detect::Set(&["BITBUCKET_BUILD_NUMBER"]),
        identity: &[
            Field::Var("BITBUCKET_REPO_UUID"),
            Field::Var("BITBUCKET_PIPELINE_UUID"),
            Field::Var("BITBUCKET_STEP_UUID"),
            Field::Var("BITBUCKET_PARALLEL_STEP"),
        ],
        // Rerunning a failed step keeps the pipeline and step and raises
        // BITBUCKET_STEP_RUN_NUMBER.
        attempt: Some("BITBUCKET_STEP_RUN_NUMBER"),
        reruns: Reruns::SameKey,
        docs: "https://support.atlassian.com/bitbucket-cloud/docs/variables-and-secrets/",
    },
    Provider {
        name: "travis",
        title: "Travis CI",
        detect: Detect::Equals("TRAVIS", "true"),
        identity: &[
            Field::Var("TRAVIS_REPO_SLUG"),
            Field::Var("TRAVIS_BUILD_ID"),
            Field::Var("TRAVIS_JOB_ID"),
        ],
        // A restarted job keeps both ids (TRAVIS_JOB_RESTARTED is a flag).
        attempt: None,
        reruns: Reruns::SameKey,
        docs: "https://docs.travis-ci.com/user/environment-variables/#default-environment-variables",
    },
    Provider {
        name: "woodpecker",
        title: "Woodpecker CI",
        detect: Detect::Equals("CI", "woodpecker"),
        identity: &[
            Field::Var("CI_SYSTEM_URL"),
            Field::Var("CI_REPO"),
            // A restart is a new pipeline whose CI_PIPELINE_PARENT is the
            // number of the pipeline it restarts (0 otherwise).
            Field::FirstOf(&["CI_PIPELINE_PARENT", "CI_PIPELINE_NUMBER"]),
            Field::Var("CI_WORKFLOW_NAME"),
            Field::Var("CI_STEP_NAME"),
        ],
        attempt: None,
        reruns: Reruns::SameKey,
        docs: "https://woodpecker-ci.org/docs/usage/environment",
    },
    Provider {
        name: "drone",
        title: "Drone",
        detect: Detect::Equals("DRONE", "true"),
        identity: &[
            Field::Var("DRONE_SYSTEM_HOST"),
            Field::Var("DRONE_REPO"),
            Field::Var("DRONE_BUILD_NUMBER"),
            Field::Var("DRONE_STAGE_NAME"),
            Field::Var("DRONE_STEP_NAME"),
        ],
        attempt: None,
        reruns: Reruns::NewBuild("a restart"),
        docs: "https://docs.drone.io/pipeline/environment/reference/",
    },
    Provider {
        name: "teamcity",
        title: "TeamCity",
        detect: Detect::Set(&["TEAMCITY_VERSION"]),
        identity: &[
            Field::Var("TEAMCITY_PROJECT_NAME"),
            Field::Var("TEAMCITY_BUILDCONF_NAME"),
            Field::Var("BUILD_NUMBER"),
        ],
        attempt: None,
        reruns: Reruns::NewBuild("re-running a build"),
        docs: "https://www.jetbrains.com/help/teamcity/predefined-build-parameters.html",
    },
    Provider {
        name: "codebuild",
        title: "AWS CodeBuild",
        detect: Detect::Set(&["CODEBUILD_BUILD_ARN"]),
        identity: &[Field::Var("CODEBUILD_BUILD_ARN")],
        attempt: None,
        reruns: Reruns::NewBuild("Retry build"),
        docs: "https://docs.aws.amazon.com/codebuild/latest/userguide/build-env-ref-env-vars.html",
    },
    Provider {
        name: "cloudbuild",
        title: "Google Cloud Build",
        // Cloud Build puts nothing in a step's environment by itself: the
        // README's snippet passes these two substitutions through `env:`.
        detect: Detect::Set(&["PROJECT_ID", "BUILD_ID"]),
        identity: &[Field::Var("PROJECT_ID"), Field::Var("BUILD_ID")],
        attempt: None,
        reruns: Reruns::NewBuild("Retry (a new build)"),
        docs: "https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values",
    },
];

/// The CI identity that feeds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's name, or `local` when no CI was detected.
    pub provider: &'static str,
    /// The provider's identity fields, in derivation order.
    pub fields: Vec<String>,
    /// Empty under [`KeyScope::Run`]; the attempt's id under
    /// [`KeyScope::Attempt`].
    pub attempt: String,
    /// The provider's row, when one was detected.
    pub row: Option<&'static Provider>,
}

/// The first provider whose marker is in `env`.
pub fn detect(env: &Env) -> Option<&'static Provider> {
    PROVIDERS
        .iter()
        .find(|provider| provider.detect.matches(env))
}

impl Identity {
    /// Detects the provider and collects its fields.
    pub fn detect(env: &Env, scope: KeyScope) -> Self {
        let Some(row) = detect(env) else {
            return Self {
                provider: "local",
                fields: Vec::new(),
                attempt: String::new(),
                row: None,
            };
        };
        Self {
            provider: row.name,
            fields: row.identity.iter().map(|field| field.value(env)).collect(),
            attempt: match (scope, row.attempt) {
                (KeyScope::Attempt, Some(name)) => env.get(name).unwrap_or_default().to_owned(),
                _ => String::new(),
            },
            row: Some(row),
        }
    }

    /// What the log should add about re-runs on this system, when a re-run
    /// does not keep the key.
    pub fn rerun_caveat(&self) -> Option<String> {
        match self.row?.reruns {
            Reruns::SameKey => None,
            Reruns::NewBuild(what) => Some(format!(
                "on {}, {what} starts a new build with a new key: only retries inside this \
                 build send this key again; to keep the operation once across re-runs, give \
                 idempotency-key a value you control (for example the commit and the target \
                 environment)",
                self.row?.title
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

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
        let env = env(&[
            ("GITLAB_CI", "true"),
            ("CI_SERVER_URL", "https://gitlab.example"),
            ("CI_PROJECT_ID", "7"),
            ("CI_PIPELINE_ID", "8"),
            ("CI_JOB_NAME", "deploy 1/2"),
            ("CI_JOB_ID", "1234"),
        ]);
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
        assert_eq!(id.rerun_caveat(), None);
    }

    #[test]
    fn names_are_unique_and_every_row_is_documented() {
        let mut seen = std::collections::HashSet::new();
        for provider in PROVIDERS {
            assert!(seen.insert(provider.name), "{} twice", provider.name);
            assert!(provider.docs.starts_with("https://"), "{}", provider.name);
            assert!(!provider.identity.is_empty(), "{}", provider.name);
        }
        assert!(!seen.contains("local"));
    }

    #[test]
    fn woodpecker_follows_the_restarted_pipeline() {
        let base = [
            ("CI", "woodpecker"),
            ("CI_REPO", "o/r"),
            ("CI_PIPELINE_NUMBER", "8"),
            ("CI_WORKFLOW_NAME", "deploy"),
            ("CI_STEP_NAME", "create"),
        ];
        let first = Identity::detect(
            &env(&[&base[..], &[("CI_PIPELINE_PARENT", "0")]].concat()),
            KeyScope::Run,
        );
        let mut restart = base.to_vec();
        restart[2] = ("CI_PIPELINE_NUMBER", "9");
        restart.push(("CI_PIPELINE_PARENT", "8"));
        let restarted = Identity::detect(&env(&restart), KeyScope::Run);
        assert_eq!(first.fields, restarted.fields);
        assert_eq!(first.fields[2], "8");
    }

    #[test]
    fn systems_without_stable_reruns_say_so() {
        let id = Identity::detect(
            &env(&[("JENKINS_URL", "https://ci.example/")]),
            KeyScope::Run,
        );
        assert_eq!(id.provider, "jenkins");
        let caveat = id.rerun_caveat().unwrap();
        assert!(
            caveat.contains("Restart from Stage") && caveat.contains("idempotency-key"),
            "{caveat}"
        );
        assert_eq!(
            Identity::detect(&github(&[]), KeyScope::Run).rerun_caveat(),
            None
        );
    }
}
