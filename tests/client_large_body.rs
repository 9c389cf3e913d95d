//! A 200 MiB `body-file` is sent whole and hashed for the key with memory
//! that does not grow with the body. The client's own peak RSS comes from
//! `wait4` on its pid, so other tests' children in this binary never count.
// Unix only: the peak memory of the child comes from wait4.
#![cfg(unix)]

use crate::support;

use sha2::{Digest, Sha256};
use std::io::Write;
use support::{Reply, Response, Server};

const SIZE: u64 = 200 << 20;

/// Runs the client with `args` (empty environment, output discarded, its
/// stderr kept in `dir` for a failure message); returns whether it
/// succeeded, its stderr and its own peak resident set in bytes.
#[allow(unsafe_code)]
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also reports its memory"
)]
fn run_client_measured(dir: &std::path::Path, args: &[&str]) -> (bool, String, u64) {
    let stderr_path = dir.join("client-stderr.txt");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_idempotent-request"))
        .env_clear()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, writing into values we own; the
    // `Child` is not waited for again.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let succeeded = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (
        succeeded,
        stderr,
        u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    )
}

#[test]
fn body_file_of_200_mib_streams_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut expected = Sha256::new();
    for _ in 0..(SIZE >> 20) {
        file.write_all(&block).unwrap();
        expected.update(&block);
    }
    drop(file);
    let expected: [u8; 32] = expected.finalize().into();

    let server = Server::start(|_| Reply::Respond(Response::new(201)));
    let url = server.url("/upload");
    let (succeeded, stderr, peak) = run_client_measured(
        dir.path(),
        &[
            "--url",
            &url,
            "--key-salt",
            "big",
            "--body-file",
            path.to_str().unwrap(),
        ],
    );
    assert!(succeeded, "{stderr}");
    let request = &server.requests()[0];
    assert_eq!(request.body_len, SIZE);
    assert_eq!(request.body_sha256, expected);
    assert!(
        peak < 64 << 20,
        "client peak RSS {} MiB for a 200 MiB body",
        peak >> 20
    );
}
