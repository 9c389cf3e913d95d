//! The input and output tables in the code are the source of truth; these
//! tests fail when the README or `--help` drift from them.

use idempotent_request::client::input::table::INPUTS;
use idempotent_request::client::report::outputs::OUTPUTS;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the Markdown table whose header row starts with `| {first} |`.
fn table_rows(text: &str, first: &str) -> Vec<Vec<String>> {
    let header = format!("| {first} |");
    let start = text
        .find(&header)
        .unwrap_or_else(|| panic!("no `{header}` table"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn readme_lists_every_input_with_its_default_and_meaning() {
    let rows = table_rows(&readme(), "input");
    let documented: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    let expected: Vec<(String, String, String)> = INPUTS
        .iter()
        .map(|i| {
            let default = i.action_default.unwrap_or(i.default);
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{default}`")
            };
            (format!("`{}`", i.name), default, i.help.to_owned())
        })
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn readme_lists_every_output_with_its_json_type() {
    let rows = table_rows(&readme(), "output");
    let documented: Vec<[String; 4]> = rows
        .into_iter()
        .map(|r| [r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()])
        .collect();
    let expected: Vec<[String; 4]> = OUTPUTS
        .iter()
        .map(|o| {
            [
                format!("`{}`", o.name),
                o.json.name().to_owned(),
                if o.dotenv { "yes" } else { "no" }.to_owned(),
                o.help.to_owned(),
            ]
        })
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn help_lists_every_input_and_exit_code() {
    let help = idempotent_request::client::input::cli::command()
        .term_width(10_000)
        .render_long_help()
        .to_string();
    for input in INPUTS {
        assert!(
            help.contains(&format!("--{} ", input.name))
                || help.contains(&format!("--{} [", input.name)),
            "--help lacks --{}",
            input.name
        );
        if !input.default.is_empty() {
            assert!(
                help.contains(&format!("[default: {}]", input.default)),
                "--help lacks the default of {}",
                input.name
            );
        }
    }
    for code in [
        "4  a re-run refused",
        "0  success",
        "1  the final",
        "2  invalid input",
        "3  no HTTP response",
    ] {
        assert!(help.contains(code), "--help lacks exit code line {code:?}");
    }
}

#[test]
fn readme_documents_every_exit_code() {
    let rows = table_rows(&readme(), "code");
    let codes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4"]);
}

/// The examples use the tag the release workflow moves for this version
/// (`v0` for 0.y.z), and the versions they name are this one.
#[test]
fn examples_name_this_version_and_its_major_tag() {
    let version = env!("CARGO_PKG_VERSION");
    let major = format!("v{}", version.split('.').next().unwrap());
    let mut checked = 0;
    for file in ["README.md", "docs/architecture.md", "scripts/install.sh"] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for (at, _) in text.match_indices("idempotent-request@v") {
            let tag: String = text[at + "idempotent-request@".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            assert!(
                tag == major || tag == format!("v{version}"),
                "{file} uses @{tag}; this version releases as v{version} and moves {major}"
            );
            checked += 1;
        }
        for (at, _) in text.match_indices("idempotent-request-") {
            let rest = &text[at + "idempotent-request-".len()..];
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                let named: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                assert_eq!(
                    named.trim_end_matches('.'),
                    version,
                    "{file} names release {named}"
                );
            }
        }
    }
    assert!(checked >= 4, "only {checked} uses: lines found");
}

/// The provider table's rows as the code defines them.
fn provider_rows() -> Vec<Vec<String>> {
    use idempotent_request::client::key::provider::{PROVIDERS, Reruns};
    let mut rows: Vec<Vec<String>> = PROVIDERS
        .iter()
        .map(|p| {
            vec![
                format!("`{}`", p.name),
                p.title.to_owned(),
                p.detect.describe(),
                p.identity
                    .iter()
                    .map(|f| f.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
                p.attempt
                    .map_or_else(|| "none".to_owned(), |a| format!("`{a}`")),
                match p.reruns {
                    Reruns::SameKey => "the same key".to_owned(),
                    Reruns::NewBuild(what) => format!("{what}: a new build, a new key"),
                },
            ]
        })
        .collect();
    rows.push(
        [
            "`local`",
            "none of these",
            "no marker above",
            "none",
            "none",
            "a random key per invocation, unless `key-salt` is set",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    rows
}

#[test]
fn readme_provider_table_is_the_code_s_table() {
    let expected = provider_rows();
    let table: String = expected
        .iter()
        .map(|row| format!("| {} |\n", row.join(" | ")))
        .collect();
    assert_eq!(
        table_rows(&readme(), "provider"),
        expected,
        "the README's provider table should hold these rows:\n{table}"
    );
}

/// The gateway's flags table is clap's: every flag, its environment
/// variable and its default, in the order `--help` lists them.
#[cfg(feature = "gateway")]
#[test]
fn readme_lists_every_gateway_flag_with_its_variable_and_default() {
    use clap::CommandFactory;
    let readme = readme();
    let gateway = &readme[readme.find("## The gateway").expect("the gateway section")..];
    let documented: Vec<(String, String, String)> = table_rows(gateway, "flag")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    let command = idempotent_request::gateway::config::Args::command();
    let expected: Vec<(String, String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if matches!(long, "help" | "version") {
                return None;
            }
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = match (defaults.is_empty(), arg.is_required_set()) {
                (false, _) => format!("`{}`", defaults.join(",")),
                (true, true) => "required".to_owned(),
                (true, false) if long == "admin-listen" => "off".to_owned(),
                (true, false) => "none".to_owned(),
            };
            Some((format!("`--{long}`"), env, default))
        })
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn readme_verify_table_is_the_code_s_table_of_checks() {
    use idempotent_request::client::verify::checks::CHECKS;
    let rows = table_rows(&readme(), "check | required | sends | a correct server");
    let expected: Vec<Vec<String>> = CHECKS
        .iter()
        .map(|c| {
            vec![
                format!("`{}`", c.name),
                if c.required { "yes" } else { "no" }.to_owned(),
                c.sends.to_owned(),
                c.correct.to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
}

/// The README names every Debian package the test command installs, as
/// `scripts/test.sh`'s table lists them (`[command]=package`).
#[test]
fn readme_names_every_debian_package_the_test_command_installs() {
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test.sh")).unwrap();
    let packages: Vec<&str> = script
        .lines()
        .filter_map(|line| line.trim().strip_prefix('['))
        .filter_map(|entry| entry.split_once("]=").map(|(_, package)| package.trim()))
        .collect();
    assert!(packages.contains(&"pgbouncer"), "{packages:?}");
    let readme = readme();
    let listed = readme
        .split("the Debian packages `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the README lists the Debian packages the test command installs");
    let listed: Vec<&str> = listed.split_whitespace().collect();
    let mut script_packages = packages.clone();
    script_packages.sort_unstable();
    script_packages.dedup();
    let mut readme_packages = listed.clone();
    readme_packages.sort_unstable();
    assert_eq!(readme_packages, script_packages);
}

/// Every crate `Cargo.toml` depends on (the gateway's and the
/// platform-specific ones included) is in the README's dependency tables,
/// with why it is there.
#[test]
fn readme_names_every_dependency() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut section = "";
    let crates: Vec<&str> = manifest
        .lines()
        .filter_map(|line| {
            if line.starts_with('[') {
                section = line;
                return None;
            }
            let runtime = section == "[dependencies]"
                || (section.starts_with("[target.") && section.ends_with(".dependencies]"));
            let name = line.split_once(" = ").map(|(name, _)| name.trim())?;
            (runtime && !name.starts_with('#')).then_some(name)
        })
        .collect();
    assert!(
        crates.contains(&"rusqlite") && crates.contains(&"libc"),
        "{crates:?}"
    );
    let readme = readme();
    let tables = readme
        .split("## Dependencies")
        .nth(1)
        .expect("a Dependencies section");
    let cells: Vec<&str> = tables
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split(" | ").next())
        .collect();
    for name in crates {
        let quoted = format!("`{name}`");
        assert!(
            cells.iter().any(|cell| cell.contains(&quoted)),
            "README's Dependencies tables lack {quoted}"
        );
    }
}
