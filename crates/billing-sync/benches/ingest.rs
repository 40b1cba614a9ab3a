//! Webhook ingestion throughput and latency: signed Stripe subscription-lifecycle events of
//! realistic size (2–4 KB bodies, as Stripe sends them) over loopback HTTP to the real server on
//! PostgreSQL at 1, 16 and 64 concurrent senders, next to two raw PostgreSQL ceilings measured in
//! the same run on the same rows (a ledger insert and a guarded upsert of the object per event):
//!
//! - per event: one transaction per event, from a plain SQL loop with as many connections as
//!   senders: what a service that commits each event alone could reach at best;
//! - batched: ten events per transaction, the same statements: what grouping commits buys.
//!
//! Next to each run: the service's CPU time per event (from `/proc/PID/stat`), the whole
//! PostgreSQL cluster's (its postmaster and every process it started, from `/proc`; for the
//! server and for the batched ceiling), and how busy the machine's cores were (from
//! `/proc/stat`), so a figure limited by waiting shows as idle cores.
//!
//! Run with `./scripts/bench --bench ingest` (it starts a throwaway PostgreSQL with default,
//! durable settings), or with `BILLING_SYNC_TEST_POSTGRES_URL` pointing at an admin URL of your
//! own. `BENCH_INGEST_EVENTS` sets the events per level (default 8,000: 1,000 customers);
//! `BENCH_SERVER_WORKER_THREADS` starts the server with that many runtime threads
//! (`WORKER_THREADS`; default: the server's own, half the cores).
//!
//! `BENCH_PEER_COMMAND` names another webhook receiver to run the same driver against, on the
//! same cluster, after billing-sync at each level: a shell command started once with
//! `DATABASE_URL` (a fresh database of its own), `STRIPE_WEBHOOK_SECRET` and `PORT=0` in its
//! environment, which prints `listening on HOST:PORT` on its first line of output and answers
//! 2xx to each event it stored. Its line gives its figures (its own CPU from `/proc`: run the
//! receiver itself with `exec`) and billing-sync's events per second as a multiple of its.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_store::Store;
use billing_sync_store::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait,
};
use billing_sync_testkit::bench::cpu::{cluster_cpu, machine_cpu, postmaster_pid, process_cpu};
use billing_sync_testkit::bench::figures;
use billing_sync_testkit::e2e::{Server, http, now, stripe_signature};
use billing_sync_testkit::scenarios::{ScenarioEvent, subscription_lifecycles};
use billing_sync_testkit::{Backend, POSTGRES_URL_VAR, TestDatabase};

const SECRET: &str = "whsec_bench_secret";
const SENDERS: [usize; 3] = [1, 16, 64];
/// Events per transaction in the batched ceiling.
const CEILING_BATCH: usize = 10;

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
        figures::percentile(&sorted, p)
    }
}

