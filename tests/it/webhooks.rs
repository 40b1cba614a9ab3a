//! End-to-end tests of webhook ingestion through the real server: the rejection contract,
//! secret rotation, concurrent duplicates, the database going away, failed events and replay,
//! and conformance with the shared real-world payloads.

use crate::support;

use std::path::PathBuf;

use billing_sync_projection::Provider;
use billing_sync_store::Store;
use billing_sync_store::entities::{
    organization_memberships, organizations, stripe_customers, stripe_subscriptions, users,
};
use billing_sync_store::ledger::EventFilter;
use billing_sync_store::sea_orm::{ConnectionTrait, EntityTrait};
use billing_sync_testkit::state::ledger_row;
use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use serde_json::json;
use support::{
    Server, now, post_clerk, post_clerk_raw, post_stripe, run, status_and_json, stripe_signature,
};

const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLERK_SECRET_2: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

each_backend!(
    stripe_rejections_answer_their_code_and_store_nothing,
    clerk_rejections_answer_their_code_and_store_nothing,
    stripe_accepts_a_signature_by_either_rolled_secret,
    clerk_accepts_a_signature_by_either_rolled_secret,
    concurrent_duplicate_deliveries_are_applied_once,
    an_event_that_cannot_be_applied_is_acknowledged_as_failed_and_listed_for_replay,
    a_signed_payload_holding_nul_is_recorded_and_projected_on_both_backends,
    times_before_year_one_and_before_any_database_are_recorded_and_projected,
    the_ledger_stores_the_body_as_received,
    any_signed_json_is_recorded_exactly_or_refused_with_a_4xx,
);

async fn start(db: &TestDatabase, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("CLERK_WEBHOOK_SECRET", CLERK_SECRET),
        ("WEBHOOK_BODY_LIMIT_BYTES", "65536"),
    ];
    env.extend_from_slice(extra);
    Server::start(&db.url, &env).await
}

async fn ledger_len(db: &TestDatabase) -> usize {
    let store = Store::connect(&db.url).await.expect("connect");
    store
        .list_events(&EventFilter::default())
        .await
        .expect("list")
        .len()
}

fn stripe_event(id: &str, event_type: &str, object: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "object": "event", "type": event_type,
        "created": now(), "livemode": false, "api_version": "2026-07-29.dahlia",
        "data": {"object": object}}))
    .expect("JSON")
}

/// Posts `body` signed now with the Stripe secret; the answer's status and JSON body.
async fn deliver_stripe(server: &Server, body: &[u8]) -> (u16, serde_json::Value) {
    let signature = stripe_signature(STRIPE_SECRET, now(), body);
    status_and_json(post_stripe(server, body, Some(signature)).await).await
}

fn clerk_event(event_type: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": event_type, "object": "event", "data": data})).expect("JSON")
}

/// A rejection case: name, body, `Stripe-Signature`, expected status and code.
type StripeCase = (&'static str, Vec<u8>, Option<String>, u16, &'static str);
/// A rejection case: name, headers, body, expected status and code.
type ClerkCase = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
    &'static str,
);

