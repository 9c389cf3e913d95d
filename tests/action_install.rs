//! scripts/install.sh, the action's installer, against a release served from
//! 127.0.0.1: download and verify, cache hit without a download, a tampered
//! asset refused, the python3 fallback, and its clear failures.
// Unix only: the installer is a bash script run with Unix tools.
#![cfg(unix)]

use crate::support;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Reply, Response, Server};

const VERSION: &str = "9.9.9";
const ASSET: &str = "idempotent-request-9.9.9-x86_64-unknown-linux-musl.tar.gz";

/// The stand-in binary inside the release archive.
const BINARY: &str = "#!/bin/sh\necho stand-in\n";

/// A release archive holding a stand-in `idempotent-request`.
fn release_asset(dir: &Path) -> Vec<u8> {
    release_asset_of(dir, BINARY)
}

/// A release archive holding `binary` as `idempotent-request`.
fn release_asset_of(dir: &Path, binary: &str) -> Vec<u8> {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("idempotent-request"), binary).unwrap();
    let archive = dir.join(ASSET);
    let status = Command::new("tar")
        .args([
            "-czf",
            archive.to_str().unwrap(),
            "-C",
            staging.to_str().unwrap(),
            "idempotent-request",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(archive).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An action checkout: the real install script and a manifest.
fn action_dir(root: &Path, manifest: &serde_json::Value) -> PathBuf {
    let dir = root.join("action");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::create_dir_all(dir.join("dist")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"),
        dir.join("scripts/install.sh"),
    )
    .unwrap();
    std::fs::write(dir.join("dist/manifest.json"), manifest.to_string()).unwrap();
    dir
}

fn manifest_for(sha256: &str) -> serde_json::Value {
    manifest_for_binary(sha256, BINARY)
}

/// The manifest of an asset with checksum `sha256` that holds `binary`.
fn manifest_for_binary(sha256: &str, binary: &str) -> serde_json::Value {
    serde_json::json!({
        "version": VERSION,
        "repository": "acme/idempotent-request",
        "assets": { "x86_64-unknown-linux-musl": {
            "name": ASSET, "sha256": sha256, "binary_sha256": sha256_hex(binary.as_bytes())
        } }
    })
}

/// The cache entry the installer uses for `repository` and an asset
/// checksum: keyed by both, not only by version and target.
fn cache_entry(root: &Path, repository: &str, sha256: &str) -> PathBuf {
    let id = sha256_hex(format!("{repository}\n{sha256}\n").as_bytes());
    root.join(format!(
        "toolcache/idempotent-request/9.9.9/x86_64-unknown-linux-musl-{}",
        &id[..32]
    ))
}

/// A planted cache entry: a binary and the marker the installer writes.
fn plant(entry: &Path, script: &str, marker: &str) {
    std::fs::create_dir_all(entry).unwrap();
    let binary = entry.join("idempotent-request");
    std::fs::write(&binary, script).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(entry.with_extension("complete"), marker).unwrap();
}

/// A PATH of symlinks to every program on the current PATH except `hidden`.
fn path_without(root: &Path, hidden: &[&str]) -> String {
    let bin = root.join(format!("path-without-{}", hidden.join("-")));
    std::fs::create_dir_all(&bin).unwrap();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if !hidden.iter().any(|h| name == *h) && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    bin.display().to_string()
}

struct Run {
    output: Output,
    path: Option<String>,
}

impl Run {
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
            + &String::from_utf8_lossy(&self.output.stderr)
    }
}

fn install(action: &Path, root: &Path, server: &str, env: &[(&str, &str)]) -> Run {
    // One output file per run: runs may go on at once.
    let output = tempfile::NamedTempFile::new_in(root).unwrap();
    let output_file = output.path().to_owned();
    let mut cmd = Command::new("bash");
    cmd.arg(action.join("scripts/install.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("RUNNER_OS", "Linux")
        .env("RUNNER_ARCH", "X64")
        .env("RUNNER_TOOL_CACHE", root.join("toolcache"))
        .env("RUNNER_TEMP", root)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SERVER_URL", server)
        .env("GITHUB_ACTION_PATH", action)
        .env("GITHUB_OUTPUT", &output_file);
    cmd.envs(env.iter().copied());
    let output = cmd.output().unwrap();
    let path = std::fs::read_to_string(&output_file)
        .ok()
        .and_then(|text| text.strip_prefix("path=").map(|p| p.trim_end().to_owned()));
    Run { output, path }
}

fn serve(asset: Vec<u8>) -> Server {
    let wanted = format!("/acme/idempotent-request/releases/download/v{VERSION}/{ASSET}");
    Server::start(move |request| {
        if request.path == wanted {
            Reply::Respond(Response::new(200).body(asset.clone()))
        } else {
            Reply::Respond(Response::new(404))
        }
    })
}

#[test]
fn verified_download_then_cache_hit_without_download() {
    let root = tempfile::tempdir().unwrap();
    let asset = release_asset(root.path());
    let action = action_dir(root.path(), &manifest_for(&sha256_hex(&asset)));
    let server = serve(asset.clone());

    let first = install(&action, root.path(), &server.url(""), &[]);
    assert!(first.output.status.success(), "{}", first.log());
    let binary = PathBuf::from(first.path.clone().expect("path output"));
    let expected_dir = cache_entry(root.path(), "acme/idempotent-request", &sha256_hex(&asset));
    assert_eq!(binary, expected_dir.join("idempotent-request"));
    let marker = expected_dir.with_extension("complete");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        sha256_hex(BINARY.as_bytes()),
        "the cache entry is marked complete, with the verified digest"
    );
    let ran = Command::new(&binary).output().unwrap();
    assert_eq!(ran.stdout, b"stand-in\n");
    assert!(first.log().contains("verified SHA-256"), "{}", first.log());
    assert_eq!(server.requests().len(), 1);

    let second = install(&action, root.path(), &server.url(""), &[]);
    assert!(second.output.status.success(), "{}", second.log());
    assert_eq!(second.path, first.path);
    assert!(
        second.log().contains("cache hit, verified"),
        "{}",
        second.log()
    );
    assert_eq!(server.requests().len(), 1, "a cache hit downloads nothing");
}

/// Jobs of one self-hosted runner host can share its tool cache: installs
/// that run at once each end with the verified binary in place, and none
/// runs or marks complete a binary another one is still writing. (Each
/// used to empty the entry before unpacking into it, so one could delete or
/// half-overwrite what another had just verified.) The binary is a few
/// MiB, so the unpacking and hashing of the runs overlap.
#[test]
fn installs_running_at_once_into_one_cache_each_get_a_verified_binary() {
    let root = tempfile::tempdir().unwrap();
    let binary = format!("{BINARY}{}", "# padding\n".repeat(800_000));
    let asset = release_asset_of(root.path(), &binary);
    let action = action_dir(
        root.path(),
        &manifest_for_binary(&sha256_hex(&asset), &binary),
    );
    let server = serve(asset.clone());
    let url = server.url("");
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| install(&action, root.path(), &url, &[])))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let entry = cache_entry(root.path(), "acme/idempotent-request", &sha256_hex(&asset));
    for run in &runs {
        assert!(run.output.status.success(), "{}", run.log());
        let path = PathBuf::from(run.path.clone().expect("path output"));
        assert_eq!(path, entry.join("idempotent-request"));
    }
    let installed = std::fs::read(entry.join("idempotent-request")).unwrap();
    assert_eq!(sha256_hex(&installed), sha256_hex(binary.as_bytes()));
    let ran = Command::new(entry.join("idempotent-request"))
        .output()
        .unwrap();
    assert_eq!(ran.stdout, b"stand-in\n");
    let names: Vec<String> = std::fs::read_dir(entry.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the entry and its marker, nothing left over: {names:?}"
    );
}

