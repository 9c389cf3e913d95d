//! The store contract, run against every implementation: memory, SQLite, a
//! real Redis server and a real PostgreSQL server.
#![cfg(feature = "gateway")]

use crate::support;

use idempotent_request::gateway::store::cached::Cached;
use idempotent_request::gateway::store::memory::MemoryStore;
use idempotent_request::gateway::store::postgres::{
    MIGRATION_LOCK, Options, PostgresStore, Statements,
};
use idempotent_request::gateway::store::redis::{LARGE_CALLS_NAME, RedisStore, UNASKED_IDLE};
use idempotent_request::gateway::store::sqlite::{Durability, SqliteStore};
use idempotent_request::gateway::store::{
    Claimed, INLINE_OUTCOME, Outcome, Record, RecordId, Store, StoredResponse,
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
            expires_at: NOW + 1000,
            stored_at: Some(NOW),
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

/// A done record whose outcome is larger than `INLINE_OUTCOME` comes back
/// from a claim by its fingerprint and size only, and `load` reads it
/// whole while it lives; small ones still come whole from the claim.
async fn large_outcomes_are_claimed_by_size_and_loaded_whole<S: Store>(store: &S) {
    let (a, b) = ([1; 16], [2; 16]);
    let body = "b".repeat(INLINE_OUTCOME + 1);
    let large = response(&body);
    assert_eq!(store.load(&id("big"), NOW, 0).await.unwrap(), None);
    store
        .claim(&id("big"), &FP, &a, NOW + 60_000, NOW)
        .await
        .unwrap();
    let in_flight = store.load(&id("big"), NOW, 0).await.unwrap();
    assert!(
        matches!(in_flight, Some(Record::InFlight { token, .. }) if token == a),
        "{in_flight:?}"
    );
    store
        .finish(&id("big"), &a, &large, NOW + 1000, NOW)
        .await
        .unwrap();
    for _ in 0..2 {
        match store
            .claim(&id("big"), &FP, &b, NOW + 60_000, NOW)
            .await
            .unwrap()
        {
            Claimed::Large { fingerprint, size } => {
                assert_eq!(fingerprint, FP);
                assert!(
                    (body.len()..body.len() + 1024).contains(&size),
                    "size {size} for a body of {}",
                    body.len()
                );
            }
            other => panic!("a large record was claimed as {other:?}"),
        }
        assert_eq!(
            store.load(&id("big"), NOW + 999, body.len()).await.unwrap(),
            Some(Record::Done {
                fingerprint: FP,
                outcome: large.clone(),
                expires_at: NOW + 1000,
                stored_at: Some(NOW),
            })
        );
    }
    assert_eq!(
        store
            .load(&id("big"), NOW + 1000, body.len())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .claim(&id("big"), &FP, &b, NOW + 1000 + 60_000, NOW + 1000)
            .await
            .unwrap(),
        Claimed::Won
    );
    // At the bound, the outcome still comes with the claim.
    let small = response(&"s".repeat(INLINE_OUTCOME / 2));
    store
        .claim(&id("small"), &FP, &a, NOW + 60_000, NOW)
        .await
        .unwrap();
    store
        .finish(&id("small"), &a, &small, NOW + 1000, NOW)
        .await
        .unwrap();
    assert!(matches!(
        store.claim(&id("small"), &FP, &b, NOW + 60_000, NOW).await.unwrap(),
        Claimed::Existing(Record::Done { outcome, .. }) if outcome == small
    ));
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
    let swept = store.sweep(NOW + 5000, 10_000).await.unwrap();
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
            expires_at: NOW + 10_000,
            stored_at: Some(NOW + 100),
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

/// The rare race: a holder stores its answer after its lease lapsed, just
/// before a claim of the same key expires the lease. `expire_lease` returns
/// the holder's record when its answer is small, and `None` (look again)
/// when it is large, which the next claim reports by its size: only `load`
/// returns a large answer.
async fn a_lease_expired_over_a_finished_answer_returns_only_a_small_one<S: Store>(store: &S) {
    let (holder, later) = ([1; 16], [2; 16]);
    let unknown = Outcome::Unknown("the holder crashed".into());
    let large = "L".repeat(INLINE_OUTCOME + 1);
    for (key, body) in [("race-small", "small"), ("race-large", large.as_str())] {
        let key = id(key);
        store
            .claim(&key, &FP, &holder, NOW + 100, NOW)
            .await
            .unwrap();
        let stored = store
            .finish(&key, &holder, &response(body), NOW + 10_000, NOW + 50)
            .await;
        assert!(stored.unwrap());
        let found = store
            .expire_lease(&key, &holder, &unknown, NOW + 10_000, NOW + 200)
            .await
            .unwrap();
        if body.len() > INLINE_OUTCOME {
            assert_eq!(found, None, "a large answer came back whole");
            let claimed = store
                .claim(&key, &FP, &later, NOW + 60_000, NOW + 200)
                .await
                .unwrap();
            assert!(matches!(claimed, Claimed::Large { .. }), "{claimed:?}");
        } else {
            assert!(
                matches!(&found, Some(Record::Done { outcome, .. }) if *outcome == response(body)),
                "{found:?}"
            );
        }
        let loaded = store.load(&key, NOW + 200, body.len()).await.unwrap();
        assert!(
            matches!(&loaded, Some(Record::Done { outcome, .. }) if *outcome == response(body)),
            "the holder's answer was replaced"
        );
    }
}

/// A claim whose answer was lost (a store timeout) is retried with the same
/// token: the retry must win, not find a stranger's claim.
async fn the_same_token_claims_again<S: Store>(store: &S) {
    let (a, b) = ([1; 16], [2; 16]);
    for token in [a, a] {
        assert_eq!(
            store
                .claim(&id("again"), &FP, &token, NOW + 60_000, NOW)
                .await
                .unwrap(),
            Claimed::Won
        );
    }
    assert!(matches!(
        store
            .claim(&id("again"), &FP, &b, NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Existing(Record::InFlight { token, .. }) if token == a
    ));
}

/// A claim whose gateway died is never re-claimed by a sweep: it becomes
/// "outcome unknown", replayed for the unknown TTL, then swept away.
async fn sweep_turns_lapsed_claims_into_unknown<S: Store>(store: &S) {
    let (dead, later) = ([1; 16], [2; 16]);
    store
        .claim(&id("orphan"), &FP, &dead, NOW + 100, NOW)
        .await
        .unwrap();
    assert!(store.sweep(NOW + 100, 5_000).await.unwrap() >= 1);
    let record = store
        .claim(&id("orphan"), &FP, &later, NOW + 60_000, NOW + 200)
        .await
        .unwrap();
    assert!(
        matches!(
            &record,
            Claimed::Existing(Record::Done { outcome: Outcome::Unknown(_), expires_at, stored_at: Some(at), .. })
                if *expires_at == NOW + 5_100 && *at == NOW + 100
        ),
        "{record:?}"
    );
    assert!(
        !store
            .finish(
                &id("orphan"),
                &dead,
                &response("late"),
                NOW + 9_000,
                NOW + 300
            )
            .await
            .unwrap()
    );
    store.sweep(NOW + 5_100, 5_000).await.unwrap();
    assert_eq!(
        store
            .claim(&id("orphan"), &FP, &later, NOW + 60_000, NOW + 5_200)
            .await
            .unwrap(),
        Claimed::Won
    );
}

async fn concurrent_claims_have_exactly_one_winner<S: Store>(store: Arc<S>) {
    claims_racing_through(&[store], "race", 50).await;
}

/// `claims` concurrent claims of `key`, each with a token of its own, spread
/// over `stores` in turn (one store, or one per replica): exactly one wins.
async fn claims_racing_through<S: Store>(stores: &[Arc<S>], key: &str, claims: u8) {
    let mut tasks = Vec::new();
    for i in 0..claims {
        let store = stores[usize::from(i) % stores.len()].clone();
        let key = id(key);
        tasks.push(tokio::spawn(async move {
            store
                .claim(&key, &FP, &[i; 16], NOW + 60_000, NOW)
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
    large_outcomes_are_claimed_by_size_and_loaded_whole(&*store).await;
    sweep_removes_expired_records(&*store, sweeps).await;
    the_same_token_claims_again(&*store).await;
    if sweeps {
        sweep_turns_lapsed_claims_into_unknown(&*store).await;
    }
    lapsed_lease_becomes_outcome_unknown(&*store).await;
    a_lease_expired_over_a_finished_answer_returns_only_a_small_one(&*store).await;
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
    let store = RedisStore::connect(&server.url(), 3_600_000, None)
        .await
        .unwrap();
    // Redis expires records itself, so its sweep has nothing to count.
    contract(Arc::new(store), false).await;
}

/// As the gateway uses it: behind the cache of done records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_redis_store_keeps_the_contract() {
    let server = support::redis::RedisServer::start();
    let store = RedisStore::connect(&server.url(), 3_600_000, None)
        .await
        .unwrap();
    contract(Arc::new(Cached::new(store)), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_store_error() {
    let mut server = support::redis::RedisServer::start();
    let store = RedisStore::connect(&server.url(), 3_600_000, None)
        .await
        .unwrap();
    server.stop();
    assert!(
        store
            .claim(&id("d"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .is_err()
    );
    assert!(store.ping().await.is_err());
}

/// Redis removes an orphaned claim by itself: its key expires one TTL after
/// the lease, not never (a gateway that died mid-forward leaves no key
/// behind for ever) and not at the lease (it must not become claimable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_orphaned_claims_expire_one_ttl_after_their_lease() {
    let server = support::redis::RedisServer::start();
    let orphan_ttl = 600_000;
    let store = RedisStore::connect(&server.url(), orphan_ttl, None)
        .await
        .unwrap();
    store
        .claim(&id("orphan"), &FP, &[1; 16], NOW + 30_000, NOW)
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("idempotency-gateway:{}:orphan", "01".repeat(32));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        pttl > 30_000 && pttl <= 30_000 + orphan_ttl as i64,
        "the claim key's expiry is {pttl} ms"
    );
}

/// A large answer is given the time to move it, on a connection of its
/// own: a 96 MiB answer (an allowance of 5 s) is stored while Redis holds
/// writes (`CLIENT PAUSE … WRITE`) for 2.5 s after it has arrived, longer
/// than a small call may take; meanwhile a small record is read on the
/// shared connection without waiting behind it; and the answer is then
/// claimed by its size and loaded whole. Large calls reuse their
/// connections, and replace one Redis closed while it sat idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_large_answer_is_given_the_time_to_move_it() {
    use idempotent_request::gateway::store::allowance::CALL_TIMEOUT;
    use std::time::{Duration, Instant};
    let server = support::redis::RedisServer::start();
    let store = Arc::new(
        RedisStore::connect(&server.url(), 3_600_000, None)
            .await
            .unwrap(),
    );
    let (small, large, token) = (id("small"), id("large"), [1; 16]);
    stored(&*store, &small, &token, &response("small")).await;
    let won = store.claim(&large, &FP, &token, NOW + 60_000, NOW).await;
    assert_eq!(won.unwrap(), Claimed::Won);
    let body = "x".repeat(96 << 20);
    assert_eq!(server.command("CLIENT PAUSE 60000 WRITE"), "+OK");
    let finish = tokio::spawn({
        let (store, large, answer) = (store.clone(), large.clone(), response(&body));
        async move {
            store
                .finish(&large, &token, &answer, NOW + 60_000, NOW)
                .await
        }
    });
    // The large finish has reached Redis whole and waits out the pause
    // (a postponed command blocks its client).
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            !finish.is_finished() && Instant::now() < deadline,
            "the large finish never waited in Redis"
        );
        let clients: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut admin)
            .await
            .unwrap();
        if !clients.contains("blocked_clients:0") {
            break;
        }
        tokio::task::yield_now().await;
    }
    let held = Instant::now();
    match store.load(&small, NOW, 0).await {
        Ok(Some(Record::Done { outcome, .. })) => assert_eq!(outcome, response("small")),
        other => panic!(
            "the small record was not read: {:?}",
            other.map(|r| r.is_some())
        ),
    }
    // The fault: the write is held longer than a small call may last.
    tokio::time::sleep_until((held + CALL_TIMEOUT + Duration::from_millis(500)).into()).await;
    assert_eq!(server.command("CLIENT UNPAUSE"), "+OK");
    let finished = finish.await.unwrap();
    assert!(finished.unwrap(), "the large answer was not stored");
    claimed_by_size_and_loaded_whole(&*store, &large, &body, "96 MiB").await;
    // A connection that moved more than KEPT_UP_TO is closed, not kept
    // with the buffers it grew.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        if !clients.contains(&format!(" name={LARGE_CALLS_NAME} ")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a large-call connection was kept: {clients}"
        );
        tokio::task::yield_now().await;
    }
    let medium = id("medium");
    let answer = response(&"m".repeat(INLINE_OUTCOME * 2));
    stored(&*store, &medium, &token, &answer).await;
    let loads_whole = async || match store.load(&medium, NOW, answer.size()).await.unwrap() {
        Some(Record::Done { outcome, .. }) => assert!(outcome == answer),
        _ => panic!("no stored answer"),
    };
    // Large calls reuse their connections rather than open one each.
    let mut opened = async || -> u64 {
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut admin)
            .await
            .unwrap();
        let field = stats
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"));
        field.unwrap().trim().parse().unwrap()
    };
    let before = opened().await;
    for _ in 0..3 {
        loads_whole().await;
    }
    assert_eq!(opened().await, before, "a large call opened a connection");
    // One Redis closed while it sat idle (a second or more: asked with
    // PING) is replaced, not used.
    let mut killer = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut killer)
        .await
        .unwrap();
    let large_ids: Vec<&str> = list
        .lines()
        .filter(|line| line.contains(&format!(" name={LARGE_CALLS_NAME} ")))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert!(!large_ids.is_empty(), "{list}");
    for id in large_ids {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut killer)
            .await
            .unwrap();
        assert_eq!(killed, 1);
    }
    tokio::time::sleep(UNASKED_IDLE).await;
    loads_whole().await;
}