async fn stripe_rejections_answer_their_code_and_store_nothing(db: TestDatabase) {
    let server = start(&db, &[]).await;
    let body = stripe_event("evt_reject", "customer.created", json!({"id": "cus_r"}));
    let t = now();
    let cases: Vec<StripeCase> = vec![
        ("no header", body.clone(), None, 400, "SIGNATURE_MISSING"),
        (
            "malformed header",
            body.clone(),
            Some("garbage".into()),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "wrong secret",
            body.clone(),
            Some(stripe_signature("whsec_other", t, &body)),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "body changed after signing",
            b"{}".to_vec(),
            Some(stripe_signature(STRIPE_SECRET, t, &body)),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "stale",
            body.clone(),
            Some(stripe_signature(STRIPE_SECRET, t - 400, &body)),
            400,
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        (
            "future",
            body.clone(),
            Some(stripe_signature(STRIPE_SECRET, t + 400, &body)),
            400,
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        (
            "not JSON",
            b"not json".to_vec(),
            Some(stripe_signature(STRIPE_SECRET, t, b"not json")),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "not an event",
            b"{\"a\":1}".to_vec(),
            Some(stripe_signature(STRIPE_SECRET, t, b"{\"a\":1}")),
            400,
            "INVALID_PAYLOAD",
        ),
    ];
    for (name, body, signature, status, code) in cases {
        let (actual, json) = status_and_json(post_stripe(&server, &body, signature).await).await;
        assert_eq!(
            (actual, json["code"].as_str()),
            (status, Some(code)),
            "{name}: {json}"
        );
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {json}"
        );
    }
    let big = vec![b' '; 70_000];
    let response = post_stripe(
        &server,
        &big,
        Some(stripe_signature(STRIPE_SECRET, t, &big)),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        ledger_len(&db).await,
        0,
        "a rejected delivery stores nothing"
    );
    server
        .wait_for_log("the rejection", |line| {
            line.contains("webhook delivery refused")
        })
        .await;
    let logs = server.logs().join("\n");
    assert!(!logs.contains(STRIPE_SECRET), "the secret is never logged");
}

async fn clerk_rejections_answer_their_code_and_store_nothing(db: TestDatabase) {
    let server = start(&db, &[]).await;
    let body = clerk_event("user.created", json!({"id": "user_r", "updated_at": 1}));
    let t = now();
    let good = svix::webhooks::Webhook::new(CLERK_SECRET)
        .expect("secret")
        .sign("msg_reject", t, &body)
        .expect("sign");
    let headers = |id: &str, ts: i64, signature: &str| {
        vec![
            ("svix-id", id.to_owned()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", signature.to_owned()),
        ]
    };
    let cases: Vec<ClerkCase> = vec![
        ("no headers", vec![], body.clone(), 400, "SIGNATURE_MISSING"),
        (
            "bad signature",
            headers("msg_reject", t, "v1,AAAA"),
            body.clone(),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "other message id",
            headers("msg_other", t, &good),
            body.clone(),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "changed body",
            headers("msg_reject", t, &good),
            b"{}".to_vec(),
            400,
            "SIGNATURE_INVALID",
        ),
        (
            "stale",
            headers("msg_reject", t - 400, &good),
            body.clone(),
            400,
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
    ];
    for (name, headers, body, status, code) in cases {
        let (actual, json) = status_and_json(post_clerk_raw(&server, &headers, &body).await).await;
        assert_eq!(
            (actual, json["code"].as_str()),
            (status, Some(code)),
            "{name}: {json}"
        );
    }
    let response = post_clerk(&server, CLERK_SECRET, "msg_nojson", t, b"[1, 2]").await;
    let (status, json) = status_and_json(response).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("INVALID_PAYLOAD"))
    );
    let big = vec![b' '; 70_000];
    assert_eq!(
        post_clerk(&server, CLERK_SECRET, "msg_big", t, &big)
            .await
            .status(),
        413
    );
    assert_eq!(
        ledger_len(&db).await,
        0,
        "a rejected delivery stores nothing"
    );
}

async fn stripe_accepts_a_signature_by_either_rolled_secret(db: TestDatabase) {
    let server = Server::start(
        &db.url,
        &[(
            "STRIPE_WEBHOOK_SECRET",
            "whsec_old_secret, whsec_new_secret",
        )],
    )
    .await;
    let t = now();
    let body = stripe_event("evt_roll_1", "customer.created", json!({"id": "cus_roll"}));
    let header = format!(
        "t={t},v1={},v1={},v0={}",
        billing_sync_projection::stripe_signature::sign("whsec_unknown", t, &body),
        billing_sync_projection::stripe_signature::sign("whsec_new_secret", t, &body),
        billing_sync_projection::stripe_signature::sign("whsec_old_secret", t, &body),
    );
    let (status, json) = status_and_json(post_stripe(&server, &body, Some(header)).await).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
    let body = stripe_event("evt_roll_2", "customer.updated", json!({"id": "cus_roll"}));
    let header = stripe_signature("whsec_old_secret", t, &body);
    assert_eq!(
        post_stripe(&server, &body, Some(header)).await.status(),
        200
    );
}

async fn clerk_accepts_a_signature_by_either_rolled_secret(db: TestDatabase) {
    let secrets = format!("{CLERK_SECRET},{CLERK_SECRET_2}");
    let server = Server::start(&db.url, &[("CLERK_WEBHOOK_SECRET", &secrets)]).await;
    let t = now();
    let body = clerk_event("user.created", json!({"id": "user_roll", "updated_at": 1}));
    let sign = |secret: &str| {
        svix::webhooks::Webhook::new(secret)
            .expect("secret")
            .sign("msg_roll", t, &body)
            .expect("sign")
    };
    // Svix sends one entry per active secret, space-separated.
    let both = format!(
        "v1,bm90LXRoZS1yaWdodC1zaWduYXR1cmU= {}",
        sign(CLERK_SECRET_2)
    );
    let headers = [
        ("webhook-id", "msg_roll".to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", both),
    ];
    let (status, json) = status_and_json(post_clerk_raw(&server, &headers, &body).await).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
    let (status, json) =
        status_and_json(post_clerk(&server, CLERK_SECRET, "msg_roll_2", t, &body).await).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
}

async fn concurrent_duplicate_deliveries_are_applied_once(db: TestDatabase) {
    let server = start(&db, &[]).await;
    let t = now();
    let stripe_body = stripe_event("evt_dup", "customer.created", json!({"id": "cus_dup"}));
    let clerk_body = clerk_event("user.created", json!({"id": "user_dup", "updated_at": 5}));
    let mut requests = Vec::new();
    for _ in 0..16 {
        requests.push(tokio::spawn({
            let (url, body) = (server.url("/api/v1/webhooks/stripe"), stripe_body.clone());
            let header = stripe_signature(STRIPE_SECRET, t, &body);
            async move {
                let response = support::http()
                    .post(url)
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                    .expect("POST");
                status_and_json(response).await
            }
        }));
    }
    let clerk_responses = futures::future::join_all(
        (0..16).map(|_| post_clerk(&server, CLERK_SECRET, "msg_dup", t, &clerk_body)),
    )
    .await;
    let mut stripe_statuses = Vec::new();
    for request in requests {
        let (status, json) = request.await.expect("task");
        assert_eq!(status, 200, "{json}");
        stripe_statuses.push(json["status"].as_str().unwrap_or_default().to_owned());
    }
    let mut clerk_statuses = Vec::new();
    for response in clerk_responses {
        let (status, json) = status_and_json(response).await;
        assert_eq!(status, 200, "{json}");
        clerk_statuses.push(json["status"].as_str().unwrap_or_default().to_owned());
    }
    for statuses in [stripe_statuses, clerk_statuses] {
        assert_eq!(
            statuses.iter().filter(|s| *s == "processed").count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| *s == "duplicate").count(),
            15,
            "{statuses:?}"
        );
    }
    assert_eq!(ledger_len(&db).await, 2);
}

async fn an_event_that_cannot_be_applied_is_acknowledged_as_failed_and_listed_for_replay(
    db: TestDatabase,
) {
    let server = start(&db, &[]).await;
    let t = now();
    // A subscription without `status` or `customer`: a shape we do not understand.
    let body = stripe_event(
        "evt_bad_shape",
        "customer.subscription.updated",
        json!({"id": "sub_x"}),
    );
    let response = post_stripe(
        &server,
        &body,
        Some(stripe_signature(STRIPE_SECRET, t, &body)),
    )
    .await;
    let (status, json) = status_and_json(response).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("failed")),
        "{json}"
    );
    let ignored = stripe_event("evt_ignored", "invoice.created", json!({"id": "in_1"}));
    let response = post_stripe(
        &server,
        &ignored,
        Some(stripe_signature(STRIPE_SECRET, t, &ignored)),
    )
    .await;
    assert_eq!(status_and_json(response).await.1["status"], "ignored");

    let env = [("DATABASE_URL", db.url.as_str())];
    let listed = run(&["events", "list", "--status", "failed"], &env).await;
    assert!(listed.status.success(), "{}", listed.stderr);
    assert!(listed.stdout.contains("evt_bad_shape"), "{}", listed.stdout);
    assert!(!listed.stdout.contains("evt_ignored"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("has no string `status`"),
        "{}",
        listed.stdout
    );

    // The shape is still not understood, so the replay says so and fails.
    let replay = run(&["events", "replay", "evt_bad_shape"], &env).await;
    assert_eq!(replay.status.code(), Some(1), "{}", replay.stdout);
    assert!(
        replay
            .stdout
            .contains("evt_bad_shape customer.subscription.updated -> failed")
    );
    let replay_all = run(&["events", "replay", "--failed"], &env).await;
    assert!(
        replay_all
            .stdout
            .contains("replayed 1 event(s), 1 still failed"),
        "{}",
        replay_all.stdout
    );
    let store = Store::connect(&db.url).await.expect("connect");
    let row = ledger_row(&store, Provider::Stripe, "evt_bad_shape")
        .await
        .expect("row");
    assert_eq!(row.attempts, 3, "each replay is counted");
    let unknown = run(&["events", "replay", "evt_missing"], &env).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        unknown.stderr.contains("no event `evt_missing`"),
        "{}",
        unknown.stderr
    );
}

