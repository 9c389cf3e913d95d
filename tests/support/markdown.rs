//! GitHub-flavoured Markdown rendered the way GitHub renders a step
//! summary: cmark-gfm (the PyPI package `cmarkgfm`, which `scripts/test.sh`
//! installs into `target/test-tools/venv`) with GitHub's extensions, and raw
//! HTML kept, so that any HTML a summary lets through is seen.

use std::io::Write;
use std::process::{Command, Stdio};

fn python() -> String {
    if let Ok(python) = std::env::var("IDEMPOTENT_REQUEST_TEST_PYTHON") {
        return python;
    }
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-tools/venv/bin/python3"
    );
    if std::path::Path::new(venv).exists() {
        venv.to_owned()
    } else {
        "python3".to_owned()
    }
}

/// `markdown` as HTML.
pub fn to_html(markdown: &str) -> String {
    const SCRIPT: &str = "import sys, cmarkgfm\n\
        from cmarkgfm.cmark import Options\n\
        text = sys.stdin.read()\n\
        sys.stdout.write(cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE))\n";
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(markdown.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "rendering needs the PyPI package cmarkgfm (bash scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Fails when `html` holds a link, an image or any tag a summary never
/// writes itself.
pub fn assert_no_markup_from_outside(html: &str) {
    const OWN: [&str; 12] = [
        "h3", "table", "thead", "tbody", "tr", "th", "td", "p", "ul", "li", "code", "br",
    ];
    for tag in html.split('<').skip(1) {
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            OWN.contains(&name.as_str()),
            "the summary renders a `<{name}` from outside text:\n{html}"
        );
    }
}