/// At most four large calls run at once: with four loads of a 24 MiB
/// answer (an allowance of 2.75 s) held back on their way from Redis (a
/// relay), a fifth waits 2 s for its turn and fails, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_runs_at_most_four_large_calls_at_once() {
    use idempotent_request::gateway::store::redis::LARGE_AT_ONCE;
    use std::time::{Duration, Instant};
    let server = support::redis::RedisServer::start();
    let server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let relay =
        support::relay::SlowLargeReplies::start(server_addr, 8 << 20, Duration::from_secs(10));
    let url = format!("redis://{}/0", relay.addr);
    let store = Arc::new(RedisStore::connect(&url, 3_600_000, None).await.unwrap());
    let (key, token) = (id("turns"), [1; 16]);
    let answer = response(&"q".repeat(24 << 20));
    stored(&*store, &key, &token, &answer).await;
    let size = answer.size();
    let held: Vec<_> = (0..LARGE_AT_ONCE)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.load(&key, NOW, size).await.map(drop) })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.holding() < LARGE_AT_ONCE {
        assert!(
            Instant::now() < deadline,
            "the loads never reached the relay"
        );
        tokio::task::yield_now().await;
    }
    let fifth = store.load(&key, NOW, size).await;
    let error = fifth.expect_err("a fifth large call ran").0;
    assert!(error.contains("turn"), "{error}");
    // Held back past their allowance, the four time out.
    for call in held {
        call.await.unwrap().ok();
    }
}