/// The tests of the shared fixtures on each backend: built ignored without them.
mod shared_fixtures {
    use super::*;

    billing_sync_testkit::each_backend!(
        needs_fixtures: the_shared_stripe_fixtures_tell_their_story_in_any_order,
        the_shared_clerk_fixtures_all_ingest,
    );
}

/// `../shared/fixtures` beside the repository, where CI puts it (or `BILLING_SYNC_FIXTURES`);
/// `None` (said plainly) if absent, unless `BILLING_SYNC_TEST_REQUIRE_FIXTURES=1`.
fn shared_fixtures(provider: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let dir = std::env::var_os("BILLING_SYNC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/fixtures"
            ))
        })
        .join(provider);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        // CI sets the switch: there, missing fixtures are a failure, never a silent pass.
        assert!(
            std::env::var("BILLING_SYNC_TEST_REQUIRE_FIXTURES").as_deref() != Ok("1"),
            "no shared fixtures at {} but BILLING_SYNC_TEST_REQUIRE_FIXTURES=1",
            dir.display()
        );
        eprintln!(
            "SKIPPED conformance: no shared fixtures at {}",
            dir.display()
        );
        return None;
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read fixture"))
        })
        .collect();
    files.sort();
    Some(files)
}

async fn the_shared_stripe_fixtures_tell_their_story_in_any_order(db: TestDatabase) {
    let Some(mut fixtures) = shared_fixtures("stripe") else {
        return;
    };
    assert!(fixtures.len() >= 10, "{} Stripe fixtures", fixtures.len());
    // Newest first: the worst order for a sync that trusts arrival order.
    fixtures.sort_by_key(|(_, body)| {
        let event: serde_json::Value = serde_json::from_slice(body).expect("fixture JSON");
        std::cmp::Reverse(event["created"].as_i64().expect("created"))
    });
    let server = start(&db, &[]).await;
    for (name, body) in &fixtures {
        let response = post_stripe(
            &server,
            body,
            Some(stripe_signature(STRIPE_SECRET, now(), body)),
        )
        .await;
        let (status, json) = status_and_json(response).await;
        assert_eq!(status, 200, "{name}: {json}");
        // Every fixture's type is projected (an invoice records the allowance it may grant), but
        // the paid one-time session was not created by billing-sync: what it bought is in its
        // line items, which this server (no STRIPE_SECRET_KEY) cannot read; it waits, failed,
        // for a replay.
        let expected = if name.starts_with("checkout.session.completed.payment") {
            "failed"
        } else {
            "processed"
        };
        assert_eq!(json["status"], expected, "{name}: {json}");
    }
    let store = Store::connect(&db.url).await.expect("connect");
    let db_conn = store.connection();
    let customer = stripe_customers::Entity::find_by_id("cus_QXg1o8vcGmoR32".to_owned())
        .one(db_conn)
        .await
        .expect("query")
        .expect("customer");
    assert_eq!(
        customer.organization_id.as_deref(),
        Some("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
    );
    assert!(
        customer.deleted_at.is_some(),
        "customer.deleted is the last word"
    );
    let subscription =
        stripe_subscriptions::Entity::find_by_id("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".to_owned())
            .one(db_conn)
            .await
            .expect("query")
            .expect("subscription");
    assert_eq!(subscription.status, "canceled");
    assert_eq!(
        subscription.organization_id.as_deref(),
        Some("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
    );
    assert_eq!(
        subscription.current_period_start.map(|t| t.timestamp()),
        Some(1_721_954_054)
    );
    assert_eq!(
        subscription.current_period_end.map(|t| t.timestamp()),
        Some(1_724_632_454)
    );
    assert_eq!(
        subscription.items[0]["price_id"],
        "price_1PgafmB7WZ01zgkW6dKueIc5"
    );
    assert_eq!(subscription.items[0]["product_id"], "prod_QXg1hqf4jFNsqG");
}

billing_sync_testkit::fixtures_test! {
    /// Stripe bodies are read sparsely (the envelope and the fields the projections read); every
    /// shared fixture must project exactly as its whole tree does: the events as they are, and each
    /// object of Stripe's OpenAPI fixtures inside an event of every type that carries it.
    #[test]
    fn every_shared_stripe_fixture_projects_the_same_read_sparsely_as_whole() {
        use billing_sync_projection::{Projection, readings_agree, stripe_event};
        let Some(events) = shared_fixtures("stripe") else {
            return;
        };
        let objects_file = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/stripe-openapi-fixtures3.objects.json"
        ));
        let objects: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&objects_file).expect("the objects fixture"))
                .expect("JSON");
        let mut bodies: Vec<(String, Vec<u8>)> = events;
        for (kind, types) in [
            (
                "customer",
                &["customer.created", "customer.updated", "customer.deleted"][..],
            ),
            ("deleted_customer", &["customer.deleted"][..]),
            (
                "subscription",
                &[
                    "customer.subscription.created",
                    "customer.subscription.updated",
                    "customer.subscription.deleted",
                ][..],
            ),
            ("checkout.session", &["checkout.session.completed"][..]),
        ] {
            for event_type in types {
                let event = json!({"id": format!("evt_{kind}"), "object": "event",
                    "api_version": "2026-07-29.dahlia", "created": 1_700_000_000, "livemode": false,
                    "type": event_type, "data": {"object": objects[kind]}});
                bodies.push((
                    format!("{kind} as {event_type}"),
                    serde_json::to_vec_pretty(&event).expect("JSON"),
                ));
            }
        }
        let projection = Projection {
            stripe_org_metadata_key: "organization_id".into(),
            client_reference_key: None,
        };
        for (name, body) in &bodies {
            let sparse = stripe_event(body).expect("an event");
            assert!(
                sparse.object_text.is_some() || name.starts_with("invoice."),
                "{name}: not read sparsely"
            );
            readings_agree(body, &projection)
                .unwrap_or_else(|difference| panic!("{name}: {difference}"));
        }
    }
}

