//! The GitLab CI template against the binary's input table, and its copies
//! of the installer and the manifest against the files they copy: one
//! source of truth for inputs, one installer, one manifest.

use idempotent_request::client::input::table::INPUTS;
use serde_json::Value;

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/templates/gitlab/idempotent-request.yml"
);

/// The template's own inputs, which the binary does not have.
const OWN: [&str; 4] = ["job-name", "stage", "image", "download-url"];

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn documents() -> (Value, Value) {
    let text = std::fs::read_to_string(TEMPLATE).unwrap();
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).expect("the template is valid YAML");
    assert_eq!(docs.len(), 2, "a spec document and a job document");
    let job = docs.pop().unwrap();
    (docs.pop().unwrap(), job)
}

fn job(docs: &Value) -> &Value {
    &docs["$[[ inputs.job-name ]]"]
}

/// The inputs the template takes from the binary's table.
fn carried() -> impl Iterator<Item = &'static idempotent_request::client::input::table::Input> {
    INPUTS
        .iter()
        .filter(|input| !input.github_only && input.name != "dotenv-file")
}

#[test]
fn every_input_is_declared_with_the_binary_s_default_and_meaning() {
    let (spec, _) = documents();
    let inputs = spec["spec"]["inputs"].as_object().unwrap();
    let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    let expected: Vec<&str> = OWN
        .iter()
        .copied()
        .chain(carried().map(|i| i.name))
        .collect();
    assert_eq!(names, expected);
    for input in carried() {
        assert_eq!(
            inputs[input.name]["default"], input.default,
            "{}",
            input.name
        );
        assert_eq!(
            inputs[input.name]["description"], input.help,
            "{}",
            input.name
        );
    }
}

#[test]
fn every_input_reaches_the_job_as_a_variable() {
    let (_, docs) = documents();
    let variables = job(&docs)["variables"].as_object().unwrap();
    for input in carried() {
        let name = format!(
            "INPUT_{}",
            input.name.to_ascii_uppercase().replace('-', "_")
        );
        let variable = &variables[&name];
        assert_eq!(
            variable["value"],
            format!("$[[ inputs.{} ]]", input.name),
            "{name}"
        );
    }
    assert_eq!(variables["INPUT_DOTENV_FILE"], "idempotent-request.env");
    let script = job(&docs)["script"].to_string();
    assert!(
        !script.contains("$[["),
        "no input is pasted into the script text"
    );
    assert_eq!(
        job(&docs)["artifacts"]["reports"]["dotenv"],
        "idempotent-request.env"
    );
}

/// The body of the heredoc `tag` in the job's script.
fn heredoc(script: &str, tag: &str) -> String {
    let start = script
        .find(&format!("<<'{tag}'\n"))
        .unwrap_or_else(|| panic!("no {tag} heredoc"));
    let body = &script[start + tag.len() + 5..];
    let end = body
        .find(&format!("\n{tag}\n"))
        .unwrap_or_else(|| panic!("{tag} heredoc not closed"));
    format!("{}\n", &body[..end])
}

#[test]
fn the_template_carries_the_installer_and_the_manifest_unchanged() {
    let (_, docs) = documents();
    let script = job(&docs)["script"][0].as_str().unwrap().to_owned();
    assert_eq!(
        heredoc(&script, "IDEMPOTENT_REQUEST_INSTALLER"),
        read("scripts/install.sh"),
        "run: bash scripts/stamp-gitlab-template.sh templates/gitlab/idempotent-request.yml dist/manifest.json scripts/install.sh"
    );
    let manifest: Value =
        serde_json::from_str(&heredoc(&script, "IDEMPOTENT_REQUEST_MANIFEST")).unwrap();
    let expected: Value = serde_json::from_str(&read("dist/manifest.json")).unwrap();
    assert_eq!(manifest, expected);
}