/// Claims `key` with `token` and stores `outcome` over the claim.
async fn stored(store: &impl Store, key: &RecordId, token: &[u8; 16], outcome: &Outcome) {
    let won = store.claim(key, &FP, token, NOW + 60_000, NOW).await;
    assert_eq!(won.unwrap(), Claimed::Won);
    let finished = store.finish(key, token, outcome, NOW + 60_000, NOW).await;
    assert!(finished.unwrap(), "the answer was not stored");
}

/// The stored answer `body` (over `INLINE_OUTCOME`) is claimed by its size,
/// as the proxy claims it, and loaded whole with that size; `what` names
/// the case in a failure.
async fn claimed_by_size_and_loaded_whole(
    store: &impl Store,
    key: &RecordId,
    body: &str,
    what: &str,
) {
    let claimed = store.claim(key, &FP, &[2; 16], NOW + 60_000, NOW).await;
    let Ok(Claimed::Large { size, .. }) = claimed else {
        panic!(
            "{what}: not claimed by its size: {:?}",
            claimed.map(|c| matches!(c, Claimed::Won))
        );
    };
    assert!(size > body.len(), "{what}: a size of {size}");
    match store.load(key, NOW, size).await {
        Ok(Some(Record::Done {
            outcome: Outcome::Response(answer),
            ..
        })) => assert!(answer.body == body.as_bytes(), "{what}"),
        Ok(_) => panic!("{what}: no stored answer"),
        Err(e) => panic!("{what}: the load failed: {e}"),
    }
}