async fn the_shared_clerk_fixtures_all_ingest(db: TestDatabase) {
    let Some(fixtures) = shared_fixtures("clerk") else {
        return;
    };
    assert!(fixtures.len() >= 10, "{} Clerk fixtures", fixtures.len());
    let server = start(&db, &[]).await;
    let t = now();
    for (index, (name, body)) in fixtures.iter().enumerate() {
        let response = post_clerk(
            &server,
            CLERK_SECRET,
            &format!("msg_fixture_{index}"),
            t,
            body,
        )
        .await;
        let (status, json) = status_and_json(response).await;
        assert_eq!(
            (status, json["status"].as_str()),
            (200, Some("processed")),
            "{name}: {json}"
        );
    }
    let store = Store::connect(&db.url).await.expect("connect");
    let db_conn = store.connection();
    let org = organizations::Entity::find_by_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S".to_owned())
        .one(db_conn)
        .await
        .expect("query")
        .expect("organization");
    assert!(
        org.deleted_at.is_some(),
        "organization.deleted is among the fixtures"
    );
    let member = organization_memberships::Entity::find_by_id(
        "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S".to_owned(),
    )
    .one(db_conn)
    .await
    .expect("query")
    .expect("membership");
    assert_eq!(member.user_id, "user_2h8op3Isl1QR7tKu5FGNfaLKEoU");
    assert!(member.deleted_at.is_some());
    let docs_user = users::Entity::find_by_id("user_29w83sxmDNGwOuEthce5gg56FcC".to_owned())
        .one(db_conn)
        .await
        .expect("query")
        .expect("the docs example's user");
    assert_eq!(
        docs_user.primary_email.as_deref(),
        Some("example@example.org")
    );
    assert!(
        store
            .active_memberships("user_2h8op3Isl1QR7tKu5FGNfaLKEoU")
            .await
            .expect("query")
            .is_empty()
    );
}

#[tokio::test]
async fn unconfigured_webhook_routes_fail_closed_with_503() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let server = Server::start(&db.url, &[]).await;
    let body = stripe_event("evt_nc", "customer.created", json!({"id": "cus_nc"}));
    let (status, json) = status_and_json(
        post_stripe(
            &server,
            &body,
            Some(stripe_signature("whsec_x", now(), &body)),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (503, Some("NOT_CONFIGURED"))
    );
    let (status, json) =
        status_and_json(post_clerk(&server, CLERK_SECRET, "msg_nc", now(), &body).await).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (503, Some("NOT_CONFIGURED"))
    );
    assert_eq!(ledger_len(&db).await, 0);
}

billing_sync_testkit::postgres_test! {
    #[tokio::test]
    async fn database_down_answers_503_and_the_retry_is_applied_once_it_is_back() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let server = start(&db, &[]).await;
        let database = db.url.rsplit('/').next().expect("name").to_owned();
        let admin_url = std::env::var(billing_sync_testkit::POSTGRES_URL_VAR).expect("admin URL");
        let admin = Store::connect(&admin_url).await.expect("admin");
        let admin = admin.connection();
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
            ))
            .await
            .expect("refuse connections");
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
            ))
            .await
            .expect("drop the server's connections");

        let t = now();
        let stripe_body = stripe_event("evt_down", "customer.created", json!({"id": "cus_down"}));
        let clerk_body = clerk_event("user.created", json!({"id": "user_down", "updated_at": 7}));
        // One delivery from each provider, as their senders would (re)try it: (status, body) each.
        let deliver_both = || async {
            let stripe = status_and_json(
                post_stripe(
                    &server,
                    &stripe_body,
                    Some(stripe_signature(STRIPE_SECRET, t, &stripe_body)),
                )
                .await,
            )
            .await;
            let clerk =
                status_and_json(post_clerk(&server, CLERK_SECRET, "msg_down", t, &clerk_body).await)
                    .await;
            [stripe, clerk]
        };
        for (status, json) in deliver_both().await {
            assert_eq!(
                (status, json["code"].as_str()),
                (503, Some("UNAVAILABLE")),
                "{json}"
            );
        }
        let ready = support::http()
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("probe");
        assert_eq!(ready.status(), 503);

        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
            ))
            .await
            .expect("accept connections again");
        // The senders' retries.
        for (status, json) in deliver_both().await {
            assert_eq!(
                (status, json["status"].as_str()),
                (200, Some("processed")),
                "{json}"
            );
        }
        assert_eq!(ledger_len(&db).await, 2);
    }
}

