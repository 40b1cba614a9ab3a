//! Proof of "nothing acknowledged is lost": the real server under a load that behaves like
//! Stripe and Svix (signed deliveries, shuffled, duplicated, retried until acknowledged), while
//! PostgreSQL restarts, while the service is SIGKILLed and restarted, and with two replicas on
//! one database. Each suite ends by checking that every acknowledged event is in the ledger and
//! that every organization's state equals the in-order state, and prints a summary table.
//!
//! Size: `RESILIENCE_ORGANIZATIONS` organizations (23 events each, plus 20 % duplicates);
//! 40 by default so that CI runs them in seconds. The long run is documented in docs/proofs.md.

use crate::support;

use std::time::Duration;

use billing_sync_store::Store;
use billing_sync_testkit::cluster::PostgresCluster;
use billing_sync_testkit::load::{self, Fanout, Load, Report, Secrets, Targets, Verdict};
use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use support::Server;
use tokio::sync::watch;

const STRIPE_SECRET: &str = "whsec_resilience_stripe";
const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

each_backend!(a_service_killed_mid_run_loses_nothing_acknowledged);

fn secrets() -> Secrets {
    Secrets {
        stripe: STRIPE_SECRET.into(),
        clerk: CLERK_SECRET.into(),
    }
}

fn load(tag: &str, seed: u64) -> Load {
    let organizations = std::env::var("RESILIENCE_ORGANIZATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    Load {
        tag: tag.into(),
        organizations,
        wave: 20,
        concurrency: 16,
        duplicates: 0.2,
        fanout: Fanout::Duplicates,
        seed,
        give_up_after: Duration::from_secs(240),
    }
}

async fn server(database_url: &str) -> Server {
    Server::start(
        database_url,
        &[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
            ("CLERK_WEBHOOK_SECRET", CLERK_SECRET),
        ],
    )
    .await
}

/// Every event of the run is acknowledged, every acknowledged one is in the ledger, and every
/// organization ends in its in-order state; prints the suite's table.
async fn check(suite: &str, database_url: &str, report: &Report) -> Verdict {
    let store = Store::connect(database_url).await.expect("connect");
    let verdict = load::verify(&store, report).await;
    eprintln!("{}", load::summary(suite, report, &verdict));
    assert_eq!(
        report.acknowledged.len() as u64,
        report.events,
        "every event is acknowledged in the end (the driver retries until it is)"
    );
    assert!(
        verdict.missing.is_empty(),
        "acknowledged but not in the ledger: {:?}",
        verdict.missing
    );
    assert!(
        verdict.mismatched.is_empty(),
        "organizations whose state differs from in-order delivery: {:?}",
        verdict.mismatched
    );
    assert!(
        verdict.acknowledged_unapplied.is_empty(),
        "acknowledged without being applied: {:?}",
        verdict.acknowledged_unapplied
    );
    assert!(
        verdict.failed_in_ledger.is_empty(),
        "recorded `failed` (acknowledged, never retried, not applied): {:?}",
        verdict.failed_in_ledger
    );
    verdict
}

/// Starts the load in the background and returns once a third of its events are
/// acknowledged: the moment a suite injects its fault.
async fn drive_until_a_third_is_acknowledged(
    plan: Load,
    targets: &Targets,
) -> tokio::task::JoinHandle<Report> {
    let a_third = plan.events() / 3;
    let (progress_tx, mut progress) = watch::channel(0);
    let targets = targets.clone();
    let driver =
        tokio::spawn(async move { load::drive(&plan, &targets, &secrets(), &progress_tx).await });
    tokio::time::timeout(
        Duration::from_secs(120),
        progress.wait_for(|n| *n >= a_third),
    )
    .await
    .expect("the load makes progress")
    .expect("the driver is running");
    driver
}

async fn a_service_killed_mid_run_loses_nothing_acknowledged(db: TestDatabase) {
    let _load = support::one_load_at_a_time().await;
    let first = server(&db.url).await;
    let targets = Targets::new(vec![first.base_url.clone()]);
    let driver = drive_until_a_third_is_acknowledged(load("crash", 0xC4A5), &targets).await;
    first.kill().await;
    // Deliveries fail (connection refused) until the replacement listens, then go there.
    let second = server(&db.url).await;
    targets.replace(vec![second.base_url.clone()]);
    let report = driver.await.expect("the driver finishes");
    check(
        &format!("crash (SIGKILL) on {:?}", db.backend),
        &db.url,
        &report,
    )
    .await;
    assert!(
        report.answers.contains_key("connection error"),
        "the kill happened mid-run: {:?}",
        report.answers
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_loses_nothing_acknowledged() {
    let _load = support::one_load_at_a_time().await;
    let Some(cluster) = PostgresCluster::start() else {
        return;
    };
    let url = cluster.url();
    let server = server(&url).await;
    let targets = Targets::new(vec![server.base_url.clone()]);
    let driver = drive_until_a_third_is_acknowledged(load("pgrestart", 0xDB05), &targets).await;
    cluster.crash();
    // The server notices: readiness fails while the database is down.
    let http = support::http();
    support::wait_for(
        "/readyz to report the database down (503)",
        Duration::from_secs(20),
        || async {
            let status = http
                .get(server.url("/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            (status.ok() == Some(503)).then_some(())
        },
    )
    .await;
    cluster.start_server();
    let report = driver.await.expect("the driver finishes");
    check("PostgreSQL restart (immediate)", &url, &report).await;
    // The writer retries a write refused for the moment a few times before answering 503, so
    // a short outage may be ridden out inside the server: either way it was seen.
    let metrics = server.get_text("/metrics").await;
    let retried = metrics
        .lines()
        .any(|line| line.starts_with("billing_sync_webhook_write_retries_total "));
    assert!(
        report.answers.contains_key("503") || retried,
        "deliveries during the outage were refused with 503 or retried by the writer: {:?}",
        report.answers
    );
    let unexpected: Vec<&String> = report
        .answers
        .keys()
        .filter(|answer| !matches!(answer.as_str(), "200" | "503"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "undocumented answers: {:?}",
        report.answers
    );
}

billing_sync_testkit::postgres_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_one_postgres_end_in_the_in_order_state() {
        let _load = support::one_load_at_a_time().await;
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        // Migrate once, before either replica starts, as the Kubernetes migration Job does.
        Store::connect(&db.url)
            .await
            .expect("connect")
            .migrate_up()
            .await
            .expect("migrate");
        let (a, b) = tokio::join!(server(&db.url), server(&db.url));
        let targets = Targets::new(vec![a.base_url.clone(), b.base_url.clone()]);
        // Every delivery to both replicas at the same moment: both write the same ledger rows and
        // the same objects' rows at once, the most contention two writers can have.
        let plan = Load {
            fanout: Fanout::Everything,
            ..load("replicas", 0x2E91)
        };
        let (progress_tx, _progress) = watch::channel(0);
        let report = tokio::time::timeout(
            Duration::from_secs(300),
            load::drive(&plan, &targets, &secrets(), &progress_tx),
        )
        .await
        .expect("no deadlock: the run finishes");
        check("two replicas, one PostgreSQL", &db.url, &report).await;
        assert_eq!(
            report.answers.keys().collect::<Vec<_>>(),
            ["200"],
            "every delivery answered 200 the first time, though each was sent to both replicas at once"
        );
    }
}