/// A large answer is read in the time its size needs: `store` reaches its
/// server through a relay that holds a reply back for 2.5 s once 8 MiB of
/// it have come (longer than a small call may take); a 96 MiB answer (an
/// allowance of 5 s) is loaded whole.
async fn a_large_answer_is_read_in_the_time_it_needs(store: impl Store, key: &str) {
    let body = "r".repeat(96 << 20);
    stored(&store, &id(key), &[1; 16], &response(&body)).await;
    claimed_by_size_and_loaded_whole(&store, &id(key), &body, key).await;
}

/// Holds a reply back for 2.5 s once 8 MiB of it have come.
fn slow_large_replies(port: u16) -> support::relay::SlowLargeReplies {
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let hold = std::time::Duration::from_millis(2500);
    support::relay::SlowLargeReplies::start(server, 8 << 20, hold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_large_answer_is_read_in_the_time_it_needs() {
    let server = support::redis::RedisServer::start();
    let relay = slow_large_replies(server.port);
    let url = format!("redis://{}/0", relay.addr);
    let store = RedisStore::connect(&url, 3_600_000, None).await.unwrap();
    a_large_answer_is_read_in_the_time_it_needs(store, "read-slowly").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_answer_is_read_in_the_time_it_needs() {
    let server = support::postgres::PostgresServer::start();
    let relay = slow_large_replies(server.port);
    let url = format!("postgres://gateway@{}/postgres", relay.addr);
    for statements in [Statements::Prepared, Statements::Unnamed] {
        let options = Options {
            statements,
            ..Options::default()
        };
        let store = PostgresStore::connect(&url, &options, None).await.unwrap();
        let key = format!("read-slowly-{statements:?}");
        a_large_answer_is_read_in_the_time_it_needs(store, &key).await;
    }
}

/// The sweep deletes a backlog larger than one batch, in batches.
async fn sweep_clears_a_backlog_larger_than_one_batch(store: impl Store) {
    use idempotent_request::gateway::store::SWEEP_BATCH;
    let backlog = SWEEP_BATCH * 2 + 37;
    for n in 0..backlog {
        let key = format!("backlog-{n}");
        store
            .claim(&id(&key), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .unwrap();
        store
            .finish(&id(&key), &[1; 16], &response("x"), NOW + 10, NOW)
            .await
            .unwrap();
    }
    assert_eq!(store.sweep(NOW + 10, 1_000).await.unwrap(), backlog as u64);
    assert_eq!(store.sweep(NOW + 10, 1_000).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sweep_clears_a_backlog_larger_than_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("records.db"), Durability::Process).unwrap();
    sweep_clears_a_backlog_larger_than_one_batch(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_the_contract() {
    let server = support::postgres::PostgresServer::start();
    let store = PostgresStore::connect(&server.url(), &Options::default(), None)
        .await
        .unwrap();
    contract(Arc::new(store), true).await;
}

/// As the gateway uses it: behind the cache of done records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_postgres_store_keeps_the_contract() {
    let server = support::postgres::PostgresServer::start();
    let store = PostgresStore::connect(&server.url(), &Options::default(), None)
        .await
        .unwrap();
    contract(Arc::new(Cached::new(store)), true).await;
}

/// Two stores on `url`, connected at once, as two replicas would be.
async fn two_replicas(url: &str, options: &Options) -> [Arc<PostgresStore>; 2] {
    let (a, b) = tokio::join!(
        PostgresStore::connect(url, options, None),
        PostgresStore::connect(url, options, None)
    );
    [Arc::new(a.unwrap()), Arc::new(b.unwrap())]
}

/// Claims from separate pools (as from two replicas) still have one winner,
/// and two stores migrating at once leave one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_across_replicas_have_one_winner() {
    let server = support::postgres::PostgresServer::start();
    let url = server.url();
    let replicas = two_replicas(&url, &Options::default()).await;
    claims_racing_through(&replicas, "replicas", 40).await;
}

/// Through PgBouncer in transaction mode, where each statement may run on
/// another server connection than the one before: the contract holds, and
/// claims from two replicas' pools still have one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_through_pgbouncer_in_transaction_mode_keeps_the_contract() {
    let server = support::postgres::PostgresServer::start();
    let bouncer = support::postgres::PgBouncer::transaction_mode(&server);
    let unnamed = Options {
        statements: Statements::Unnamed,
        ..Options::default()
    };
    let url = bouncer.url();
    let replicas = two_replicas(&url, &unnamed).await;
    contract(replicas[0].clone(), true).await;
    claims_racing_through(&replicas, "pooled replicas", 40).await;
}

/// Through PgBouncer in session mode, with prepared statements (the
/// default, `--store-pooler session`): the contract holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_through_pgbouncer_in_session_mode_keeps_the_contract() {
    let server = support::postgres::PostgresServer::start();
    let bouncer = support::postgres::PgBouncer::session_mode(&server);
    let url = bouncer.url();
    let replicas = two_replicas(&url, &Options::default()).await;
    contract(replicas[0].clone(), true).await;
    claims_racing_through(&replicas, "pooled replicas", 40).await;
}

/// Prepared statements through the same pooler (the gateway without
/// `--store-pooler transaction`): once a statement lands on a server
/// connection that lacks it, the call fails, and its error names the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prepared_statements_through_pgbouncer_fail_naming_the_fix() {
    let server = support::postgres::PostgresServer::start();
    let bouncer = support::postgres::PgBouncer::transaction_mode(&server);
    let store = Arc::new(
        PostgresStore::connect(&bouncer.url(), &Options::default(), None)
            .await
            .unwrap(),
    );
    // Concurrent claims over the pool's 16 connections and the pooler's 4
    // server connections, until one of them changed server connection.
    for round in 0..50u8 {
        let claims: Vec<_> = (0..32u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = id(&format!("prepared-{round}-{i}"));
                    store.claim(&key, &FP, &[i; 16], NOW + 60_000, NOW).await
                })
            })
            .collect();
        for claim in claims {
            if let Err(error) = claim.await.unwrap() {
                let error = error.to_string();
                assert!(error.contains("--store-pooler transaction"), "{error}");
                return;
            }
        }
    }
    panic!("no statement changed server connection in 50 rounds of 32 claims");
}