/// Regression: a cache hit was taken on the marker alone, so a binary
/// changed in a shared tool cache after install was run.
#[test]
fn a_cached_binary_changed_after_install_is_never_run() {
    let root = tempfile::tempdir().unwrap();
    let asset = release_asset(root.path());
    let action = action_dir(root.path(), &manifest_for(&sha256_hex(&asset)));
    let server = serve(asset.clone());
    let first = install(&action, root.path(), &server.url(""), &[]);
    assert!(first.output.status.success(), "{}", first.log());
    let binary = PathBuf::from(first.path.unwrap());
    // Another job on the same runner rewrites it, marker and all.
    let entry = binary.parent().unwrap();
    plant(
        entry,
        "#!/bin/sh\necho planted\n",
        &sha256_hex(BINARY.as_bytes()),
    );

    let second = install(&action, root.path(), &server.url(""), &[]);
    assert!(second.output.status.success(), "{}", second.log());
    assert!(
        second.log().contains("cache entry discarded"),
        "{}",
        second.log()
    );
    assert_eq!(server.requests().len(), 2, "a verified copy was downloaded");
    let ran = Command::new(second.path.unwrap()).output().unwrap();
    assert_eq!(ran.stdout, b"stand-in\n");
}

/// Regression: the cache was keyed by version and target only, so another
/// repository's binary of the same version was taken for a hit.
#[test]
fn another_repositorys_cache_entry_is_never_used() {
    let root = tempfile::tempdir().unwrap();
    let asset = release_asset(root.path());
    let action = action_dir(root.path(), &manifest_for(&sha256_hex(&asset)));
    let server = serve(asset.clone());
    let planted = "#!/bin/sh\necho planted\n";
    let old_layout = root
        .path()
        .join("toolcache/idempotent-request/9.9.9/x86_64-unknown-linux-musl");
    plant(&old_layout, planted, "");
    plant(
        &cache_entry(root.path(), "evil/idempotent-request", &sha256_hex(&asset)),
        planted,
        &sha256_hex(planted.as_bytes()),
    );
    let run = install(&action, root.path(), &server.url(""), &[]);
    assert!(run.output.status.success(), "{}", run.log());
    assert_eq!(server.requests().len(), 1, "downloaded and verified");
    let ran = Command::new(run.path.unwrap()).output().unwrap();
    assert_eq!(ran.stdout, b"stand-in\n");
}

