//! A 200 MiB `body-file` is sent whole and hashed for the key with memory
//! that does not grow with the body. Alone in its test binary, so the peak
//! RSS of the children of this process is the client's.
// Unix only: the peak memory of the child comes from getrusage.
#![cfg(unix)]

use crate::support;

use sha2::{Digest, Sha256};
use std::io::Write;
use support::{Reply, Response, Server, client};

const SIZE: u64 = 200 << 20;

/// Peak resident set of the largest waited-for child, in bytes.
#[allow(unsafe_code)]
fn children_peak_rss() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 * 1024
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
    client()
        .args(["--url", &server.url("/upload"), "--key-salt", "big"])
        .args(["--body-file", path.to_str().unwrap()])
        .assert()
        .success();
    let request = &server.requests()[0];
    assert_eq!(request.body_len, SIZE);
    assert_eq!(request.body_sha256, expected);
    let peak = children_peak_rss();
    assert!(
        peak < 64 << 20,
        "client peak RSS {} MiB for a 200 MiB body",
        peak >> 20
    );
}