/// A session of the test server's superuser.
async fn superuser(server: &support::postgres::PostgresServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A statement left waiting (here for a row another session has locked)
/// does not hold up the next call: with one connection in the pool, a
/// finish that waits for the locked row fails, and a claim of another key
/// is served while the row is still locked. With prepared statements the
/// server cancels the waiting statement itself (`statement_timeout`), so it
/// never commits after its call failed; with unnamed ones (a pooler in
/// transaction mode, where the gateway sets no session setting) the
/// gateway closes the connection instead of putting it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_statement_left_waiting_does_not_hold_up_the_next_call() {
    let server = support::postgres::PostgresServer::start();
    for statements in [Statements::Prepared, Statements::Unnamed] {
        let options = Options {
            statements,
            connections: 1,
            ..Options::default()
        };
        let store = PostgresStore::connect(&server.url(), &options, None)
            .await
            .unwrap();
        assert_eq!(store.max_connections(), 1);
        let key = format!("held-{statements:?}");
        let (held, token) = (id(&key), [1; 16]);
        assert_eq!(
            store
                .claim(&held, &FP, &token, NOW + 60_000, NOW)
                .await
                .unwrap(),
            Claimed::Won
        );
        let admin = superuser(&server).await;
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT 1 FROM idempotency_gateway_records WHERE key = '{key}' FOR UPDATE"
            ))
            .await
            .unwrap();
        let finished = store
            .finish(&held, &token, &response("{}"), NOW + 60_000, NOW)
            .await;
        assert!(finished.is_err(), "{statements:?}: {finished:?}");
        let free = id(&format!("free-{statements:?}"));
        assert_eq!(
            store
                .claim(&free, &FP, &token, NOW + 60_000, NOW)
                .await
                .unwrap(),
            Claimed::Won,
            "{statements:?}"
        );
        admin.batch_execute("COMMIT").await.unwrap();
        // Until no other session runs a statement: a finish that outlived
        // its call would have committed by then.
        support::postgres::until_count(
            &admin,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            0,
        )
        .await;
        if statements == Statements::Prepared {
            // Cancelled by the server: the claim is still in flight.
            assert!(
                matches!(
                    store.load(&held, NOW, 0).await.unwrap(),
                    Some(Record::InFlight { .. })
                ),
                "the finish committed after its call failed"
            );
        }
    }
}