#[tokio::test]
async fn with_refetch_the_current_stripe_object_is_stored_whatever_the_event_carried() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let stripe = support::standins::StripeStandIn::start(&[]).await;
    let server = start(
        &db,
        &[
            ("STRIPE_REFETCH_OBJECTS", "true"),
            ("STRIPE_SECRET_KEY", "sk_test_refetch"),
            ("STRIPE_API_BASE", stripe.base_url.as_str()),
        ],
    )
    .await;
    let current = json!({"id": "cus_rf", "object": "customer", "email": "current@acme.example",
                         "metadata": {"organization_id": "org_rf"}, "livemode": false});
    stripe.set_object("customers/cus_rf", current);
    let send = |id: &'static str, event_type: &'static str, email: &'static str| {
        let body = stripe_event(
            id,
            event_type,
            json!({"id": "cus_rf", "object": "customer", "email": email}),
        );
        let server = &server;
        async move {
            let response = post_stripe(
                server,
                &body,
                Some(stripe_signature(STRIPE_SECRET, now(), &body)),
            )
            .await;
            status_and_json(response).await
        }
    };
    let customer = |store: Store| async move {
        stripe_customers::Entity::find_by_id("cus_rf".to_owned())
            .one(store.connection())
            .await
            .expect("query")
            .expect("customer")
    };
    let store = Store::connect(&db.url).await.expect("connect");

    assert_eq!(
        send("evt_rf_1", "customer.updated", "payload@acme.example")
            .await
            .0,
        200
    );
    // A stale creation delivered late still stores what Stripe has now.
    assert_eq!(
        send("evt_rf_0", "customer.created", "old@acme.example")
            .await
            .0,
        200
    );
    let row = customer(store.clone()).await;
    assert_eq!(row.email.as_deref(), Some("current@acme.example"));
    assert_eq!(row.organization_id.as_deref(), Some("org_rf"));
    assert_eq!(stripe.retrievals(), 2);

    stripe.set_object(
        "customers/cus_rf",
        json!({"id": "cus_rf", "object": "customer", "deleted": true}),
    );
    assert_eq!(
        send("evt_rf_2", "customer.deleted", "x@acme.example")
            .await
            .0,
        200
    );
    let row = customer(store.clone()).await;
    assert!(row.deleted_at.is_some());
    assert_eq!(
        row.organization_id.as_deref(),
        Some("org_rf"),
        "the link survives the stub"
    );

    // Stripe down: 503 so Stripe retries, and nothing is stored.
    stripe.fail_retrievals(3);
    let before = ledger_len(&db).await;
    let (status, json) = send("evt_rf_3", "customer.updated", "y@acme.example").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (503, Some("UPSTREAM_UNAVAILABLE")),
        "{json}"
    );
    assert_eq!(ledger_len(&db).await, before);
    // Other event types are not refetched.
    assert_eq!(
        send("evt_rf_4", "invoice.created", "z@acme.example")
            .await
            .1["status"],
        "ignored"
    );
}

#[tokio::test]
async fn metrics_count_deliveries_by_provider_type_and_outcome() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let server = start(&db, &[]).await;
    let body = stripe_event("evt_metrics", "customer.created", json!({"id": "cus_m"}));
    for _ in 0..2 {
        let signature = stripe_signature(STRIPE_SECRET, now(), &body);
        assert_eq!(
            post_stripe(&server, &body, Some(signature)).await.status(),
            200
        );
    }
    assert_eq!(
        post_stripe(&server, &body, Some("garbage".into()))
            .await
            .status(),
        400
    );
    let text = server.get_text("/metrics").await;
    let sample = |outcome: &str, event_type: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("billing_sync_webhook_deliveries_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains(&format!("event_type=\"{event_type}\""))
                    && l.contains("provider=\"stripe\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        sample("processed", "customer.created").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample("duplicate", "customer.created").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample("rejected_signature_invalid", "unknown").as_deref(),
        Some("1"),
        "{text}"
    );
    // Histograms with buckets, which add up across replicas, not summaries' quantiles.
    for family in [
        "billing_sync_webhook_record_seconds",
        "billing_sync_webhook_batch_size",
    ] {
        assert!(text.contains(&format!("{family}_bucket{{")), "{text}");
    }
    assert!(!text.contains("quantile="), "{text}");
    assert!(
        text.contains("billing_sync_db_connections{state=\"idle\"}"),
        "{text}"
    );
}

