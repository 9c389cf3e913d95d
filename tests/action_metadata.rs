//! action.yml against the binary's input and output tables, and the rules
//! for composite actions: every input passed through `env:` with the
//! underscore spelling, no `${{ }}` inside `run:`, bash only, no JavaScript.

use idempotent_request::client::input::table::INPUTS;
use idempotent_request::client::report::outputs::OUTPUTS;
use serde_json::Value;

fn action() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap();
    serde_saphyr::from_str(&text).expect("action.yml is valid YAML")
}

fn run_step(action: &Value) -> &Value {
    action["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["id"] == "run")
        .expect("a step with id `run`")
}

#[test]
fn every_input_matches_the_binary() {
    let action = action();
    let inputs = action["inputs"].as_object().unwrap();
    let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    let expected: Vec<&str> = INPUTS.iter().map(|i| i.name).collect();
    assert_eq!(names, expected, "inputs differ from src/inputs.rs");
    for input in INPUTS {
        let declared = &inputs[input.name];
        assert_eq!(declared["description"], input.help, "{}", input.name);
        let default = declared
            .get("default")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert_eq!(
            default,
            input.action_default.unwrap_or(input.default),
            "default of {}",
            input.name
        );
        assert_eq!(
            declared["required"],
            input.name == "url",
            "required of {}",
            input.name
        );
    }
}

#[test]
fn every_input_reaches_the_binary_through_env() {
    let action = action();
    let env = run_step(&action)["env"].as_object().unwrap();
    for input in INPUTS {
        let var = format!(
            "INPUT_{}",
            input.name.to_ascii_uppercase().replace('-', "_")
        );
        assert_eq!(
            env.get(&var).and_then(Value::as_str),
            Some(format!("${{{{ inputs.{} }}}}", input.name).as_str()),
            "{var}"
        );
    }
    assert_eq!(
        env["IDEMPOTENT_REQUEST_JOB_INDEX"],
        "${{ strategy.job-index }}"
    );
    assert_eq!(
        env["IDEMPOTENT_REQUEST_BIN"],
        "${{ steps.install.outputs.path }}"
    );
}

#[test]
fn every_output_is_declared_from_the_run_step() {
    let action = action();
    let outputs = action["outputs"].as_object().unwrap();
    let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
    let expected: Vec<&str> = OUTPUTS.iter().map(|o| o.name).collect();
    assert_eq!(names, expected);
    for output in OUTPUTS {
        assert_eq!(outputs[output.name]["description"], output.help);
        assert_eq!(
            outputs[output.name]["value"],
            format!("${{{{ steps.run.outputs.{} }}}}", output.name)
        );
    }
}

#[test]
fn composite_bash_steps_without_expressions_in_scripts() {
    let action = action();
    assert_eq!(action["runs"]["using"], "composite");
    for step in action["runs"]["steps"].as_array().unwrap() {
        assert_eq!(step["shell"], "bash", "{step}");
        assert!(step.get("uses").is_none(), "no nested actions: {step}");
        let script = step["run"].as_str().unwrap();
        assert!(
            !script.contains("${{"),
            "template expression in run: {script}"
        );
    }
}

#[test]
fn the_action_ships_no_javascript() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tracked = std::process::Command::new("git")
        .args(["ls-files"])
        .current_dir(root)
        .output()
        .unwrap();
    let files = String::from_utf8(tracked.stdout).unwrap();
    for file in files.lines() {
        assert!(
            ![".js", ".mjs", ".cjs", ".ts"]
                .iter()
                .any(|ext| file.ends_with(ext)),
            "{file}"
        );
    }
}