/// A large answer is given the time to move it: a 96 MiB answer whose write
/// the server takes longer over than a call of a small one may last (a
/// trigger sleeps 1.6 s on every update that stores more than 64 KiB, past
/// the 1.5 s a small call's statement may run; the answer's allowance is
/// 5 s) is stored, claimed by its size and loaded whole, with prepared
/// statements and unnamed ones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_answer_is_given_the_time_to_move_it() {
    let server = support::postgres::PostgresServer::start();
    for statements in [Statements::Prepared, Statements::Unnamed] {
        let options = Options {
            statements,
            ..Options::default()
        };
        let store = PostgresStore::connect(&server.url(), &options, None)
            .await
            .unwrap();
        let admin = superuser(&server).await;
        admin
            .batch_execute(
                "CREATE OR REPLACE FUNCTION slow_large() RETURNS trigger AS $$ BEGIN \
                 IF octet_length(NEW.outcome) > 65536 THEN PERFORM pg_sleep(1.6); END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE OR REPLACE TRIGGER slow_large BEFORE UPDATE \
                 ON idempotency_gateway_records FOR EACH ROW EXECUTE FUNCTION slow_large()",
            )
            .await
            .unwrap();
        let key = id(&format!("large-{statements:?}"));
        let body = "x".repeat(96 << 20);
        stored(&store, &key, &[1; 16], &response(&body)).await;
        let what = format!("{statements:?}");
        claimed_by_size_and_loaded_whole(&store, &key, &body, &what).await;
    }
}

