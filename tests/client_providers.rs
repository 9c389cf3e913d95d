//! The key on every CI system, end to end through the binary: the
//! environment of a first attempt and of a retry, as each system sets them
//! (per `src/client/key/provider.rs` and its documentation links), give the
//! same key under `key-scope: run` and different keys under `attempt` where
//! the system counts attempts; parallel legs and steps get keys of their
//! own; the log names the system, and says so where a re-run is a new build.

use crate::support;

use support::client;

struct Case {
    provider: &'static str,
    /// A first attempt.
    first: &'static [(&'static str, &'static str)],
    /// What a retry of the failed job changes.
    retry: &'static [(&'static str, &'static str)],
    /// A variable another parallel leg has another value of.
    leg: Option<(&'static str, &'static str)>,
    /// A variable another step has another value of.
    step: Option<(&'static str, &'static str)>,
    /// Whether a re-run of failed work keeps the key (else the log says
    /// that only retries inside the build do).
    reruns_keep_the_key: bool,
}

const CASES: &[Case] = &[
    Case {
        provider: "github",
        first: &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY_ID", "1"),
            ("GITHUB_RUN_ID", "2"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_ACTION", "create"),
        ],
        retry: &[("GITHUB_RUN_ATTEMPT", "2")],
        leg: Some(("IDEMPOTENT_REQUEST_JOB_INDEX", "1")),
        step: Some(("GITHUB_ACTION", "notify")),
        reruns_keep_the_key: true,
    },
    Case {
        provider: "gitlab",
        first: &[
            ("GITLAB_CI", "true"),
            ("CI_SERVER_URL", "https://gitlab.example"),
            ("CI_PROJECT_ID", "7"),
            ("CI_PIPELINE_ID", "70"),
            ("CI_JOB_NAME", "deploy 1/2"),
            ("CI_JOB_ID", "700"),
        ],
        retry: &[("CI_JOB_ID", "701")],
        leg: Some(("CI_JOB_NAME", "deploy 2/2")),
        step: None,
        reruns_keep_the_key: true,
    },
    Case {
        provider: "jenkins",
        first: &[
            ("JENKINS_URL", "https://jenkins.example/"),
            ("JOB_NAME", "app/main"),
            ("BUILD_NUMBER", "41"),
            ("BUILD_ID", "41"),
            ("STAGE_NAME", "Deploy"),
        ],
        // `retry(3) { … }` runs again inside the same build: nothing changes.
        retry: &[],
        leg: Some(("STAGE_NAME", "Deploy eu")),
        step: Some(("STAGE_NAME", "Notify")),
        reruns_keep_the_key: false,
    },
    Case {
        provider: "azure",
        first: &[
            ("TF_BUILD", "True"),
            (
                "SYSTEM_COLLECTIONID",
                "c0ffee00-0000-4000-8000-000000000001",
            ),
            ("BUILD_BUILDID", "1207"),
            ("SYSTEM_STAGENAME", "deploy"),
            ("SYSTEM_PHASENAME", "release"),
            ("SYSTEM_JOBNAME", "linux"),
            ("SYSTEM_JOBATTEMPT", "1"),
            ("SYSTEM_JOBID", "0c3a0b55-0000-4000-8000-000000000001"),
        ],
        retry: &[
            ("SYSTEM_JOBATTEMPT", "2"),
            ("SYSTEM_JOBID", "0c3a0b55-0000-4000-8000-000000000002"),
        ],
        leg: Some(("SYSTEM_JOBNAME", "windows")),
        step: None,
        reruns_keep_the_key: true,
    },
    Case {
        provider: "buildkite",
        first: &[
            ("BUILDKITE", "true"),
            ("BUILDKITE_ORGANIZATION_SLUG", "acme"),
            ("BUILDKITE_PIPELINE_SLUG", "app"),
            ("BUILDKITE_BUILD_ID", "0190d1a2-7b3c-4d5e-8f90-a1b2c3d4e5f6"),
            ("BUILDKITE_STEP_ID", "0190d1a2-0000-4000-8000-000000000010"),
            ("BUILDKITE_PARALLEL_JOB", "0"),
            ("BUILDKITE_RETRY_COUNT", "0"),
            ("BUILDKITE_JOB_ID", "0190d1a2-0000-4000-8000-000000000100"),
        ],
        retry: &[
            ("BUILDKITE_RETRY_COUNT", "1"),
            ("BUILDKITE_JOB_ID", "0190d1a2-0000-4000-8000-000000000101"),
        ],
        leg: Some(("BUILDKITE_PARALLEL_JOB", "1")),
        step: Some(("BUILDKITE_STEP_ID", "0190d1a2-0000-4000-8000-000000000011")),
        reruns_keep_the_key: false,
    },
    Case {
        provider: "circleci",
        first: &[
            ("CIRCLECI", "true"),
            (
                "CIRCLE_WORKFLOW_WORKSPACE_ID",
                "6c1e3f0a-2b4d-4e6f-8a0b-1c2d3e4f5a6b",
            ),
            ("CIRCLE_WORKFLOW_ID", "6c1e3f0a-2b4d-4e6f-8a0b-1c2d3e4f5a6b"),
            ("CIRCLE_BUILD_NUM", "100"),
            ("CIRCLE_JOB", "deploy"),
            ("CIRCLE_NODE_INDEX", "0"),
        ],
        // "Rerun workflow from failed": a new workflow and job number, the
        // same workspace.
        retry: &[
            ("CIRCLE_WORKFLOW_ID", "9f9f9f9f-2b4d-4e6f-8a0b-1c2d3e4f5a6b"),
            ("CIRCLE_BUILD_NUM", "107"),
        ],
        leg: Some(("CIRCLE_NODE_INDEX", "1")),
        step: Some(("CIRCLE_JOB", "notify")),
        reruns_keep_the_key: true,
    },
    Case {
        provider: "bitbucket",
        first: &[
            ("BITBUCKET_BUILD_NUMBER", "77"),
            (
                "BITBUCKET_REPO_UUID",
                "{00000000-0000-4000-8000-000000000001}",
            ),
            (
                "BITBUCKET_PIPELINE_UUID",
                "{00000000-0000-4000-8000-000000000002}",
            ),
            (
                "BITBUCKET_STEP_UUID",
                "{00000000-0000-4000-8000-000000000003}",
            ),
            ("BITBUCKET_STEP_RUN_NUMBER", "1"),
        ],
        retry: &[("BITBUCKET_STEP_RUN_NUMBER", "2")],
        leg: Some(("BITBUCKET_PARALLEL_STEP", "1")),
        step: Some((
            "BITBUCKET_STEP_UUID",
            "{00000000-0000-4000-8000-000000000004}",
        )),
        reruns_keep_the_key: true,
    },
    Case {
        provider: "travis",
        first: &[
            ("TRAVIS", "true"),
            ("TRAVIS_REPO_SLUG", "acme/app"),
            ("TRAVIS_BUILD_ID", "987654"),
            ("TRAVIS_JOB_ID", "987655"),
        ],
        retry: &[("TRAVIS_JOB_RESTARTED", "true")],
        leg: Some(("TRAVIS_JOB_ID", "987656")),
        step: None,
        reruns_keep_the_key: true,
    },
    Case {
        provider: "woodpecker",
        first: &[
            ("CI", "woodpecker"),
            ("CI_SYSTEM_URL", "https://ci.example"),
            ("CI_REPO", "acme/app"),
            ("CI_PIPELINE_NUMBER", "12"),
            ("CI_PIPELINE_PARENT", "0"),
            ("CI_WORKFLOW_NAME", "deploy"),
            ("CI_STEP_NAME", "create"),
        ],
        // A restart is pipeline 13 with parent 12.
        retry: &[("CI_PIPELINE_NUMBER", "13"), ("CI_PIPELINE_PARENT", "12")],
        leg: Some(("CI_WORKFLOW_NAME", "deploy-eu")),
        step: Some(("CI_STEP_NAME", "notify")),
        reruns_keep_the_key: true,
    },
    Case {
        provider: "drone",
        first: &[
            ("DRONE", "true"),
            ("DRONE_SYSTEM_HOST", "drone.example"),
            ("DRONE_REPO", "acme/app"),
            ("DRONE_BUILD_NUMBER", "5"),
            ("DRONE_STAGE_NAME", "default"),
            ("DRONE_STEP_NAME", "deploy"),
        ],
        retry: &[],
        leg: Some(("DRONE_STAGE_NAME", "arm64")),
        step: Some(("DRONE_STEP_NAME", "notify")),
        reruns_keep_the_key: false,
    },
    Case {
        provider: "teamcity",
        first: &[
            ("TEAMCITY_VERSION", "2025.07"),
            ("TEAMCITY_PROJECT_NAME", "App"),
            ("TEAMCITY_BUILDCONF_NAME", "Deploy"),
            ("BUILD_NUMBER", "3"),
        ],
        retry: &[],
        leg: Some(("TEAMCITY_BUILDCONF_NAME", "Deploy EU")),
        step: None,
        reruns_keep_the_key: false,
    },
    Case {
        provider: "codebuild",
        first: &[(
            "CODEBUILD_BUILD_ARN",
            "arn:aws:codebuild:eu-west-1:123456789012:build/app:8d2a",
        )],
        retry: &[],
        leg: None,
        step: None,
        reruns_keep_the_key: false,
    },
    Case {
        provider: "cloudbuild",
        first: &[
            ("PROJECT_ID", "acme-prod"),
            ("BUILD_ID", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        ],
        retry: &[],
        leg: None,
        step: None,
        reruns_keep_the_key: false,
    },
];

/// The key `idempotent-request key` prints for this environment, and its log.
fn key(env: &[(&str, &str)], extra: &[(&str, &str)], scope: &str) -> (String, String) {
    let mut vars: Vec<(&str, &str)> = env.to_vec();
    for &(name, value) in extra {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    }
    let assert = client()
        .envs(vars)
        .args(["key", "--url", "https://api.example/deploy", "--json", "{}"])
        .args(["--key-scope", scope])
        .assert()
        .success();
    let output = assert.get_output();
    (
        String::from_utf8(output.stdout.clone()).unwrap(),
        String::from_utf8(output.stderr.clone()).unwrap(),
    )
}

#[test]
fn every_provider_keeps_its_key_across_a_retry_and_tells_legs_and_steps_apart() {
    let providers = idempotent_request::client::key::provider::PROVIDERS;
    assert_eq!(
        CASES.iter().map(|c| c.provider).collect::<Vec<_>>(),
        providers.iter().map(|p| p.name).collect::<Vec<_>>(),
        "every provider in the table has a case here"
    );
    for case in CASES {
        let row = providers.iter().find(|p| p.name == case.provider).unwrap();
        let (first, log) = key(case.first, &[], "run");
        let (retry, _) = key(case.first, case.retry, "run");
        assert_eq!(first, retry, "{}: a retry keeps the key", case.provider);
        assert!(
            log.contains(&format!("derived from the {} run identity", case.provider)),
            "{}: {log}",
            case.provider
        );
        assert_eq!(
            !log.contains("starts a new build with a new key"),
            case.reruns_keep_the_key,
            "{}: {log}",
            case.provider
        );
        if row.attempt.is_some() {
            let (first, _) = key(case.first, &[], "attempt");
            let (retry, _) = key(case.first, case.retry, "attempt");
            assert_ne!(first, retry, "{}: attempt scope, a new key", case.provider);
        }
        for other in [case.leg, case.step].into_iter().flatten() {
            let (theirs, _) = key(case.first, &[other], "run");
            assert_ne!(
                first, theirs,
                "{}: {other:?} gets its own key",
                case.provider
            );
        }
    }
}

#[test]
fn an_explicit_key_answers_the_new_build_caveat() {
    let jenkins = CASES.iter().find(|c| c.provider == "jenkins").unwrap();
    let extra = [("INPUT_IDEMPOTENCY_KEY", "deploy-v1.2.3-production")];
    let (explicit, log) = key(jenkins.first, &extra, "run");
    assert_eq!(explicit, "deploy-v1.2.3-production\n");
    assert!(!log.contains("starts a new build"), "{log}");
    // A rebuild (a new build number) sends the same explicit key.
    let rebuild = [extra[0], ("BUILD_NUMBER", "42")];
    assert_eq!(key(jenkins.first, &rebuild, "run").0, explicit);
}

/// The Jenkins example's `sh` step, run with the environment Jenkins gives
/// it (there is no Jenkins here: the provider and the command line are
/// what is tested). Two runs stand for two tries of `retry(3)`: both send
/// one key, and the API acts once.
#[test]
fn the_jenkinsfile_example_sends_one_key_on_every_try() {
    use std::sync::Arc;
    use support::{AfterCommit, Server, Toy};
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/Jenkinsfile"))
            .unwrap();
    let fence = "'''";
    let start = text.find(&format!("sh {fence}")).unwrap() + 3 + fence.len();
    let script = &text[start..start + text[start..].find(fence).unwrap()];
    let toy = Arc::new(Toy::default());
    let api = Server::start(toy.handler(AfterCommit::Drop));
    let bin = assert_cmd::cargo::cargo_bin("idempotent-request");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let jenkins = CASES.iter().find(|c| c.provider == "jenkins").unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("bash")
            .args(["-eu", "-c", script])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", &path)
            .envs(jenkins.first.iter().copied())
            .env("DEPLOY_API", api.url("/api"))
            .env("TARGET_ENV", "production")
            .env("DEPLOY_TOKEN", "s3cret-from-withCredentials")
            .env("GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
            // Where the kept body file goes outside GitHub Actions.
            .env("TMPDIR", dir.path())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("deployment.json")).unwrap())
                .unwrap();
        assert_eq!(result["status"], 201);
        assert_eq!(result["body"], "{\"deployment\":1}");
        let body_file = std::path::Path::new(result["body-file"].as_str().unwrap());
        assert!(body_file.starts_with(dir.path()), "{body_file:?}");
        assert_eq!(std::fs::read(body_file).unwrap(), b"{\"deployment\":1}");
        keys.push(result["idempotency-key"].as_str().unwrap().to_owned());
        assert!(
            log.contains("derived from the jenkins run identity"),
            "{log}"
        );
        assert!(!log.contains("s3cret"), "{log}");
    }
    assert_eq!(keys[0], keys[1]);
    assert_eq!(toy.effects(), 1);
    let request = &api.requests()[0];
    assert_eq!(request.path, "/api/deployments");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer s3cret-from-withCredentials")
    );
    assert_eq!(
        request.body,
        br#"{"ref": "0123456789abcdef0123456789abcdef01234567", "environment": "production"}"#
    );
}