/// Sends events `0..count` from `senders` concurrent tasks, `per_send` consecutive ones at a
/// time. `send` gets the indices: what it sends was prepared before the clock started, so the
/// figures time the receiver, not the sender building its requests.
async fn run_concurrently<F, Fut>(count: usize, senders: usize, per_send: usize, send: F) -> Figures
where
    F: Fn(Range<usize>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (next, send) = (next.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let first = next.fetch_add(per_send, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let sent = Instant::now();
                send(first..(first + per_send).min(count)).await;
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

/// What a ceiling writes for one event, serialised before the clock starts (as the server binds
/// the body's text): its ledger row and its object's row.
struct CeilingRow {
    event_id: String,
    event_type: String,
    created: i64,
    payload: String,
    object_id: String,
    object: String,
    is_subscription: bool,
}

impl CeilingRow {
    fn of(event: &ScenarioEvent) -> Self {
        let object = &event.payload["data"]["object"];
        CeilingRow {
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            created: event.timestamp,
            payload: serde_json::to_string(&event.payload).expect("JSON"),
            object_id: object["id"].as_str().unwrap_or_default().to_owned(),
            object: serde_json::to_string(object).expect("JSON"),
            is_subscription: event.event_type.starts_with("customer.subscription."),
        }
    }
}

/// The statements a ceiling runs per event: its ledger row and a guarded upsert of its object.
async fn write_event(txn: &impl ConnectionTrait, row: &CeilingRow) -> Result<(), DbErr> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO webhook_events (provider, event_id, event_type, api_version, livemode, \
         event_created, payload, received_at, processed_at, status, attempts) \
         VALUES ('stripe', $1, $2, $3, false, $4, $5, now(), now(), 'processed', 1) \
         ON CONFLICT (provider, event_id) DO NOTHING",
        [
            row.event_id.as_str().into(),
            row.event_type.as_str().into(),
            "2026-07-29.dahlia".into(),
            row.created.into(),
            row.payload.as_str().into(),
        ],
    ))
    .await?;
    let sql = if row.is_subscription {
        "INSERT INTO stripe_subscriptions (id, raw, ordering_key, ordering_rank, synced_at, \
         livemode, customer_id, status, cancel_at_period_end, items) \
         VALUES ($1, $2, $3, 1, now(), false, 'cus', 'active', false, '[]') \
         ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, ordering_key = excluded.ordering_key, \
         synced_at = excluded.synced_at WHERE stripe_subscriptions.ordering_key <= excluded.ordering_key"
    } else {
        "INSERT INTO stripe_customers (id, raw, ordering_key, ordering_rank, synced_at, livemode) \
         VALUES ($1, $2, $3, 1, now(), false) \
         ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, ordering_key = excluded.ordering_key, \
         synced_at = excluded.synced_at WHERE stripe_customers.ordering_key <= excluded.ordering_key"
    };
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [
            row.object_id.as_str().into(),
            row.object.as_str().into(),
            row.created.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// A raw ceiling: `per_transaction` events in each transaction, as many connections as senders.
async fn raw_postgres(
    db: &DatabaseConnection,
    tag: &str,
    senders: usize,
    count: usize,
    per_transaction: usize,
) -> Figures {
    let db = Arc::new(db.clone());
    let rows: Arc<Vec<CeilingRow>> = Arc::new(
        subscription_lifecycles(tag, count)
            .iter()
            .map(CeilingRow::of)
            .collect(),
    );
    run_concurrently(count, senders, per_transaction, move |chunk| {
        let (db, rows) = (db.clone(), rows.clone());
        async move {
            let txn = db.begin().await.expect("begin");
            for row in &rows[chunk] {
                write_event(&txn, row).await.expect("write an event");
            }
            txn.commit().await.expect("commit");
        }
    })
    .await
}

async fn through_the_server(url: String, tag: &str, senders: usize, count: usize) -> Figures {
    let client = http();
    // Bodies are serialised before the clock starts: the sender's work is not the server's.
    let bodies: Vec<ScenarioEvent> = subscription_lifecycles(tag, count);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|e| serde_json::to_vec(&e.payload).expect("JSON"))
            .collect(),
    );
    run_concurrently(count, senders, 1, move |chunk| {
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        async move {
            let body = bodies[chunk.start].clone();
            let response = client
                .post(url)
                .header("stripe-signature", stripe_signature(SECRET, now(), &body))
                .body(body)
                .send()
                .await
                .expect("POST");
            assert!(
                response.status().is_success(),
                "every event is acknowledged: {}",
                response.status()
            );
        }
    })
    .await
}

/// One receiver's run of the driver: its figures, the CPU time its process and the PostgreSQL
/// cluster spent meanwhile, and how busy the machine's cores were.
struct Received {
    figures: Figures,
    cpu: Duration,
    cluster: Duration,
    busy: f64,
}

/// Sends `count` events from `senders` tasks to the receiver at `url` (process `pid`, writing to
/// the cluster of `postmaster`) and measures the run.
async fn received(
    url: String,
    pid: u32,
    postmaster: u32,
    tag: &str,
    senders: usize,
    count: usize,
) -> Received {
    let cpu_before = process_cpu(pid);
    let cluster_before = cluster_cpu(postmaster);
    let machine_before = machine_cpu();
    let figures = through_the_server(url, tag, senders, count).await;
    let cpu = process_cpu(pid) - cpu_before;
    let cluster = cluster_cpu(postmaster) - cluster_before;
    let machine_after = machine_cpu();
    Received {
        figures,
        cpu,
        cluster,
        busy: (machine_after.0 - machine_before.0) as f64
            / (machine_after.1 - machine_before.1).max(1) as f64,
    }
}

/// Another webhook receiver, started by `BENCH_PEER_COMMAND`, measured with the same driver.
struct Peer {
    child: tokio::process::Child,
    url: String,
    /// Kept: the peer's database lives as long as the peer.
    _database: TestDatabase,
}