/// PostgreSQL cannot store U+0000 in `text`; a signed event holding one used to answer 500
/// forever. The ledger keeps the body as received (its escape `\u0000` is six characters of
/// text); the projected values hold U+FFFD in its place, the same on both backends, and a
/// membership deletion carrying one still ends the membership.
async fn a_signed_payload_holding_nul_is_recorded_and_projected_on_both_backends(db: TestDatabase) {
    let server = start(&db, &[]).await;
    let body = stripe_event(
        "evt_nul",
        "customer.updated",
        json!({"id": "cus_nul", "object": "customer", "name": "Acme\u{0}Corp",
               "metadata": {"note\u{0}": "x\u{0}y"}}),
    );
    assert!(
        body.windows(6).any(|w| w == b"\\u0000"),
        "the body carries the JSON escape"
    );
    let (status, json) = deliver_stripe(&server, &body).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
    let store = Store::connect(&db.url).await.expect("connect");
    let customer = stripe_customers::Entity::find_by_id("cus_nul".to_owned())
        .one(store.connection())
        .await
        .expect("read")
        .expect("the customer is stored");
    assert_eq!(customer.name.as_deref(), Some("Acme\u{FFFD}Corp"));
    let row = ledger_row(&store, Provider::Stripe, "evt_nul")
        .await
        .expect("the event is in the ledger");
    assert_eq!(row.status, "processed");
    assert_eq!(
        row.payload.as_bytes(),
        body.as_slice(),
        "the ledger keeps the body as received: the escape `\\u0000` is only text"
    );

    // The membership-deletion chain: the removed member must lose access.
    support::add_member(&server, CLERK_SECRET, "org_nul", "user_nul").await;
    assert!(
        store
            .active_membership("user_nul", "org_nul")
            .await
            .expect("read")
            .is_some()
    );
    let mut deleted: serde_json::Value = serde_json::from_slice(&support::membership_body(
        "organizationMembership.deleted",
        "org_nul",
        "user_nul",
    ))
    .expect("JSON");
    deleted["data"]["public_user_data"]["first_name"] = json!("Eve\u{0}");
    deleted["data"]["updated_at"] = json!(now() * 1000);
    let deleted = serde_json::to_vec(&deleted).expect("JSON");
    let response = post_clerk(&server, CLERK_SECRET, "msg_nul_delete", now(), &deleted).await;
    let (status, json) = status_and_json(response).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
    assert!(
        store
            .active_membership("user_nul", "org_nul")
            .await
            .expect("read")
            .is_none(),
        "the removed member has no membership left"
    );
}

billing_sync_testkit::postgres_test! {
    /// A deadlock (40P01) is a reason of the moment, not of the event: the writer tries again and
    /// the event is applied, never acknowledged as `failed`. When the database keeps refusing,
    /// the answer is 503 and nothing is recorded, so the provider retries. The deadlocks are real
    /// PostgreSQL errors, raised by a trigger for as long as the test wants them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlock_is_retried_and_never_acknowledged_as_failed() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let server = start(&db, &[]).await;
        let store = Store::connect(&db.url).await.expect("connect");
        store
            .connection()
            .execute_unprepared(
                "CREATE SEQUENCE deadlocks; \
                 CREATE FUNCTION deadlock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   IF NEW.id = 'cus_always' OR nextval('deadlocks') <= 2 THEN \
                     RAISE EXCEPTION 'simulated deadlock' USING ERRCODE = '40P01'; \
                   END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER deadlock BEFORE INSERT ON stripe_customers \
                   FOR EACH ROW EXECUTE FUNCTION deadlock();",
            )
            .await
            .expect("install the deadlocking trigger");

        // Two deadlocks, then the write goes through: applied, acknowledged as processed.
        let body = stripe_event(
            "evt_deadlock",
            "customer.created",
            json!({"id": "cus_deadlock"}),
        );
        let (status, json) = deliver_stripe(&server, &body).await;
        assert_eq!(
            (status, json["status"].as_str()),
            (200, Some("processed")),
            "{json}"
        );
        let row = ledger_row(&store, Provider::Stripe, "evt_deadlock")
            .await
            .expect("recorded");
        assert_eq!(row.status, "processed");

        // Deadlocks every time: 503, nothing recorded; once they stop, the retry is applied.
        refused_then_applied(&server, &store, "evt_always", "cus_always", "deadlock").await;
        assert_eq!(
            failed_rows(&store).await,
            0,
            "no event was recorded as failed"
        );
    }
}

/// Delivers a `customer.created` of `customer` as event `event_id` while the trigger `trigger`
/// on `stripe_customers` makes the database refuse it: 503 `UNAVAILABLE` and nothing recorded.
/// Then drops the trigger and delivers it again: applied.
async fn refused_then_applied(
    server: &Server,
    store: &Store,
    event_id: &str,
    customer: &str,
    trigger: &str,
) {
    let body = stripe_event(event_id, "customer.created", json!({"id": customer}));
    let (status, json) = deliver_stripe(server, &body).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{trigger}: {json}"
    );
    assert!(
        ledger_row(store, Provider::Stripe, event_id)
            .await
            .is_none(),
        "{trigger}: nothing is recorded for an event that must be retried"
    );
    store
        .connection()
        .execute_unprepared(&format!("DROP TRIGGER {trigger} ON stripe_customers"))
        .await
        .expect("drop the trigger");
    let (status, json) = deliver_stripe(server, &body).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{trigger}: the redelivery is applied: {json}"
    );
}

/// The number of `failed` rows in the ledger.
async fn failed_rows(store: &Store) -> usize {
    store
        .list_events(&EventFilter {
            status: Some(billing_sync_store::ledger::EventStatus::Failed),
            ..Default::default()
        })
        .await
        .expect("list")
        .len()
}

billing_sync_testkit::postgres_test! {
    /// Errors that are the database's trouble, not the event's (a full disk, an I/O error, a
    /// cancelled statement, out of memory, a code nobody listed), raised by a trigger while the
    /// event is applied: 503 and nothing recorded, never 200 `failed`; the redelivery is applied
    /// once the trouble is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_error_that_is_not_the_events_fault_is_answered_503_and_never_failed() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let server = start(&db, &[]).await;
        let store = Store::connect(&db.url).await.expect("connect");
        for code in ["53100", "58030", "57014", "53200", "XX001"] {
            store
                .connection()
                .execute_unprepared(&format!(
                    "CREATE OR REPLACE FUNCTION trouble() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                       RAISE EXCEPTION 'simulated trouble' USING ERRCODE = '{code}'; END $$; \
                     CREATE TRIGGER trouble BEFORE INSERT ON stripe_customers \
                       FOR EACH ROW EXECUTE FUNCTION trouble();"
                ))
                .await
                .expect("install the failing trigger");
            refused_then_applied(
                &server,
                &store,
                &format!("evt_trouble_{code}"),
                &format!("cus_trouble_{code}"),
                "trouble",
            )
            .await;
        }
        assert_eq!(
            failed_rows(&store).await,
            0,
            "no event was recorded as failed"
        );
    }
}

