//! Webhook ingestion throughput and latency: signed Stripe events sent over loopback HTTP to the
//! real server on PostgreSQL at 1, 16 and 64 concurrent senders, next to the raw PostgreSQL
//! ceiling measured in the same run (the same ledger row and guarded upsert per event, one
//! transaction each, from a plain SQL loop with as many connections as senders).
//!
//! Run with `./scripts/bench --bench ingest` (it starts a throwaway PostgreSQL with default
//! settings), or with `BILLING_SYNC_TEST_POSTGRES_URL` pointing at an admin URL of your own.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_store::Store;
use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use billing_sync_testkit::scenarios::{ScenarioEvent, stripe_lifecycle};
use billing_sync_testkit::{Backend, POSTGRES_URL_VAR, TestDatabase};
use support::{Server, http, now, stripe_signature};

const SECRET: &str = "whsec_bench_secret";
const LEVELS: [(usize, usize); 3] = [(1, 1_000), (16, 4_000), (64, 4_000)];

struct Figures {
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// `count` distinct events: copies of the Stripe lifecycle, each in its own namespace.
fn events(tag: &str, count: usize) -> Vec<ScenarioEvent> {
    let mut events = Vec::with_capacity(count);
    let mut copy = 0;
    while events.len() < count {
        events.extend(stripe_lifecycle(&format!("{tag}{copy:06}")));
        copy += 1;
    }
    events.truncate(count);
    events
}

async fn run_concurrently<F, Fut>(events: Vec<ScenarioEvent>, senders: usize, send: F) -> Figures
where
    F: Fn(ScenarioEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let count = events.len();
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (events, next, send) = (events.clone(), next.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(event) = events.get(index) else {
                    break;
                };
                let sent = Instant::now();
                send(event.clone()).await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.expect("sender"));
    }
    Figures {
        events: count,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// The ceiling: per event, one transaction with the ledger insert and one guarded upsert.
async fn raw_postgres(url: &str, tag: &str, senders: usize, count: usize) -> Figures {
    let store = Store::connect(url).await.expect("connect");
    let db = Arc::new(store.connection().clone());
    run_concurrently(events(tag, count), senders, move |event| {
        let db = db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            let ledger = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO webhook_events (provider, event_id, event_type, api_version, livemode, \
                 event_created, payload, received_at, processed_at, status, attempts) \
                 VALUES ('stripe', $1, $2, $3, false, $4, $5, now(), now(), 'processed', 1) \
                 ON CONFLICT (provider, event_id) DO NOTHING",
                [
                    event.event_id.clone().into(),
                    event.event_type.clone().into(),
                    "2026-07-29.dahlia".into(),
                    event.timestamp.into(),
                    event.payload.clone().into(),
                ],
            );
            txn.execute_raw(ledger).await.expect("ledger insert");
            let object = event.payload["data"]["object"].clone();
            let upsert = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO stripe_customers (id, raw, ordering_key, ordering_rank, synced_at, livemode) \
                 VALUES ($1, $2, $3, 1, now(), false) \
                 ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, ordering_key = excluded.ordering_key, \
                 synced_at = excluded.synced_at \
                 WHERE stripe_customers.ordering_key < excluded.ordering_key",
                [
                    object["customer"].as_str().or(object["id"].as_str()).unwrap_or("cus").to_owned().into(),
                    object.into(),
                    event.timestamp.into(),
                ],
            );
            txn.execute_raw(upsert).await.expect("guarded upsert");
            txn.commit().await.expect("commit");
        }
    })
    .await
}

async fn through_the_server(server: &Server, tag: &str, senders: usize, count: usize) -> Figures {
    let url = server.url("/api/v1/webhooks/stripe");
    let client = http();
    run_concurrently(events(tag, count), senders, move |event| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = serde_json::to_vec(&event.payload).expect("JSON");
            let response = client
                .post(url)
                .header("stripe-signature", stripe_signature(SECRET, now(), &body))
                .body(body)
                .send()
                .await
                .expect("POST");
            assert_eq!(response.status(), 200, "every event is acknowledged");
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    if std::env::var(POSTGRES_URL_VAR).is_err() {
        eprintln!("{POSTGRES_URL_VAR} is unset: run ./scripts/bench --bench ingest");
        std::process::exit(2);
    }
    let raw_db = TestDatabase::create(Backend::Postgres)
        .await
        .expect("a database");
    let raw_store = Store::connect(&raw_db.url).await.expect("connect");
    raw_store.migrate_up().await.expect("migrate");
    let server_db = TestDatabase::create(Backend::Postgres)
        .await
        .expect("a database");
    let server = Server::start(
        &server_db.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "warn,billing_sync::startup=info"),
        ],
    )
    .await;

    println!(
        "webhook ingestion on PostgreSQL, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<9} {:>8} | {:>14} {:>9} {:>9} | {:>14} {:>9} | {:>8}",
        "senders", "events", "server ev/s", "p50 ms", "p99 ms", "raw SQL ev/s", "p99 ms", "share"
    );
    for (senders, count) in LEVELS {
        let raw = raw_postgres(&raw_db.url, &format!("raw{senders}x"), senders, count).await;
        let served = through_the_server(&server, &format!("srv{senders}x"), senders, count).await;
        println!(
            "{:<9} {:>8} | {:>14.0} {:>9.2} {:>9.2} | {:>14.0} {:>9.2} | {:>7.0}%",
            senders,
            count,
            served.rate(),
            served.percentile(0.50).as_secs_f64() * 1e3,
            served.percentile(0.99).as_secs_f64() * 1e3,
            raw.rate(),
            raw.percentile(0.99).as_secs_f64() * 1e3,
            100.0 * served.rate() / raw.rate()
        );
    }
}
