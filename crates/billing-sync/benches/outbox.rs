//! What billing flowing out costs ingestion, and how long a change takes to reach the app:
//! signed Stripe subscription-lifecycle events (2–4 KB bodies) from 16 concurrent senders to
//! the real server on PostgreSQL, twice per round on fresh databases:
//!
//! - **publishing off** (no destination, no API key: changes are only marked in the outbox, in
//!   the ingest transaction) — the ceiling this run measures;
//! - **publishing on**: the publisher and the app's webhook (`APP_WEBHOOK_URL`, a receiver on
//!   127.0.0.1 that answers 200 at once) run beside ingestion.
//!
//! For each: events per second, the server's CPU per event and the PostgreSQL cluster's (all
//! its processes, from `/proc`), and, with publishing on, the delay from the 200 of an
//! organization's last event to the app receiving a `billing.updated` of it (p50, p99 over the
//! organizations) and how many deliveries the app received per Stripe event. Goal (issue 30): on ≥ 85 % of
//! off, p99 delay under a second.
//!
//! Run with `./scripts/bench --bench outbox`. `BENCH_OUTBOX_EVENTS` sets the events per run
//! (default 12,000: 1,500 organizations), `BENCH_OUTBOX_ROUNDS` the rounds (default 3; the
//! runs' order alternates); the ratio reported is the median of the rounds', as one run pair
//! on two shared cores swung from 0.72 to 0.97.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billing_sync_testkit::bench::cpu::{cluster_cpu, postmaster_pid, process_cpu};
use billing_sync_testkit::bench::figures::{percentile, setting};
use billing_sync_testkit::e2e::receivers::ReceiverStandIn;
use billing_sync_testkit::e2e::{Server, now, stripe_signature};
use billing_sync_testkit::scenarios::{ScenarioEvent, subscription_lifecycles};
use billing_sync_testkit::{Backend, POSTGRES_URL_VAR, TestDatabase};

const SECRET: &str = "whsec_bench_outbox";
const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const API_KEY: &str = "bsk_bench_0123456789abcdef0123456789abcdef";
const SENDERS: usize = 16;

/// The organization an event's object names.
fn organization(event: &ScenarioEvent) -> Option<String> {
    event.payload["data"]["object"]["metadata"]["organization_id"]
        .as_str()
        .map(str::to_owned)
}

struct Run {
    rate: f64,
    cpu_per_event: Duration,
    /// The PostgreSQL cluster's CPU per event, all its processes.
    postgres_per_event: Duration,
    /// Each organization's last acknowledged event's 200.
    last_ack: HashMap<String, Instant>,
}