billing_sync_testkit::postgres_test! {
    /// With every apply timing out (the database's `statement_timeout` at 1 ms, and a trigger that
    /// makes applying a customer take longer), signed deliveries answer 503 and leave no `failed`
    /// row; once the timeout is lifted, their redelivery is applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_timeout_is_answered_503_and_the_redelivery_applied_once_lifted() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = Store::connect(&db.url).await.expect("connect");
        store.migrate_up().await.expect("migrate");
        let database = url::Url::parse(&db.url).expect("a URL").path()[1..].to_owned();
        store
            .connection()
            .execute_unprepared(&format!(
                "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   PERFORM pg_sleep(0.05); RETURN NEW; END $$; \
                 CREATE TRIGGER slow BEFORE INSERT ON stripe_customers \
                   FOR EACH ROW EXECUTE FUNCTION slow(); \
                 ALTER DATABASE \"{database}\" SET statement_timeout = '1ms';"
            ))
            .await
            .expect("install the slow trigger and the timeout");
        // A server started now opens its connections with the 1 ms timeout (its schema is
        // migrated already: a migration could not finish in 1 ms).
        let server = Server::start_with_args(
            &db.url,
            &["--no-migrate"],
            &[
                ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
                ("CLERK_WEBHOOK_SECRET", CLERK_SECRET),
            ],
        )
        .await;
        let bodies: Vec<Vec<u8>> = (0..3)
            .map(|n| {
                stripe_event(
                    &format!("evt_timeout_{n}"),
                    "customer.created",
                    json!({"id": format!("cus_timeout_{n}"), "name": "O'Brien"}),
                )
            })
            .collect();
        for body in &bodies {
            let (status, json) = deliver_stripe(&server, body).await;
            assert_eq!(
                (status, json["code"].as_str()),
                (503, Some("UNAVAILABLE")),
                "{json}"
            );
        }
        server.terminate().await;
        store
            .connection()
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{database}\" RESET statement_timeout"
            ))
            .await
            .expect("lift the timeout");
        assert_eq!(
            ledger_len(&db).await,
            0,
            "nothing recorded while timing out"
        );

        let server = start(&db, &[]).await;
        for body in &bodies {
            let (status, json) = deliver_stripe(&server, body).await;
            assert_eq!(
                (status, json["status"].as_str()),
                (200, Some("processed")),
                "{json}"
            );
        }
        assert_eq!(
            failed_rows(&store).await,
            0,
            "no event was recorded as failed"
        );
        let customers = stripe_customers::Entity::find()
            .all(store.connection())
            .await
            .expect("read the customers");
        assert_eq!(customers.len(), 3, "every redelivery is applied");
    }
}

billing_sync_testkit::postgres_test! {
    /// A server with `backslash_quote = off` refuses `\'` in a string literal: a batch message
    /// holding apostrophes must still go as one message, never falling back statement by statement.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apostrophes_go_in_one_batch_message_whatever_backslash_quote_says() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let store = Store::connect(&db.url).await.expect("connect");
        let database = url::Url::parse(&db.url).expect("a URL").path()[1..].to_owned();
        store
            .connection()
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{database}\" SET backslash_quote = off"
            ))
            .await
            .expect("set backslash_quote");
        let server = start(&db, &[]).await;
        for n in 0..4 {
            let body = stripe_event(
                &format!("evt_quote_{n}"),
                "customer.created",
                json!({"id": format!("cus_quote_{n}"), "name": "Miles O'Brien",
                       "description": "it's a \\ backslash and a ' quote"}),
            );
            let (status, json) = deliver_stripe(&server, &body).await;
            assert_eq!(
                (status, json["status"].as_str()),
                (200, Some("processed")),
                "{json}"
            );
        }
        let customer = stripe_customers::Entity::find_by_id("cus_quote_3".to_owned())
            .one(store.connection())
            .await
            .expect("query")
            .expect("the customer");
        assert_eq!(customer.name.as_deref(), Some("Miles O'Brien"));
        assert_no_batch_fell_back(&server).await;
    }
}

/// The ledger keeps a delivery's body as it was received, byte for byte, on both backends: the
/// payload is stored as text and never serialised a second time.
async fn the_ledger_stores_the_body_as_received(db: TestDatabase) {
    let server = start(&db, &[]).await;
    // Keys out of order, spaces and an integer beyond 64 bits: what a re-serialisation would
    // change.
    let body = format!(
        r#"{{ "type": "customer.created", "id": "evt_as_received", "object": "event",
             "created": {}, "livemode": false, "data": {{ "object": {{ "id": "cus_as_received",
             "balance": 123456789012345678901234567890 }} }} }}"#,
        now()
    );
    let (status, json) = deliver_stripe(&server, body.as_bytes()).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("processed")),
        "{json}"
    );
    let store = Store::connect(&db.url).await.expect("connect");
    let row = ledger_row(&store, Provider::Stripe, "evt_as_received")
        .await
        .expect("the row");
    assert_eq!(row.payload, body);
    let customer = stripe_customers::Entity::find_by_id("cus_as_received".to_owned())
        .one(store.connection())
        .await
        .expect("read")
        .expect("the customer");
    assert!(
        customer
            .raw
            .as_deref()
            .is_some_and(|raw| raw.contains("123456789012345678901234567890")),
        "raw keeps the object's text: {:?}",
        customer.raw
    );
}