/// A replica that starts while another holds the migration's lock (a long
/// migration) waits for it, past the sessions' 1.5 s `statement_timeout`,
/// instead of failing to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_waits_out_a_long_migration() {
    let server = support::postgres::PostgresServer::start();
    let admin = superuser(&server).await;
    admin.batch_execute("BEGIN").await.unwrap();
    admin
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    let url = server.url();
    let replica =
        tokio::spawn(async move { PostgresStore::connect(&url, &Options::default(), None).await });
    support::postgres::until_count(
        &admin,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        1,
    )
    .await;
    // Longer than a statement may run in a call.
    tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
    admin.batch_execute("COMMIT").await.unwrap();
    let store = replica.await.unwrap().unwrap();
    assert_eq!(
        store
            .claim(&id("after"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Won
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sweep_clears_a_backlog_larger_than_one_batch() {
    let server = support::postgres::PostgresServer::start();
    let store = PostgresStore::connect(&server.url(), &Options::default(), None)
        .await
        .unwrap();
    sweep_clears_a_backlog_larger_than_one_batch(store).await;
}

/// A claim is acknowledged only once its commit is flushed: a role whose
/// sessions default to `synchronous_commit=off` (a commit acknowledged
/// before its WAL is written, lost in a crash of the server) does not pass
/// that on to the store's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_commit_durably_whatever_the_role_default() {
    let server = support::postgres::PostgresServer::start();
    let sql = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let admin = sql(server.url()).await;
    admin
        .batch_execute("ALTER ROLE gateway SET synchronous_commit = off")
        .await
        .unwrap();
    let plain: String = sql(server.url())
        .await
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, "off", "a new session of the role starts with off");
    let store = PostgresStore::connect(&server.url(), &Options::default(), None)
        .await
        .unwrap();
    // Each claim's insert notes the setting its session committed with.
    admin
        .batch_execute(
            "CREATE TABLE seen (setting text);
             CREATE FUNCTION note_setting() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO seen VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;
             CREATE TRIGGER note AFTER INSERT ON idempotency_gateway_records
             FOR EACH ROW EXECUTE FUNCTION note_setting();",
        )
        .await
        .unwrap();
    // At once, so that the pool opens several connections.
    let store = Arc::new(store);
    let claims: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("durable-{n}");
                store
                    .claim(&id(&key), &FP, &[1; 16], NOW + 60_000, NOW)
                    .await
            })
        })
        .collect();
    for claim in claims {
        assert_eq!(claim.await.unwrap().unwrap(), Claimed::Won);
    }
    let seen: Vec<String> = admin
        .query("SELECT setting FROM seen", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|setting| setting == "on"), "{seen:?}");
}

/// The pool outlives the server: a stopped server is a store error (the
/// gateway answers 503), and once it is back the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_a_store_error_and_recovers_by_itself() {
    let mut server = support::postgres::PostgresServer::start();
    let store = PostgresStore::connect(&server.url(), &Options::default(), None)
        .await
        .unwrap();
    store.ping().await.unwrap();
    server.stop();
    assert!(
        store
            .claim(&id("down"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .is_err()
    );
    assert!(store.ping().await.is_err());
    server.resume();
    store.ping().await.unwrap();
    assert_eq!(
        store
            .claim(&id("down"), &FP, &[1; 16], NOW + 60_000, NOW)
            .await
            .unwrap(),
        Claimed::Won
    );
}