/// Sends `events` to `server` from [`SENDERS`] tasks, one shared client; `postmaster` is the
/// PostgreSQL cluster's, whose CPU is counted too.
async fn send(server: &Server, postmaster: u32, events: Vec<ScenarioEvent>) -> Run {
    let bodies: Arc<Vec<(Option<String>, Vec<u8>)>> = Arc::new(
        events
            .iter()
            .map(|event| {
                (
                    organization(event),
                    serde_json::to_vec(&event.payload).expect("JSON"),
                )
            })
            .collect(),
    );
    let http = reqwest::Client::builder()
        .tls_certs_only([])
        .pool_max_idle_per_host(SENDERS)
        .build()
        .expect("a client");
    let url = server.url("/api/v1/webhooks/stripe");
    let next = Arc::new(AtomicUsize::new(0));
    let last_ack = Arc::new(Mutex::new(HashMap::new()));
    let cpu_before = process_cpu(server.pid());
    let cluster_before = cluster_cpu(postmaster);
    let started = Instant::now();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (bodies, http, url, next, last_ack) = (
                bodies.clone(),
                http.clone(),
                url.clone(),
                next.clone(),
                last_ack.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((organization, body)) = bodies.get(index) else {
                        return;
                    };
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", stripe_signature(SECRET, now(), body))
                        .body(body.clone())
                        .send()
                        .await
                        .expect("POST");
                    assert!(response.status().is_success(), "{}", response.status());
                    if let Some(organization) = organization {
                        last_ack
                            .lock()
                            .expect("lock")
                            .insert(organization.clone(), Instant::now());
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sender");
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu(server.pid()) - cpu_before;
    let cluster = cluster_cpu(postmaster) - cluster_before;
    let last_ack = std::mem::take(&mut *last_ack.lock().expect("lock"));
    Run {
        rate: bodies.len() as f64 / elapsed.as_secs_f64(),
        cpu_per_event: cpu / bodies.len() as u32,
        postgres_per_event: cluster / bodies.len() as u32,
        last_ack,
    }
}

/// For each organization, from its last 200 to the first `billing.updated` of it the app
/// received after that, waiting up to 30 s; sorted.
async fn delays(app: &ReceiverStandIn, last_ack: &HashMap<String, Instant>) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        for received in app.received() {
            let event = received.json();
            let Some(organization) = event["organization_id"].as_str() else {
                continue;
            };
            if let Some(acked) = last_ack.get(organization)
                && received.at >= *acked
            {
                seen.entry(organization.to_owned()).or_insert(received.at);
            }
        }
        if seen.len() == last_ack.len() || Instant::now() > deadline {
            let mut delays: Vec<Duration> = seen
                .iter()
                .map(|(organization, at)| at.duration_since(last_ack[organization]))
                .collect();
            delays.sort();
            if seen.len() < last_ack.len() {
                println!(
                    "  {} of {} organizations not received within 30 s",
                    last_ack.len() - seen.len(),
                    last_ack.len()
                );
            }
            return delays;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::var(POSTGRES_URL_VAR).is_err() {
        eprintln!("{POSTGRES_URL_VAR} is unset: run ./scripts/bench --bench outbox");
        std::process::exit(2);
    }
    let count: usize = setting("BENCH_OUTBOX_EVENTS", 12_000);
    println!("billing flowing out: {count} events per run, {SENDERS} senders, PostgreSQL");
    println!(
        "{:<6} {:<15} {:>10} {:>9} {:>9} {:>10} {:>10} {:>8}",
        "round",
        "publishing",
        "events/s",
        "svc µs/ev",
        "pg µs/ev",
        "delay p50",
        "delay p99",
        "sent/ev"
    );
    let rounds: usize = setting("BENCH_OUTBOX_ROUNDS", 3);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (mut off_rate, mut on_rate) = (0.0, 0.0);
        // Which runs first alternates, so that a drift of the machine over the run (the page
        // cache, PostgreSQL's checkpoints) favours neither.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for publishing in order {
            let db = TestDatabase::create(Backend::Postgres)
                .await
                .expect("a database");
            let app = ReceiverStandIn::app().await;
            let mut env = vec![
                ("STRIPE_WEBHOOK_SECRET", SECRET),
                ("RUST_LOG", "warn,billing_sync::startup=info"),
            ];
            if publishing {
                env.extend([
                    ("APP_WEBHOOK_URL", app.base_url.as_str()),
                    ("APP_WEBHOOK_SECRET", APP_SECRET),
                    ("BILLING_API_KEYS", API_KEY),
                ]);
            }
            let server = Server::start(&db.url, &env).await;
            let postmaster = postmaster_pid(
                &billing_sync_store::sea_orm::Database::connect(&db.url)
                    .await
                    .expect("connect"),
            )
            .await;
            let tag = format!("r{round}{}", if publishing { "on" } else { "off" });
            let run = send(&server, postmaster, subscription_lifecycles(&tag, count)).await;
            if publishing {
                on_rate = run.rate;
            } else {
                off_rate = run.rate;
            }
            let (p50, p99, sent) = if publishing {
                let delays = delays(&app, &run.last_ack).await;
                (
                    format!("{:.0} ms", percentile(&delays, 0.5).as_secs_f64() * 1e3),
                    format!("{:.0} ms", percentile(&delays, 0.99).as_secs_f64() * 1e3),
                    format!("{:.2}", app.received().len() as f64 / count as f64),
                )
            } else {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            };
            println!(
                "{round:<6} {:<15} {:>10.0} {:>9.0} {:>9.0} {:>10} {:>10} {:>8}",
                if publishing { "on" } else { "off (ceiling)" },
                run.rate,
                run.cpu_per_event.as_secs_f64() * 1e6,
                run.postgres_per_event.as_secs_f64() * 1e6,
                p50,
                p99,
                sent,
            );
            server.terminate().await;
        }
        ratios.push(on_rate / off_rate);
        println!("{round:<6} on/off {:.2}", on_rate / off_rate);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median on/off over {rounds} rounds: {:.2} (goal: at least 0.85)",
        ratios[ratios.len() / 2]
    );
}
