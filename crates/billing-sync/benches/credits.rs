//! Spending credits: `POST /api/v1/credits/consume` of 1 credit, each with its own idempotency
//! key, over loopback HTTP to the real server on PostgreSQL, from 16 and 64 concurrent callers,
//! against **one** organization (every request contends for the same account) and against
//! 1,000 organizations. Next to each run, a ceiling measured in the same run on the same
//! PostgreSQL: the textbook debit, one `UPDATE balances SET balance = balance - 1 WHERE
//! organization_id = $1 AND balance >= 1` per transaction from as many connections as callers
//! (no ledger, no idempotency, no HTTP).
//!
//! Also printed: the server's and PostgreSQL's CPU time per consume (from `/proc`), and how many
//! consumes the ledger's writer decided per transaction. Each measured run starts after a
//! `VACUUM (ANALYZE)` of both designs' databases and a checkpoint ([`settled`]).
//!
//! Then reservations: 64 callers on 100 organizations, each reserving 10 credits and capturing
//! part of them (0 to 9), printed as settled reservations per second (goal: at least 2,000),
//! and every organization's balance checked exact afterwards (what it was, less what was
//! captured, nothing held).
//!
//! Then the same consumes from generators outside the bench's process (`credits/external.rs`):
//! wrk against the service, pgbench against the naive design (the debit and a ledger row with
//! its key per transaction), for 16 and 64 connections and for one alone.
//!
//! Run with `./scripts/bench --bench credits` (a throwaway PostgreSQL with default, durable
//! settings). `BENCH_CREDITS_CONSUMES` sets the consumes per run (default 6,000),
//! `BENCH_CREDITS_RESERVATIONS` the reservations (default 6,000),
//! `BENCH_CREDITS_EXTERNAL_SECONDS` each external run's length (default 5).

#[path = "credits/external.rs"]
mod external;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_store::Store;
use billing_sync_store::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use billing_sync_testkit::bench::cpu::{
    cluster_cpu, cluster_processes, postmaster_pid, process_cpu,
};
use billing_sync_testkit::bench::figures;
use billing_sync_testkit::e2e::{Server, http};
use billing_sync_testkit::{Backend, POSTGRES_URL_VAR, TestDatabase};

const API_KEY: &str = "bsk_bench_0123456789abcdef0123456789abcdef";
const CALLERS: [usize; 2] = [16, 64];
const ORGANIZATIONS: usize = 1_000;

struct Figures {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        figures::percentile(&sorted, p)
    }
}

/// Runs `call(n)` for n in `0..count` from `callers` concurrent tasks.
async fn run<F, Fut>(count: usize, callers: usize, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let call = Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return latencies;
                    }
                    let sent = Instant::now();
                    call(n).await;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.expect("caller"));
    }
    Figures {
        count,
        elapsed: started.elapsed(),
        latencies,
    }
}

fn organization(n: usize, spread: usize) -> String {
    format!("org_{:04}", n % spread)
}

/// The ceiling: one conditional single-row debit per transaction.
async fn ceiling(store: &Store, callers: usize, count: usize, spread: usize) -> Figures {
    let db = Arc::new(store.connection().clone());
    run(count, callers, move |n| {
        let db = db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            let result = txn
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE bench_balances SET balance = balance - 1 \
                     WHERE organization_id = $1 AND balance >= 1",
                    [organization(n, spread).into()],
                ))
                .await
                .expect("debit");
            assert_eq!(result.rows_affected(), 1, "the balance covers every debit");
            txn.commit().await.expect("commit");
        }
    })
    .await
}

