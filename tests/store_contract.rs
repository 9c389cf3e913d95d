//! The store contract, run against every implementation: memory, SQLite and
//! a real Redis server.
#![cfg(feature = "gateway")]

mod support;

use idempotent_request::gateway::store::cached::Cached;
use idempotent_request::gateway::store::memory::MemoryStore;
use idempotent_request::gateway::store::redis::RedisStore;
use idempotent_request::gateway::store::sqlite::{Durability, SqliteStore};
use idempotent_request::gateway::store::{
    Claimed, Outcome, Record, RecordId, Store, StoredResponse,
};
use std::sync::Arc;

const NOW: u64 = 1_700_000_000_000;
const FP: [u8; 32] = [7; 32];

fn id(key: &str) -> RecordId {
    RecordId {
        caller: [1; 32],
        key: key.to_owned(),
    }
}

fn response(body: &str) -> Outcome {
    Outcome::Response(StoredResponse {
        status: 201,
        headers: vec![
            ("set-cookie".into(), b"a=1".to_vec()),
            ("set-cookie".into(), b"b=2".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ],
        body: body.as_bytes().to_vec(),
    })
}

async fn claim_exclusive_and_read_back<S: Store>(store: &S) {
    let (a, b) = ([1; 16], [2; 16]);
    assert_eq!(
        store
            .claim(&id("k"), &FP, &a, NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Won
    );
    assert_eq!(
        store
            .claim(&id("k"), &FP, &b, NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Existing(Record::InFlight {
            fingerprint: FP,
            token: a,
            lease_until: NOW + 60_000
        })
    );
    // Another caller with the same key is another record.
    let other = RecordId {
        caller: [9; 32],
        key: "k".into(),
    };
    assert_eq!(
        store
            .claim(&other, &FP, &b, NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Won
    );
}

async fn finish_stores_once_and_only_for_the_holder<S: Store>(store: &S) {
    let (holder, stranger) = ([1; 16], [2; 16]);
    store
        .claim(&id("f"), &FP, &holder, NOW + 60_000, NOW)
        .await
        .unwrap();
    assert!(
        !store
            .finish(&id("f"), &stranger, &response("x"), NOW + 1000, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew(&id("f"), &stranger, NOW + 90_000)
            .await
            .unwrap()
    );
    assert!(!store.release(&id("f"), &stranger).await.unwrap());
    assert!(store.renew(&id("f"), &holder, NOW + 90_000).await.unwrap());
    assert!(
        store
            .finish(&id("f"), &holder, &response("first"), NOW + 1000, NOW)
            .await
            .unwrap()
    );
    // A late completion never overwrites the stored record.
    assert!(
        !store
            .finish(&id("f"), &holder, &response("late"), NOW + 1000, NOW)
            .await
            .unwrap()
    );
    let again = store
        .claim(&id("f"), &FP, &stranger, NOW + 60_000, NOW)
        .await
        .unwrap();
    assert_eq!(
        again,
        Claimed::Existing(Record::Done {
            fingerprint: FP,
            outcome: response("first"),
            expires_at: NOW + 1000
        })
    );
}

async fn release_lets_the_next_claim_win<S: Store>(store: &S) {
    let (a, b) = ([1; 16], [2; 16]);
    store
        .claim(&id("r"), &FP, &a, NOW + 60_000, NOW)
        .await
        .unwrap();
    assert!(store.release(&id("r"), &a).await.unwrap());
    assert_eq!(
        store
            .claim(&id("r"), &FP, &b, NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Won
    );
}

async fn expired_records_are_never_replayed<S: Store>(store: &S) {
    let (a, b) = ([1; 16], [2; 16]);
    store
        .claim(&id("e"), &FP, &a, NOW + 60_000, NOW)
        .await
        .unwrap();
    store
        .finish(&id("e"), &a, &response("old"), NOW + 1000, NOW)
        .await
        .unwrap();
    // Replayed while live (which may cache it)…
    assert!(matches!(
        store
            .claim(&id("e"), &FP, &b, NOW + 60_000, NOW + 999)
            .await
            .unwrap(),
        Claimed::Existing(Record::Done { .. })
    ));
    // …and gone at the expiry instant, even unswept and cached.
    assert_eq!(
        store
            .claim(&id("e"), &FP, &b, NOW + 1000 + 60_000, NOW + 1000)
            .await
            .unwrap(),
        Claimed::Won
    );
}

async fn sweep_removes_expired_records<S: Store>(store: &S, sweeps: bool) {
    let a = [1; 16];
    store
        .claim(&id("s"), &FP, &a, NOW + 60_000, NOW)
        .await
        .unwrap();
    store
        .finish(&id("s"), &a, &response("s"), NOW + 1000, NOW)
        .await
        .unwrap();
    let swept = store.sweep(NOW + 5000).await.unwrap();
    if sweeps {
        assert!(swept >= 1);
    }
}

async fn lapsed_lease_becomes_outcome_unknown<S: Store>(store: &S) {
    let (crashed, later) = ([1; 16], [2; 16]);
    store
        .claim(&id("l"), &FP, &crashed, NOW + 100, NOW)
        .await
        .unwrap();
    let unknown = Outcome::Unknown("the holder crashed".into());
    // Not yet lapsed: nothing changes.
    let before = store
        .expire_lease(&id("l"), &crashed, &unknown, NOW + 10_000, NOW + 50)
        .await
        .unwrap();
    assert!(matches!(before, Some(Record::InFlight { .. })));
    let after = store
        .expire_lease(&id("l"), &crashed, &unknown, NOW + 10_000, NOW + 100)
        .await
        .unwrap();
    assert_eq!(
        after,
        Some(Record::Done {
            fingerprint: FP,
            outcome: unknown.clone(),
            expires_at: NOW + 10_000
        })
    );
    // The crashed holder's late answer does not replace it, nor is it re-claimed.
    assert!(
        !store
            .finish(&id("l"), &crashed, &response("late"), NOW + 10_000, NOW)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .claim(&id("l"), &FP, &later, NOW + 60_000, NOW + 200)
            .await
            .unwrap(),
        Claimed::Existing(Record::Done { .. })
    ));
}

async fn concurrent_claims_have_exactly_one_winner<S: Store>(store: Arc<S>) {
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim(&id("race"), &FP, &[i; 16], NOW + 60_000, NOW)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() == Claimed::Won {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn contract<S: Store>(store: Arc<S>, sweeps: bool) {
    claim_exclusive_and_read_back(&*store).await;
    finish_stores_once_and_only_for_the_holder(&*store).await;
    release_lets_the_next_claim_win(&*store).await;
    expired_records_are_never_replayed(&*store).await;
    sweep_removes_expired_records(&*store, sweeps).await;
    lapsed_lease_becomes_outcome_unknown(&*store).await;
    concurrent_claims_have_exactly_one_winner(store.clone()).await;
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::default()), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("records.db"), Durability::Process).unwrap();
    contract(Arc::new(store), true).await;
}

/// As the gateway uses it: behind the cache of done records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("records.db"), Durability::Process).unwrap();
    contract(Arc::new(Cached::new(store)), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_with_full_durability_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("records.db"), Durability::Host).unwrap();
    contract(Arc::new(store), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    {
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        store
            .claim(&id("p"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .unwrap();
        store
            .finish(&id("p"), &[1; 16], &response("kept"), NOW + 10_000, NOW)
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    assert!(matches!(
        store.claim(&id("p"), &FP, &[2; 16], NOW + 60_000, NOW).await.unwrap(),
        Claimed::Existing(Record::Done { outcome, .. }) if outcome == response("kept")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract() {
    let server = support::redis::RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // Redis expires records itself, so its sweep has nothing to count.
    contract(Arc::new(store), false).await;
}

/// As the gateway uses it: behind the cache of done records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_redis_store_keeps_the_contract() {
    let server = support::redis::RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    contract(Arc::new(Cached::new(store)), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_store_error() {
    let mut server = support::redis::RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    server.stop();
    assert!(
        store
            .claim(&id("d"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .is_err()
    );
    assert!(store.ping().await.is_err());
}