#[test]
fn tampered_asset_is_refused_and_never_cached() {
    let root = tempfile::tempdir().unwrap();
    let asset = release_asset(root.path());
    let action = action_dir(root.path(), &manifest_for(&sha256_hex(&asset)));
    let mut tampered = asset.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let server = serve(tampered);

    let run = install(&action, root.path(), &server.url(""), &[]);
    assert!(!run.output.status.success());
    assert!(
        run.log()
            .contains("::error title=idempotent-request install failed::checksum mismatch"),
        "{}",
        run.log()
    );
    assert_eq!(run.path, None);
    let entry = cache_entry(root.path(), "acme/idempotent-request", &sha256_hex(&asset));
    assert!(!entry.with_extension("complete").exists());
    assert!(!entry.join("idempotent-request").exists());
}

#[test]
fn python3_reads_the_manifest_where_jq_is_absent() {
    let root = tempfile::tempdir().unwrap();
    let asset = release_asset(root.path());
    let action = action_dir(root.path(), &manifest_for(&sha256_hex(&asset)));
    let server = serve(asset);
    let path = path_without(root.path(), &["jq"]);
    let run = install(&action, root.path(), &server.url(""), &[("PATH", &path)]);
    assert!(run.output.status.success(), "{}", run.log());
    assert!(run.path.is_some());
}

#[test]
fn plain_http_is_refused_except_on_loopback() {
    let root = tempfile::tempdir().unwrap();
    let action = action_dir(root.path(), &manifest_for(&"0".repeat(64)));
    let run = install(&action, root.path(), "http://downloads.example", &[]);
    assert!(!run.output.status.success());
    assert!(run.log().contains("is not an https URL"), "{}", run.log());
}

#[test]
fn unsupported_runner_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let action = action_dir(root.path(), &manifest_for(&"0".repeat(64)));
    let run = install(
        &action,
        root.path(),
        "https://github.com",
        &[("RUNNER_OS", "FreeBSD")],
    );
    assert!(!run.output.status.success());
    assert!(
        run.log()
            .contains("no idempotent-request build for RUNNER_OS='FreeBSD'"),
        "{}",
        run.log()
    );
}

#[test]
fn checkout_without_a_release_and_without_cargo_says_to_pin_a_tag() {
    let root = tempfile::tempdir().unwrap();
    let manifest = serde_json::json!({ "version": VERSION, "repository": "", "assets": {} });
    let action = action_dir(root.path(), &manifest);
    // An action checkout holds the crate (it builds from source where it can).
    std::fs::write(action.join("Cargo.toml"), "").unwrap();
    let path = path_without(root.path(), &["cargo"]);
    let run = install(
        &action,
        root.path(),
        "https://github.com",
        &[("PATH", &path)],
    );
    assert!(!run.output.status.success());
    assert!(run.log().contains("pin a release tag"), "{}", run.log());
}
