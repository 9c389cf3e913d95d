//! How long a request can wait behind the SQLite sweep (`scripts/bench-sweep.sh`).
//!
//! Fills a database with N expired records (default 1,000,000), copies it,
//! and then, on the first copy, sweeps with the store's own batched sweep
//! while claims arrive about once a millisecond, reporting the slowest. The baseline
//! in the same run is the second copy's whole backlog deleted by one
//! statement, as the sweep did before it was batched: on the store's only
//! connection, every request waited for all of it.
//!
//! `cargo run --release --features gateway --example sweep_stall -- [N]`

use idempotent_request::gateway::store::sqlite::{Durability, SqliteStore};
use idempotent_request::gateway::store::{RecordId, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NOW: u64 = 1_800_000_000_000;

/// Writes `n` done records that expired before `NOW`, as the gateway
/// stores them (about 200 bytes of answer each).
fn fill(path: &std::path::Path, n: u64) {
    drop(SqliteStore::open(path, Durability::Process).expect("the store opens"));
    let mut connection = rusqlite::Connection::open(path).expect("the database opens");
    let transaction = connection.transaction().expect("a transaction");
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO records (caller, key, fingerprint, expires_at, outcome, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .expect("the insert statement");
        let outcome = vec![7u8; 200];
        for i in 0..n {
            let at = NOW - 86_400_000 - i;
            insert
                .execute(rusqlite::params![
                    &[1u8; 32][..],
                    format!("expired-{i}"),
                    &[2u8; 32][..],
                    at as i64 + 1,
                    &outcome,
                    at as i64
                ])
                .expect("an insert");
        }
    }
    transaction.commit().expect("the commit");
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("N is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (batched, single) = (dir.path().join("batched.db"), dir.path().join("single.db"));
    let filled = Instant::now();
    fill(&batched, n);
    std::fs::copy(&batched, &single).expect("the copy");
    eprintln!("filled {n} expired records in {:.1?}", filled.elapsed());

    // Baseline: one statement for the whole backlog.
    let connection = rusqlite::Connection::open(&single).expect("the copy opens");
    let started = Instant::now();
    let deleted = connection
        .execute("DELETE FROM records WHERE expires_at <= ?1", [NOW as i64])
        .expect("the delete");
    let one_statement = started.elapsed();
    drop(connection);

    // The store's sweep, with claims running throughout.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (swept, sweep_time, claims, worst, (median, p99, p999, over)) = runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(&batched, Durability::Process).expect("the store"));
        let done = Arc::new(AtomicBool::new(false));
        let prober = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                // About 1,000 requests a second, as in the paced benchmark.
                let mut every = tokio::time::interval(Duration::from_millis(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !done.load(Ordering::SeqCst) {
                    every.tick().await;
                    let id = RecordId {
                        caller: [3; 32],
                        key: format!("probe-{i}"),
                    };
                    let started = Instant::now();
                    store
                        .claim(&id, &[4; 32], &[5; 16], NOW + 60_000, NOW)
                        .await
                        .expect("a claim");
                    latencies.push(started.elapsed());
                    i += 1;
                }
                latencies
            })
        };
        let started = Instant::now();
        let swept = store.sweep(NOW, 3_600_000).await.expect("the sweep");
        let sweep_time = started.elapsed();
        done.store(true, Ordering::SeqCst);
        let mut latencies = prober.await.expect("the prober");
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        let over = latencies
            .iter()
            .filter(|l| **l > Duration::from_millis(10))
            .count();
        (
            swept,
            sweep_time,
            latencies.len(),
            at(1.0),
            (at(0.5), at(0.99), at(0.999), over),
        )
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| sweep of {n} expired records | rows | sweep time | claims during it | p50 / p99 / p99.9 | over 10 ms | worst wait of a request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| one statement (before) | {deleted} | {:.0} ms | | | | {:.0} ms (all wait for the statement) |",
        ms(one_statement),
        ms(one_statement)
    );
    println!(
        "| batches of 100, paced (now) | {swept} | {:.0} ms | {claims} | {:.3} / {:.2} / {:.1} ms | {over} | **{:.1} ms** |",
        ms(sweep_time),
        ms(median),
        ms(p99),
        ms(p999),
        ms(worst)
    );
}
