//! End-to-end tests of reservations on the real server: credits held for work under way, then
//! captured in part, released, or released by themselves when their time to live ends; exactly
//! once under retries, and across two replicas with one killed while reservations are open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use serde_json::{Value, json};

use crate::credits::{
    API_KEY, API_KEYS, CONSUME, GRANT, assert_ledger_explains, get, post, without_request_id,
};
use crate::support;
use support::Server;
use support::operations::setup;

const RESERVE: &str = "/api/v1/credits/reserve";
const CAPTURE: &str = "/api/v1/credits/capture";
const RELEASE: &str = "/api/v1/credits/release";

each_backend!(a_reservation_holds_is_captured_in_part_released_and_expires_end_to_end);

async fn grant(server: &Server, org: &str, amount: i64) {
    let (status, body) = post(
        server,
        GRANT,
        Some(API_KEY),
        json!({"organization_id": org, "amount": amount, "idempotency_key": format!("fund-{org}")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn reserve(server: &Server, org: &str, amount: i64, ttl: i64, key: &str) -> (u16, Value) {
    post(
        server,
        RESERVE,
        Some(API_KEY),
        json!({"organization_id": org, "amount": amount, "ttl_seconds": ttl,
               "idempotency_key": key, "reason": "an export"}),
    )
    .await
}

async fn capture(server: &Server, org: &str, reservation: i64, amount: i64) -> (u16, Value) {
    post(
        server,
        CAPTURE,
        Some(API_KEY),
        json!({"organization_id": org, "reservation_id": reservation, "amount": amount}),
    )
    .await
}

async fn release(server: &Server, org: &str, reservation: i64) -> (u16, Value) {
    post(
        server,
        RELEASE,
        Some(API_KEY),
        json!({"organization_id": org, "reservation_id": reservation}),
    )
    .await
}

/// The organization's credits as `GET /api/v1/credits/{org}` answers them.
async fn credits(server: &Server, org: &str) -> Value {
    let (status, body) = get(server, &format!("/api/v1/credits/{org}"), API_KEY).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn a_reservation_holds_is_captured_in_part_released_and_expires_end_to_end(db: TestDatabase) {
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEYS)]).await;
    let server = &s.server;
    grant(server, "org_r", 100).await;

    // Held: the balance no longer counts them, no consumption can spend them.
    let held = reserve(server, "org_r", 60, 3600, "export-1").await;
    assert_eq!(held.0, 200, "{}", held.1);
    assert_eq!(held.1["reservation_id"], 2);
    assert_eq!(held.1["status"], "held");
    assert_eq!(held.1["balance"], 40);
    assert!(held.1["expires_at"].is_string(), "{}", held.1);
    let again =
        futures::future::join_all((0..4).map(|_| reserve(server, "org_r", 60, 3600, "export-1")))
            .await;
    assert!(again.iter().all(|a| *a == held), "{again:?}");
    let (status, short) = post(
        server,
        CONSUME,
        Some(API_KEY),
        json!({"organization_id": "org_r", "amount": 50, "idempotency_key": "c1"}),
    )
    .await;
    assert_eq!(
        (status, &short["code"], &short["balance"]),
        (409, &json!("INSUFFICIENT_CREDITS"), &json!(40))
    );
    let (status, short) = reserve(server, "org_r", 41, 60, "export-2").await;
    assert_eq!(
        (status, &short["code"]),
        (409, &json!("INSUFFICIENT_CREDITS"))
    );
    let statement = credits(server, "org_r").await;
    assert_eq!(
        (&statement["balance"], &statement["held"]),
        (&json!(40), &json!(60))
    );
    assert_eq!(statement["reservations"][0]["reservation_id"], 2);
    assert_eq!(statement["reservations"][0]["amount"], 60);

    // Captured in part: the rest returns; the same capture again is answered the same.
    let captured = without_request_id(capture(server, "org_r", 2, 45).await);
    assert_eq!(
        captured,
        (
            200,
            json!({"reservation_id": 2, "status": "captured", "captured": 45,
                     "transaction_id": 3, "balance": 55})
        )
    );
    assert_eq!(
        without_request_id(capture(server, "org_r", 2, 45).await),
        captured
    );
    for refused in [
        capture(server, "org_r", 2, 50).await,
        release(server, "org_r", 2).await,
    ] {
        assert_eq!(
            (refused.0, &refused.1["code"]),
            (409, &json!("RESERVATION_SETTLED")),
            "{}",
            refused.1
        );
    }
    let (status, missing) = capture(server, "org_r", 1, 1).await;
    assert_eq!(
        (status, &missing["code"]),
        (404, &json!("RESERVATION_NOT_FOUND"))
    );
    let (status, missing) = release(server, "org_other", 2).await;
    assert_eq!(
        (status, &missing["code"]),
        (404, &json!("RESERVATION_NOT_FOUND"))
    );

    // Released: all of it returns, once.
    let (_, second) = reserve(server, "org_r", 30, 3600, "export-3").await;
    assert_eq!(second["reservation_id"], 4);
    let (status, over) = capture(server, "org_r", 4, 31).await;
    assert_eq!(
        (status, &over["code"]),
        (400, &json!("VALIDATION_ERROR")),
        "{over}"
    );
    let released = without_request_id(release(server, "org_r", 4).await);
    assert_eq!(
        released,
        (
            200,
            json!({"reservation_id": 4, "status": "released", "transaction_id": 5, "balance": 55})
        )
    );
    assert_eq!(
        without_request_id(release(server, "org_r", 4).await),
        released
    );

    // Expired: a reservation left alone returns by itself when its time to live ends, seen by
    // the next read; a capture after it is refused, a release answers what happened.
    let (_, third) = reserve(server, "org_r", 20, 1, "export-4").await;
    assert_eq!(
        (&third["reservation_id"], &third["balance"]),
        (&json!(6), &json!(35))
    );
    let statement = support::wait_for(
        "the reservation to expire",
        Duration::from_secs(10),
        || async {
            let statement = credits(server, "org_r").await;
            (statement["held"] == 0).then_some(statement)
        },
    )
    .await;
    assert_eq!(statement["balance"], 55);
    assert_eq!(statement["reservations"], json!([]));
    let (status, late) = capture(server, "org_r", 6, 20).await;
    assert_eq!(
        (status, &late["code"]),
        (409, &json!("RESERVATION_SETTLED")),
        "{late}"
    );
    let (status, ended) = release(server, "org_r", 6).await;
    assert_eq!(
        (status, &ended["status"]),
        (200, &json!("expired")),
        "{ended}"
    );

    let kinds: Vec<(String, i64)> = statement["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .rev()
        .map(|t| {
            (
                t["kind"].as_str().expect("kind").to_owned(),
                t["amount"].as_i64().expect("amount"),
            )
        })
        .collect();
    let kinds: Vec<(&str, i64)> = kinds.iter().map(|(k, a)| (k.as_str(), *a)).collect();
    assert_eq!(
        kinds,
        [
            ("adjustment", 100),
            ("hold", -60),
            ("capture", 15),
            ("hold", -30),
            ("release", 30),
            ("hold", -20),
            ("release", 20),
        ]
    );
    assert_ledger_explains(server, "org_r", 55).await;

    // Bad requests are refused naming the field, and change nothing.
    for (path, body) in [
        (
            RESERVE,
            json!({"organization_id": "org_r", "amount": 1, "ttl_seconds": 0, "idempotency_key": "b1"}),
        ),
        (
            RESERVE,
            json!({"organization_id": "org_r", "amount": 1, "ttl_seconds": 604_801, "idempotency_key": "b2"}),
        ),
        (
            RESERVE,
            json!({"organization_id": "org_r", "amount": 1, "ttl": 60, "idempotency_key": "b3"}),
        ),
        (
            RESERVE,
            json!({"organization_id": "org_r", "amount": 0, "ttl_seconds": 60, "idempotency_key": "b4"}),
        ),
        (
            CAPTURE,
            json!({"organization_id": "org_r", "reservation_id": 2, "amount": -1}),
        ),
        (
            CAPTURE,
            json!({"organization_id": "org_r", "reservation_id": 2}),
        ),
        (
            RELEASE,
            json!({"organization_id": "org_r", "reservation_id": 2, "amount": 1}),
        ),
    ] {
        let (status, refused) = post(server, path, Some(API_KEY), body.clone()).await;
        assert_eq!(
            (status, &refused["code"]),
            (400, &json!("VALIDATION_ERROR")),
            "{body}: {refused}"
        );
    }
    let (status, _) = post(server, RESERVE, None, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        credits(server, "org_r").await["transactions"]
            .as_array()
            .map(Vec::len),
        Some(7)
    );
}

billing_sync_testkit::postgres_test! {
    /// Two replicas on one PostgreSQL: 40 reservations made through replica A, which is killed
    /// (SIGKILL) while all are open; replica B captures half of them (each twice, the second
    /// answered the same), and the other half, short-lived, expire by themselves. None is lost,
    /// none captured twice, and the balance is exactly what the captures left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_reservations_survive_a_killed_replica_and_settle_exactly_once() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let env = [("BILLING_API_KEYS", API_KEYS)];
        let a = Server::start(&db.url, &env).await;
        let b = Arc::new(Server::start(&db.url, &env).await);
        grant(&a, "org_kill", 1_000).await;
        let mut reservations = BTreeMap::new();
        for n in 0..40 {
            // Even ones to capture (an hour to live), odd ones to expire (two seconds).
            let ttl = if n % 2 == 0 { 3600 } else { 2 };
            let (status, held) = reserve(&a, "org_kill", 10, ttl, &format!("job-{n}")).await;
            assert_eq!(status, 200, "{held}");
            reservations.insert(n, held["reservation_id"].as_i64().expect("id"));
        }
        a.kill().await;
        // A retry of a reservation at the other replica gets the same one.
        let (_, again) = reserve(&b, "org_kill", 10, 3600, "job-0").await;
        assert_eq!(again["reservation_id"], reservations[&0]);
        let captures = reservations.iter().filter(|(n, _)| *n % 2 == 0).map(|(n, id)| {
            let (b, id, n) = (b.clone(), *id, *n);
            async move {
                let first = without_request_id(capture(&b, "org_kill", id, n % 10).await);
                let second = without_request_id(capture(&b, "org_kill", id, n % 10).await);
                assert_eq!(first, second, "reservation {id}: a retry got another answer");
                assert_eq!(first.0, 200, "{}", first.1);
            }
        });
        futures::future::join_all(captures).await;
        let captured: i64 = (0..40).filter(|n| n % 2 == 0).map(|n| n % 10).sum();
        let statement = support::wait_for("the short ones to expire", Duration::from_secs(15), || async {
            let statement = credits(&b, "org_kill").await;
            (statement["held"] == 0).then_some(statement)
        })
        .await;
        assert_eq!(statement["balance"], 1_000 - captured);
        let store = billing_sync_store::Store::connect(&db.url).await.expect("store");
        let transactions = store.credit_transactions("org_kill").await.expect("ledger");
        let count = |kind: &str| transactions.iter().filter(|t| t.kind == kind).count();
        assert_eq!((count("hold"), count("capture"), count("release")), (40, 20, 20));
        let settled: std::collections::BTreeSet<_> = transactions
            .iter()
            .filter(|t| t.kind != "hold" && t.kind != "adjustment")
            .map(|t| t.reference.clone().expect("a reservation"))
            .collect();
        assert_eq!(settled.len(), 40, "each settled once");
        assert_ledger_explains(&b, "org_kill", 1_000 - captured).await;
    }
}
