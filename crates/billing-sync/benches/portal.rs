//! Customer-portal throughput and latency: the real release server with cached Clerk keys (one
//! JWKS fetch, then the cache) and the local Stripe stand-in, loaded over loopback HTTP. The
//! figures include the stand-in, which runs in this process beside the load generator.
//!
//! Run with `./scripts/bench --bench portal` (PostgreSQL), or with `BENCH_BACKEND=sqlite`.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::json;
use support::standins::{JwksStandIn, SigningKey, StripeStandIn};
use support::{Server, now, post_clerk, post_stripe, stripe_signature};

const REQUESTS: usize = 20_000;
const CONCURRENCY: [usize; 2] = [16, 64];

#[tokio::main]
async fn main() {
    let backend = if std::env::var("BENCH_BACKEND").as_deref() == Ok("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let Some(db) = TestDatabase::create(backend).await else {
        eprintln!("no PostgreSQL: run ./scripts/bench --bench portal, or BENCH_BACKEND=sqlite");
        std::process::exit(2);
    };
    let key = SigningKey::generate("ins_bench");
    let jwks = JwksStandIn::start(&[&key]).await;
    let stripe = StripeStandIn::start(&[]).await;
    let clerk_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let server = Server::start(
        &db.url,
        &[
            ("RUST_LOG", "warn,billing_sync::startup=info"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_bench"),
            ("CLERK_WEBHOOK_SECRET", clerk_secret),
            ("CLERK_JWKS_URL", jwks.url.as_str()),
            ("STRIPE_SECRET_KEY", "sk_test_bench"),
            ("STRIPE_API_BASE", stripe.base_url.as_str()),
            ("APP_BASE_URL", "https://app.example.com"),
        ],
    )
    .await;
    // State: a member of an organization whose customer a checkout linked.
    let updated = now() * 1000 - 60_000;
    let membership = serde_json::to_vec(
        &json!({"type": "organizationMembership.created", "object": "event",
        "data": {"id": "orgmem_bench", "role": "org:admin", "updated_at": updated,
                 "organization": {"id": "org_bench", "updated_at": updated},
                 "public_user_data": {"user_id": "user_bench"}}}),
    )
    .expect("JSON");
    assert_eq!(
        post_clerk(&server, clerk_secret, "msg_bench", now(), &membership)
            .await
            .status(),
        200
    );
    let checkout = serde_json::to_vec(&json!({"id": "evt_bench", "object": "event", "created": now(),
        "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_bench", "customer": "cus_bench", "client_reference_id": "org_bench"}}}))
    .expect("JSON");
    let signature = stripe_signature("whsec_bench", now(), &checkout);
    assert_eq!(
        post_stripe(&server, &checkout, Some(signature))
            .await
            .status(),
        200
    );

    let t = now();
    let token = key.sign(&json!({"sub": "user_bench", "iat": t, "nbf": t, "exp": t + 3_600,
                                 "azp": "https://app.example.com", "v": 2, "o": {"id": "org_bench"}}));
    let url = server.url("/api/v1/operations/payment/customer-portal");
    let client = support::http();
    // Warm-up, which also fills the key cache.
    for _ in 0..200 {
        let response = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 302);
    }

    println!(
        "customer portal on {backend:?}, {} cores, stand-in included",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<12} {:>9} | {:>10} {:>8} {:>8}",
        "connections", "requests", "req/s", "p50 ms", "p99 ms"
    );
    for concurrency in CONCURRENCY {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, url, token, next) =
                (client.clone(), url.clone(), token.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    let sent = Instant::now();
                    let response = client
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("GET");
                    assert_eq!(response.status(), 302, "every request is redirected");
                    latencies.push(sent.elapsed());
                }
                latencies
            }));
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(REQUESTS);
        for task in tasks {
            latencies.extend(task.await.expect("task"));
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let at =
            |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "{:<12} {:>9} | {:>10.0} {:>8.2} {:>8.2}",
            concurrency,
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.50),
            at(0.99)
        );
    }
    println!("JWKS fetches: {}", jwks.fetch_count());
}