impl Peer {
    async fn start(command: &str) -> Peer {
        use tokio::io::AsyncBufReadExt;
        let database = TestDatabase::create(Backend::Postgres)
            .await
            .expect("a database for the peer");
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", command])
            .env("DATABASE_URL", &database.url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start BENCH_PEER_COMMAND");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("the peer says where it listens within 2 minutes")
            .expect("read the peer's output")
            .expect("a line from the peer");
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the peer's first line: {first:?}"))
            .trim()
            .to_owned();
        // Its later output is drained, so a chatty peer never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Peer {
            child,
            url: format!("http://{address}/"),
            _database: database,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the peer runs")
    }
}

/// The server's group-commit transactions so far and the events they held, from its metrics.
async fn transactions(server: &Server) -> (f64, f64) {
    let metrics = server.get_text("/metrics").await;
    let total = |name: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    (
        total("billing_sync_webhook_batch_size_count"),
        total("billing_sync_webhook_batch_size_sum"),
    )
}

#[tokio::main]
async fn main() {
    if std::env::var(POSTGRES_URL_VAR).is_err() {
        eprintln!("{POSTGRES_URL_VAR} is unset: run ./scripts/bench --bench ingest");
        std::process::exit(2);
    }
    let count: usize = figures::setting("BENCH_INGEST_EVENTS", 8_000);
    let raw_db = TestDatabase::create(Backend::Postgres)
        .await
        .expect("a database");
    let raw_store = Store::connect(&raw_db.url).await.expect("connect");
    raw_store.migrate_up().await.expect("migrate");
    let server_db = TestDatabase::create(Backend::Postgres)
        .await
        .expect("a database");
    let worker_threads = std::env::var("BENCH_SERVER_WORKER_THREADS").ok();
    let mut server_env = vec![
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("RUST_LOG", "warn,billing_sync::startup=info"),
    ];
    if let Some(threads) = &worker_threads {
        server_env.push(("WORKER_THREADS", threads.as_str()));
    }
    let server = Server::start(&server_db.url, &server_env).await;
    let peer = match std::env::var("BENCH_PEER_COMMAND") {
        Ok(command) => Some(Peer::start(&command).await),
        Err(_) => None,
    };

    let sizes: Vec<usize> = subscription_lifecycles("size", 8)
        .iter()
        .map(|e| serde_json::to_vec(&e.payload).expect("JSON").len())
        .collect();
    println!(
        "webhook ingestion on PostgreSQL, {} cores, server runtime threads: {}; \
         subscription-lifecycle bodies of {}..{} bytes",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        worker_threads
            .as_deref()
            .unwrap_or("the default, half the cores"),
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
    );
    println!(
        "{:<7} {:>6} | {:>10} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} | {:>10} {:>10} {:>8} | {:>9} {:>10}",
        "senders",
        "events",
        "server ev/s",
        "p50 ms",
        "p99 ms",
        "svc µs",
        "PG µs",
        "busy",
        "ev/txn",
        "per-event",
        "batched×10",
        "PG µs",
        "×per-ev",
        "of batched",
    );
    let postmaster = postmaster_pid(raw_store.connection()).await;
    for senders in SENDERS {
        let level_count = if senders == 1 { count / 10 } else { count };
        let micros_per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / level_count as f64;
        let per_event = raw_postgres(
            raw_store.connection(),
            &format!("pe{senders}x"),
            senders,
            level_count,
            1,
        )
        .await;
        let cluster_before = cluster_cpu(postmaster);
        let batched = raw_postgres(
            raw_store.connection(),
            &format!("bt{senders}x"),
            senders,
            level_count,
            CEILING_BATCH,
        )
        .await;
        let batched_cluster = cluster_cpu(postmaster) - cluster_before;
        let transactions_before = transactions(&server).await;
        let Received {
            figures: served,
            cpu,
            cluster,
            busy,
        } = received(
            server.url("/api/v1/webhooks/stripe"),
            server.pid(),
            postmaster,
            &format!("srv{senders}x"),
            senders,
            level_count,
        )
        .await;
        let transactions_after = transactions(&server).await;
        let events_per_transaction = (transactions_after.1 - transactions_before.1)
            / (transactions_after.0 - transactions_before.0).max(1.0);
        println!(
            "{:<7} {:>6} | {:>10.0} {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>5.0}% {:>6.1} | {:>10.0} {:>10.0} {:>8.0} | {:>8.2}× {:>9.0}%",
            senders,
            level_count,
            served.rate(),
            served.percentile(0.50).as_secs_f64() * 1e3,
            served.percentile(0.99).as_secs_f64() * 1e3,
            micros_per_event(cpu),
            micros_per_event(cluster),
            busy * 100.0,
            events_per_transaction,
            per_event.rate(),
            batched.rate(),
            micros_per_event(batched_cluster),
            served.rate() / per_event.rate(),
            100.0 * served.rate() / batched.rate(),
        );
        if let Some(peer) = &peer {
            let Received {
                figures: peer_served,
                cpu,
                cluster,
                busy,
            } = received(
                peer.url.clone(),
                peer.pid(),
                postmaster,
                &format!("peer{senders}x"),
                senders,
                level_count,
            )
            .await;
            println!(
                "{:<7} {:>6} | {:>10.0} {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>5.0}% {:>6} | billing-sync {:.2}× the peer's events/s",
                "  peer",
                level_count,
                peer_served.rate(),
                peer_served.percentile(0.50).as_secs_f64() * 1e3,
                peer_served.percentile(0.99).as_secs_f64() * 1e3,
                micros_per_event(cpu),
                micros_per_event(cluster),
                busy * 100.0,
                "",
                served.rate() / peer_served.rate(),
            );
        }
    }
}
