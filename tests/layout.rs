//! The tree is the architecture: the client, the GitHub steps and the
//! gateway share code only through `src/shared/`, and never import each
//! other except where the design says so (the client runs the GitHub
//! steps). This test reads every source file and fails on a path that
//! crosses a boundary, whether written `crate::…`, `idempotent_request::…`
//! or as a chain of `super::` that climbs out of the part.

use std::path::{Path, PathBuf};

/// The parts under `src/`, and which other parts each may name.
const PARTS: &[(&str, &[&str])] = &[
    ("client", &["shared", "github"]),
    ("github", &["shared"]),
    ("gateway", &["shared"]),
    ("shared", &[]),
];

/// The binaries, by the part they belong to.
const BINARIES: &[(&str, &str)] = &[
    ("src/main.rs", "client"),
    ("src/bin/idempotency-gateway.rs", "gateway"),
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/gateway/store/mod.rs` →
/// `["gateway", "store"]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Every top-level module a line of code names: `crate::X`,
/// `idempotent_request::X`, or `super::…::X` resolved from `module`.
fn named_parts(code: &str, module: &[String]) -> Vec<String> {
    let mut named = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &code[i..];
        if starts_word {
            if let Some(path) = rest
                .strip_prefix("crate::")
                .or_else(|| rest.strip_prefix("idempotent_request::"))
            {
                named.push(first_segment(path));
            } else if rest.starts_with("super::") {
                let mut depth = 0;
                let mut tail = rest;
                while let Some(next) = tail.strip_prefix("super::") {
                    depth += 1;
                    tail = next;
                }
                let base = module.len().saturating_sub(depth);
                let resolved = match base {
                    0 => first_segment(tail),
                    _ => module[0].clone(),
                };
                named.push(resolved);
                i += rest.len() - tail.len();
                continue;
            }
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    named.retain(|n| !n.is_empty());
    named
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The code of a file without its comment lines (doc links are allowed to
/// mention other parts; `use` lines are not).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line))
}

fn violations(file: &str, text: &str, module: &[String], part: &str) -> Vec<String> {
    let allowed = PARTS
        .iter()
        .find(|(name, _)| *name == part)
        .map_or(&[][..], |(_, allowed)| *allowed);
    let others: Vec<&str> = PARTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != part && !allowed.contains(name))
        .collect();
    let mut found = Vec::new();
    for (n, line) in code_lines(text) {
        for named in named_parts(line, module) {
            if others.contains(&named.as_str()) {
                found.push(format!("{file}:{n}: {part} names {named}: {}", line.trim()));
            }
        }
    }
    found
}

#[test]
fn parts_import_only_what_the_design_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut found = Vec::new();
    let mut checked = 0;
    for (part, _) in PARTS {
        let mut files = Vec::new();
        rust_files(&src.join(part), &mut files);
        assert!(!files.is_empty(), "src/{part} has no Rust files");
        for path in files {
            let relative = path.strip_prefix(&src).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            found.extend(violations(
                &relative.display().to_string(),
                &text,
                &module_path(relative),
                part,
            ));
            checked += 1;
        }
    }
    for (file, part) in BINARIES {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        found.extend(violations(file, &text, &[], part));
        checked += 1;
    }
    assert!(checked > 40, "only {checked} files were checked");
    assert!(
        found.is_empty(),
        "imports across parts:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_sees_every_way_of_crossing_a_boundary() {
    let gateway_store = ["gateway".to_owned(), "store".to_owned()];
    for line in [
        "use crate::client::send::transport;",
        "let x = idempotent_request::client::input::table::INPUTS;",
        "use super::super::client::report;",
        "    crate::github::api::http_client()",
    ] {
        assert!(
            !violations("t.rs", line, &gateway_store, "gateway").is_empty(),
            "{line} was not caught"
        );
    }
    for line in [
        "use super::memory::MemoryStore;",
        "use crate::shared::framing::FramedHasher;",
        "use crate::gateway::store::Record;",
        "// a doc line that mentions crate::client is fine",
        "let description = \"subcrate::client\";",
    ] {
        assert!(
            violations("t.rs", line, &gateway_store, "gateway").is_empty(),
            "{line} was refused"
        );
    }
    assert!(!violations("t.rs", "use crate::gateway::proxy;", &[], "client").is_empty());
    assert!(!violations("t.rs", "use crate::client::key;", &[], "shared").is_empty());
    assert!(violations("t.rs", "use crate::github::rerun;", &[], "client").is_empty());
}

/// The integration tests are one binary (`autotests = false`), so a file
/// in `tests/` runs only if `tests/main.rs` declares it: a new file that
/// is not declared would silently never run.
#[test]
fn every_test_file_is_a_module_of_the_one_test_binary() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(tests.join("main.rs")).unwrap();
    let declared: Vec<&str> = main
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let module = match name.strip_suffix(".rs") {
            Some("main") => continue,
            Some(module) => module.to_owned(),
            // A folder of Rust modules (support/) is declared as well.
            None if path.join("mod.rs").is_file() => name,
            None => continue,
        };
        if !declared.contains(&module.as_str()) {
            missing.push(module);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/main.rs does not declare `mod {};`: add it, or those tests never run",
        missing.join("; mod ")
    );
}