/// Times a signed event may carry: before year 1 (written as a BC literal in PostgreSQL's batch
/// message) and before any time a database holds (projected as absent): both processed.
async fn times_before_year_one_and_before_any_database_are_recorded_and_projected(
    db: TestDatabase,
) {
    let server = start(&db, &[]).await;
    for (n, trial_end) in [(1, -62_135_596_801_i64), (2, i64::MIN)] {
        let body = stripe_event(
            &format!("evt_ancient_{n}"),
            "customer.subscription.created",
            json!({"id": format!("sub_ancient_{n}"), "object": "subscription",
                   "customer": "cus_ancient", "status": "trialing", "trial_end": trial_end,
                   "created": 1_700_000_000, "items": {"object": "list", "data": []}}),
        );
        let (status, json) = deliver_stripe(&server, &body).await;
        assert_eq!(
            (status, json["status"].as_str()),
            (200, Some("processed")),
            "trial_end {trial_end}: {json}"
        );
    }
    let store = Store::connect(&db.url).await.expect("connect");
    let ancient = stripe_subscriptions::Entity::find_by_id("sub_ancient_1".to_owned())
        .one(store.connection())
        .await
        .expect("query")
        .expect("the subscription");
    assert_eq!(
        ancient.trial_end.map(|at| at.timestamp()),
        Some(-62_135_596_801)
    );
    let absurd = stripe_subscriptions::Entity::find_by_id("sub_ancient_2".to_owned())
        .one(store.connection())
        .await
        .expect("query")
        .expect("the subscription");
    assert_eq!(absurd.trial_end, None);
    assert_no_batch_fell_back(&server).await;
}

/// Every batch went to PostgreSQL as one message: none fell back to statements.
async fn assert_no_batch_fell_back(server: &Server) {
    let metrics = server.get_text("/metrics").await;
    let fallbacks: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with(billing_sync_store::ledger::BATCH_FALLBACKS))
        .collect();
    assert!(
        fallbacks.is_empty(),
        "no batch fell back to statements: {fallbacks:?}"
    );
}

/// Pieces of JSON string content a signer may put in a string: escapes `jsonb` refuses (a lone
/// surrogate, U+0000), every other escape, and raw Unicode.
const STRING_PIECES: [&str; 14] = [
    "plain",
    "\\ud800",
    "\\udfff",
    "\\ud83d\\ude00",
    "\\u0000",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\u00e9",
    "é😀",
    "'",
    "$1",
    "\\u2028",
];

/// Numbers a signer may write: beyond every float and integer range, tiny, negative zero.
const NUMBERS: [&str; 10] = [
    "1e1000000",
    "-1e-1000000",
    "123456789012345678901234567890",
    "-98765432109876543210",
    "0.000000000000000000000000000001",
    "-0",
    "1.7976931348623157e308",
    "4.9e-324",
    "42",
    "3.5E+2",
];

/// Random JSON text, `depth` levels deep at most.
fn random_json(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
    use rand::Rng;
    let string = |rng: &mut rand::rngs::StdRng| {
        let pieces: String = (0..rng.random_range(0..4))
            .map(|_| STRING_PIECES[rng.random_range(0..STRING_PIECES.len())])
            .collect();
        format!("\"{pieces}\"")
    };
    match rng.random_range(0..if depth == 0 { 4 } else { 6 }) {
        0 => string(rng),
        1 => NUMBERS[rng.random_range(0..NUMBERS.len())].to_owned(),
        2 => ["true", "false", "null"][rng.random_range(0..3)].to_owned(),
        3 => format!("{}", rng.random::<i64>()),
        4 => {
            let items: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let fields: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| format!("{}: {}", string(rng), random_json(rng, depth - 1)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

/// Any valid JSON a provider may sign, in and around `data.object` (lone surrogates, numbers
/// beyond every range, deep nesting, U+0000, escapes), is answered 2xx or 400 — never 5xx —
/// and a recorded delivery's stored payload is the body, byte for byte. Run on both backends;
/// PostgreSQL is the one whose `jsonb` used to refuse some of it forever.
async fn any_signed_json_is_recorded_exactly_or_refused_with_a_4xx(db: TestDatabase) {
    use rand::{Rng, SeedableRng};
    let server = start(&db, &[]).await;
    let store = Store::connect(&db.url).await.expect("connect");
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let types = [
        "customer.updated",
        "customer.subscription.updated",
        "product.updated",
        "checkout.session.completed",
        "invoice.paid",
    ];
    let (mut recorded, mut refused) = (0, 0);
    for case in 0..160 {
        let event_type = types[rng.random_range(0..types.len())];
        let fields: Vec<String> = (0..rng.random_range(0..6))
            .map(|n| format!("\"f{n}\": {}", random_json(&mut rng, 4)))
            .collect();
        let mut object = format!("\"id\": \"obj_prop_{case}\"");
        for field in fields {
            object.push_str(", ");
            object.push_str(&field);
        }
        if case % 20 == 0 {
            // Deeper than any parser's default recursion limit.
            object.push_str(&format!(
                ", \"deep\": {}0{}",
                "[".repeat(300),
                "]".repeat(300)
            ));
        }
        let body = format!(
            r#"{{"id": "evt_prop_{case}", "object": "event", "type": "{event_type}", "created": {},
               "livemode": false, "around": {}, "data": {{"object": {{{object}}},
               "previous_attributes": {}}}}}"#,
            now(),
            random_json(&mut rng, 3),
            random_json(&mut rng, 2),
        );
        assert!(
            serde_json::from_str::<Box<serde_json::value::RawValue>>(&body).is_ok()
                || case % 20 == 0,
            "case {case}: the generator writes valid JSON: {body}"
        );
        let (status, json) = deliver_stripe(&server, body.as_bytes()).await;
        match status {
            200 => {
                recorded += 1;
                let row = ledger_row(&store, Provider::Stripe, &format!("evt_prop_{case}"))
                    .await
                    .unwrap_or_else(|| panic!("case {case}: acknowledged but not in the ledger"));
                assert_eq!(row.payload, body, "case {case}: stored as received");
            }
            400 => {
                refused += 1;
                assert_eq!(json["code"], "INVALID_PAYLOAD", "case {case}: {json}");
            }
            other => panic!("case {case}: answered {other} {json} for {body}"),
        }
    }
    eprintln!("signed JSON cases: {recorded} recorded, {refused} refused with 400");
    assert!(recorded > refused, "most cases are recorded");
}