/// Consumes through the server, each with its own key.
async fn served(
    server: &Server,
    tag: &str,
    callers: usize,
    count: usize,
    spread: usize,
) -> Figures {
    let url = server.url("/api/v1/credits/consume");
    let client = http();
    let tag = tag.to_owned();
    run(count, callers, move |n| {
        let (client, url) = (client.clone(), url.clone());
        let body = serde_json::json!({"organization_id": organization(n, spread), "amount": 1,
                                      "idempotency_key": format!("{tag}-{n}")});
        async move {
            let response = client
                .post(&url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .expect("consume");
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    })
    .await
}

/// Reservations through the server: each reserves 10 credits of `organization(n, spread)`
/// and captures `n % 10` of them.
async fn reserved_and_captured(
    server: &Server,
    callers: usize,
    count: usize,
    spread: usize,
) -> Figures {
    let (reserve, capture) = (
        server.url("/api/v1/credits/reserve"),
        server.url("/api/v1/credits/capture"),
    );
    let client = http();
    run(count, callers, move |n| {
        let (client, reserve, capture) = (client.clone(), reserve.clone(), capture.clone());
        let organization = organization(n, spread);
        async move {
            let response = client
                .post(&reserve)
                .bearer_auth(API_KEY)
                .json(
                    &serde_json::json!({"organization_id": organization, "amount": 10,
                    "ttl_seconds": 600, "idempotency_key": format!("job-{n}")}),
                )
                .send()
                .await
                .expect("reserve");
            assert_eq!(response.status(), 200);
            let held: serde_json::Value = response.json().await.expect("JSON");
            let response = client
                .post(&capture)
                .bearer_auth(API_KEY)
                .json(&serde_json::json!({"organization_id": organization,
                    "reservation_id": held["reservation_id"], "amount": n % 10}))
                .send()
                .await
                .expect("capture");
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    })
    .await
}

/// The organization's balance and what it holds, as the API reads them.
async fn balance_and_held(server: &Server, organization: &str) -> (i64, i64) {
    let statement: serde_json::Value = http()
        .get(server.url(&format!("/api/v1/credits/{organization}?limit=1")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("statement")
        .json()
        .await
        .expect("JSON");
    (
        statement["balance"].as_i64().expect("balance"),
        statement["held"].as_i64().expect("held"),
    )
}

/// The writer's transactions and the requests they decided, from `/metrics`.
async fn batches(server: &Server) -> (f64, f64) {
    let text = server.get_text("/metrics").await;
    let total = |name: &str| {
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (
        total("billing_sync_credits_batch_size_count"),
        total("billing_sync_credits_batch_size_sum"),
    )
}

#[tokio::main]
async fn main() {
    if std::env::var(POSTGRES_URL_VAR).is_err() {
        eprintln!("{POSTGRES_URL_VAR} is unset: run ./scripts/bench --bench credits");
        std::process::exit(2);
    }
    let count: usize = figures::setting("BENCH_CREDITS_CONSUMES", 6_000);
    let raw_db = TestDatabase::create(Backend::Postgres).await.expect("db");
    let raw = Store::connect(&raw_db.url).await.expect("connect");
    // The server's database is on the same cluster.
    let postmaster = postmaster_pid(raw.connection()).await;
    raw.connection()
        .execute_unprepared(
            "CREATE TABLE bench_balances (organization_id text PRIMARY KEY, balance bigint NOT NULL)",
        )
        .await
        .expect("create");
    raw.connection()
        .execute_unprepared(&format!(
            "INSERT INTO bench_balances SELECT 'org_' || lpad(n::text, 4, '0'), 1000000000 \
             FROM generate_series(0, {}) AS n",
            ORGANIZATIONS - 1
        ))
        .await
        .expect("fund");
    raw.connection()
        .execute_unprepared(
            "CREATE TABLE bench_ledger (sequence bigserial PRIMARY KEY, \
             organization_id text NOT NULL, amount bigint NOT NULL, idempotency_key text NOT NULL, \
             UNIQUE (organization_id, idempotency_key))",
        )
        .await
        .expect("create the naive ledger");
    let server_db = TestDatabase::create(Backend::Postgres).await.expect("db");
    let server = Server::start(
        &server_db.url,
        &[
            ("BILLING_API_KEYS", API_KEY),
            ("RUST_LOG", "warn,billing_sync::startup=info"),
        ],
    )
    .await;
    let served_store = Store::open_existing(&server_db.url)
        .await
        .expect("the server's database");
    let both = [&raw, &served_store];
    // Every organization funded, so that no consume is refused.
    run(ORGANIZATIONS, 16, {
        let (client, url) = (http(), server.url("/api/v1/credits/grant"));
        move |n| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(
                        &serde_json::json!({"organization_id": organization(n, ORGANIZATIONS),
                        "amount": 1_000_000_000, "idempotency_key": "fund"}),
                    )
                    .send()
                    .await
                    .expect("grant");
                assert_eq!(response.status(), 200);
            }
        }
    })
    .await;

    println!(
        "credits consumed on PostgreSQL (durable), {} cores, {count} consumes of 1 per run",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{:<13} {:>7} | {:>9} {:>7} {:>7} {:>8} {:>8} {:>7} | {:>9} {:>7} | {:>8}",
        "organizations",
        "callers",
        "server/s",
        "p50 ms",
        "p99 ms",
        "srv µs",
        "pg µs",
        "per txn",
        "ceiling/s",
        "p99 ms",
        "×ceiling",
    );
    for spread in [1, ORGANIZATIONS] {
        for callers in CALLERS {
            settled(&both).await;
            let ceiling = ceiling(&raw, callers, count, spread).await;
            settled(&both).await;
            let before = (
                process_cpu(server.pid()),
                cluster_cpu(postmaster),
                batches(&server).await,
            );
            let served = served(
                &server,
                &format!("s{spread}x{callers}"),
                callers,
                count,
                spread,
            )
            .await;
            let after = (
                process_cpu(server.pid()),
                cluster_cpu(postmaster),
                batches(&server).await,
            );
            let per_consume = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
            println!(
                "{:<13} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>7.1} | {:>9.0} {:>7.2} | {:>7.2}×",
                spread,
                callers,
                served.rate(),
                served.percentile(0.50).as_secs_f64() * 1e3,
                served.percentile(0.99).as_secs_f64() * 1e3,
                per_consume(after.0 - before.0),
                per_consume(after.1.saturating_sub(before.1)),
                (after.2.1 - before.2.1) / (after.2.0 - before.2.0).max(1.0),
                ceiling.rate(),
                ceiling.percentile(0.99).as_secs_f64() * 1e3,
                served.rate() / ceiling.rate(),
            );
        }
    }

    let seconds: u64 = figures::setting("BENCH_CREDITS_EXTERNAL_SECONDS", 5);
    println!(
        "the same from outside: wrk against the service, pgbench against the naive design (a \
         debit and a ledger row per transaction), {seconds} s each"
    );
    println!(
        "{:<13} {:>7} | {:>9} {:>7} {:>7} {:>8} {:>8} | {:>9} {:>7} {:>8} | {:>8}",
        "organizations",
        "callers",
        "wrk/s",
        "p50 ms",
        "p99 ms",
        "srv µs",
        "pg µs",
        "naive/s",
        "mean ms",
        "pg µs",
        "×naive",
    );
    for (spread, callers) in [
        (1, 16),
        (1, 64),
        (ORGANIZATIONS, 16),
        (ORGANIZATIONS, 64),
        (ORGANIZATIONS, 1),
    ] {
        settled(&both).await;
        let (pg_before, backends_before) = (cluster_cpu(postmaster), cluster_processes(postmaster));
        let naive = external::pgbench(&raw_db.url, spread, callers, seconds);
        // pgbench's backends count in the postmaster's CPU once it has reaped them: until
        // then they are neither (a one-client run once read 2 µs per debit).
        let reaped = Instant::now();
        while cluster_processes(postmaster) > backends_before
            && reaped.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let naive_pg = cluster_cpu(postmaster).saturating_sub(pg_before);
        assert_eq!(naive.failed, 0, "every naive debit committed");
        settled(&both).await;
        let before = (process_cpu(server.pid()), cluster_cpu(postmaster));
        let served = external::wrk(
            &server.url("/api/v1/credits/consume"),
            API_KEY,
            spread,
            callers,
            seconds,
            &format!("wrk-s{spread}x{callers}"),
        );
        let after = (process_cpu(server.pid()), cluster_cpu(postmaster));
        assert_eq!(served.failed, 0, "every consume answered 200");
        let per = |d: Duration, count: u64| d.as_secs_f64() * 1e6 / count.max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<13} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>8.0} {:>8.0} | {:>9.0} {:>7.2} {:>8.0} | {:>7.2}×",
            spread,
            callers,
            served.rate(),
            ms(served.p50),
            ms(served.p99),
            per(after.0 - before.0, served.requests),
            per(after.1.saturating_sub(before.1), served.requests),
            naive.rate(),
            ms(naive.p50),
            per(naive_pg, naive.requests),
            served.rate() / naive.rate(),
        );
    }

    const RESERVING: usize = 100;
    const RESERVERS: usize = 64;
    let reservations: usize = figures::setting("BENCH_CREDITS_RESERVATIONS", 6_000);
    let mut before = Vec::with_capacity(RESERVING);
    for n in 0..RESERVING {
        before.push(balance_and_held(&server, &organization(n, RESERVING)).await);
    }
    settled(&both).await;
    let cpu_before = (process_cpu(server.pid()), cluster_cpu(postmaster));
    let settled = reserved_and_captured(&server, RESERVERS, reservations, RESERVING).await;
    let cpu_after = (process_cpu(server.pid()), cluster_cpu(postmaster));
    for (n, (balance, held)) in before.into_iter().enumerate() {
        let captured: i64 = (0..reservations)
            .filter(|r| r % RESERVING == n)
            .map(|r| (r % 10) as i64)
            .sum();
        assert_eq!(held, 0);
        assert_eq!(
            balance_and_held(&server, &organization(n, RESERVING)).await,
            (balance - captured, 0),
            "organization {n}'s balance is exact"
        );
    }
    let per_reservation = |d: Duration| d.as_secs_f64() * 1e6 / reservations as f64;
    println!(
        "reservations: {RESERVING} organizations, {RESERVERS} callers, {reservations} reserved then \
         captured in part: {:.0} settled/s (goal: at least 2,000), p50 {:.2} ms p99 {:.2} ms per \
         pair, srv {:.0} µs pg {:.0} µs per reservation; every balance exact",
        settled.rate(),
        settled.percentile(0.50).as_secs_f64() * 1e3,
        settled.percentile(0.99).as_secs_f64() * 1e3,
        per_reservation(cpu_after.0 - cpu_before.0),
        per_reservation(cpu_after.1.saturating_sub(cpu_before.1)),
    );
}

/// `VACUUM (ANALYZE)` of both databases and a `CHECKPOINT`, before each measured run: the
/// maintenance the rows of the run before call for (autovacuum of a ledger that grew by tens of
/// thousands of rows, the checkpoint writing the pages they dirtied) is done then, not during
/// the next run, in whichever design's CPU happens to be measured. Each run still pays for the
/// maintenance its own rows call for.
async fn settled(stores: &[&Store]) {
    for store in stores {
        store
            .connection()
            .execute_unprepared("VACUUM (ANALYZE)")
            .await
            .expect("VACUUM");
    }
    // A checkpoint is the whole cluster's: once, through either.
    stores[0]
        .connection()
        .execute_unprepared("CHECKPOINT")
        .await
        .expect("CHECKPOINT");
}
