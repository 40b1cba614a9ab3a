//! Billing state flows out (docs/billing-flows-out.md): the app's webhook gets signed billing
//! events, Clerk's organization metadata follows the billing state, and the feed lists the
//! events in commit order — through receivers that fail for a while, after a kill, on both
//! backends, against the real binary.

use crate::plans::{entitlement_summary, subscription};
use crate::support;

use std::time::Duration;

use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use serde_json::{Value, json};
use support::operations::{setup, stripe_event};
use support::receivers::{Received, ReceiverStandIn};
use support::{Server, now, status_and_json};

const APP_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLERK_SECRET_KEY: &str = "sk_test_outbox_clerk";
const API_KEY: &str = "bsk_test_0123456789abcdef0123456789abcdef";

each_backend!(
    a_subscription_delivered_out_of_order_ends_in_clerk_and_at_the_app_through_their_outages,
    a_balance_going_below_the_threshold_is_told_once_each_time,
);

/// The settings that send billing to `app` and `clerk`.
fn destinations<'a>(
    app: &'a ReceiverStandIn,
    clerk: &'a ReceiverStandIn,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("APP_WEBHOOK_URL", app.base_url.as_str()),
        ("APP_WEBHOOK_SECRET", APP_WEBHOOK_SECRET),
        ("CLERK_SECRET_KEY", CLERK_SECRET_KEY),
        ("CLERK_API_BASE", clerk.base_url.as_str()),
        ("BILLING_API_KEYS", API_KEY),
    ]
}

/// A subscription's lifecycle for `org` (customer `cus`), delivered out of order: the update
/// that activates it and the entitlements before the creation, the checkout that links the
/// customer last.
async fn lifecycle(server: &Server, org: &str, cus: &str) {
    let t = now() - 3_600;
    let sub = format!("sub_{org}");
    stripe_event(
        server,
        &format!("evt_{org}_updated"),
        "customer.subscription.updated",
        t + 10,
        subscription(&sub, cus, org, "active", None),
    )
    .await;
    stripe_event(
        server,
        &format!("evt_{org}_entitlements"),
        "entitlements.active_entitlement_summary.updated",
        t + 12,
        entitlement_summary(cus, &["sso", "api"]),
    )
    .await;
    stripe_event(
        server,
        &format!("evt_{org}_created"),
        "customer.subscription.created",
        t,
        subscription(&sub, cus, org, "incomplete", None),
    )
    .await;
    stripe_event(
        server,
        &format!("evt_{org}_checkout"),
        "checkout.session.completed",
        t + 1,
        json!({"id": format!("cs_{org}"), "object": "checkout.session", "mode": "subscription",
               "created": t + 1, "customer": cus, "metadata": {"organization_id": org},
               "livemode": false}),
    )
    .await;
}

/// Whether a delivery's signature verifies with `secret`, as a Standard Webhooks library
/// checks it (the svix crate, which verifies `webhook-*` headers).
fn verifies(received: &Received, secret: &str, body: &[u8]) -> bool {
    let mut headers = poem::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Ok(value) = received.header(name).parse() {
            headers.insert(name, value);
        }
    }
    svix::webhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .verify(body, &headers)
        .is_ok()
}

/// What `./scripts/test` sets so that a missing `standardwebhooks` fails the test.
const REQUIRE_STANDARD_WEBHOOKS: &str = "BILLING_SYNC_TEST_REQUIRE_STANDARD_WEBHOOKS";

/// Whether each delivery verifies with `secret` in Python's `standardwebhooks` (the reference
/// library of the Standard Webhooks specification, what an app's receiver would run), each
/// given as its headers and the body it is checked against. `None` when the library is not
/// installed and `./scripts/test` (which installs it) did not require it.
async fn standard_webhooks_verify(
    secret: &str,
    deliveries: &[(&Received, &[u8])],
) -> Option<Vec<bool>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    sys.exit(3)
request = json.load(sys.stdin)
webhook = Webhook(request["secret"])
verified = []
for delivery in request["deliveries"]:
    try:
        webhook.verify(delivery["body"].encode(), delivery["headers"])
        verified.append(True)
    except WebhookVerificationError:
        verified.append(False)
print(json.dumps(verified))
"#;
    let python = support::tool("python3", REQUIRE_STANDARD_WEBHOOKS)?;
    let request = json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|(received, body)| json!({
            "headers": received.headers,
            "body": String::from_utf8_lossy(body),
        })).collect::<Vec<_>>(),
    });
    let mut child = tokio::process::Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().expect("its stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, request.to_string().as_bytes())
        .await
        .expect("write the deliveries");
    drop(stdin);
    let output = child.wait_with_output().await.expect("python3's answer");
    if output.status.code() == Some(3) {
        support::missing(
            "Python's standardwebhooks: python3 cannot import it",
            REQUIRE_STANDARD_WEBHOOKS,
        );
        return None;
    }
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("a list of verdicts"))
}

/// Every event of the feed, paged one at a time with the cursor.
async fn feed(server: &Server) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let response = support::http()
            .get(server.url(&format!("/api/v1/events?limit=1&after={after}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("GET the feed");
        let (status, page) = status_and_json(response).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["data"].as_array().cloned().unwrap_or_default());
        let next = page["next_after"].as_i64().expect("a cursor");
        if page["has_more"] != true {
            assert!(page["data"].as_array().is_some_and(|page| page.len() <= 1));
            return events;
        }
        assert!(next > after, "the cursor moves on");
        after = next;
    }
}

/// The lifecycle's final state (active, `api` and `sso`) reaches Clerk's metadata (without
/// touching the app's own key) and the app's webhook, though the app answers 503 then 429 with
/// `Retry-After` and Clerk 429: no request comes before `Retry-After` has elapsed, every
/// delivery is signed (verified by the svix crate and Python's standardwebhooks, a tampered one
/// refused by both), the versions the app took never go down, and the feed gives every event
/// once across pages of one.
async fn a_subscription_delivered_out_of_order_ends_in_clerk_and_at_the_app_through_their_outages(
    db: TestDatabase,
) {
    let app = ReceiverStandIn::app().await;
    let clerk = ReceiverStandIn::clerk().await;
    app.script(&[(503, None), (429, Some(2))]);
    clerk.script(&[(429, Some(1))]);
    clerk.set_metadata("org_flow", json!({"app_key": "keep"}));
    let s = setup(&db, &[], &destinations(&app, &clerk)).await;
    lifecycle(&s.server, "org_flow", "cus_flow").await;

    let expected_billing = |version: &Value| {
        json!({"active": true, "features": ["api", "sso"], "plan": "prod_team",
               "status": "active", "period_end": 1_765_678_400, "version": version})
    };
    let metadata = support::wait_for(
        "Clerk's metadata to follow",
        Duration::from_secs(30),
        || async {
            let metadata = clerk.metadata("org_flow");
            let billing = &metadata["billing"];
            (billing["active"] == true && billing["features"] == json!(["api", "sso"]))
                .then_some(metadata)
        },
    )
    .await;
    assert_eq!(
        metadata,
        json!({"app_key": "keep", "billing": expected_billing(&metadata["billing"]["version"])})
    );

    let taken = support::wait_for(
        "the app to take the final state",
        Duration::from_secs(40),
        || async {
            let received = app.received();
            let done = received
                .iter()
                .rev()
                .find(|r| r.status == 200)
                .is_some_and(|r| {
                    let event = r.json();
                    event["type"] == "billing.updated"
                        && event["data"]["active"] == true
                        && event["data"]["entitlements"] == json!(["api", "sso"])
                });
            done.then_some(received)
        },
    )
    .await;
    for received in &taken {
        assert!(
            verifies(received, APP_WEBHOOK_SECRET, &received.body),
            "{:?}",
            received.headers
        );
        assert_eq!(received.header("webhook-id"), received.json()["id"]);
    }
    let mut tampered = taken[0].body.clone();
    tampered[0] = b' ';
    assert!(!verifies(&taken[0], APP_WEBHOOK_SECRET, &tampered));
    let mut checked: Vec<(&Received, &[u8])> =
        taken.iter().map(|r| (r, r.body.as_slice())).collect();
    checked.push((&taken[0], &tampered));
    if let Some(verdicts) = standard_webhooks_verify(APP_WEBHOOK_SECRET, &checked).await {
        let mut expected = vec![true; taken.len()];
        expected.push(false);
        assert_eq!(
            verdicts, expected,
            "standardwebhooks' verdicts, the tampered one last"
        );
    }
    // The 429 said 2 s: nothing came sooner.
    let refused = taken.iter().position(|r| r.status == 429).expect("the 429");
    let next = taken.get(refused + 1).expect("a request after the 429");
    assert!(
        next.at.duration_since(taken[refused].at) >= Duration::from_secs(2),
        "{:?} after Retry-After: 2",
        next.at.duration_since(taken[refused].at)
    );
    let versions: Vec<i64> = taken
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["version"].as_i64().expect("a version"))
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    // Clerk was answered 429 (1 s) once, and not asked again sooner.
    let clerk_requests = clerk.received();
    assert!(
        clerk_requests[1].at.duration_since(clerk_requests[0].at) >= Duration::from_secs(1),
        "Clerk asked again before its Retry-After"
    );

    let events = feed(&s.server).await;
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "each event once");
    let last = events.last().expect("events");
    assert_eq!(last["type"], "billing.updated");
    assert_eq!(last["organization_id"], "org_flow");
    assert_eq!(last["data"]["entitlements"], json!(["api", "sso"]));
    for taken_event in taken.iter().filter(|r| r.status == 200) {
        let id = taken_event.json()["id"].as_str().expect("an id").to_owned();
        assert!(ids.contains(&id.as_str()), "the app's {id} is in the feed");
    }
    // A restored Clerk (the metadata gone): `outbox republish` writes it again.
    clerk.set_metadata("org_flow", json!({"app_key": "keep"}));
    let republished = support::run(
        &["outbox", "republish"],
        &[("DATABASE_URL", db.url.as_str())],
    )
    .await;
    assert!(republished.status.success(), "{}", republished.stderr);
    assert!(
        republished.stdout.contains("organizations marked"),
        "{}",
        republished.stdout
    );
    support::wait_for(
        "Clerk's metadata written again",
        Duration::from_secs(30),
        || async {
            (clerk.metadata("org_flow")["billing"]["features"] == json!(["api", "sso"]))
                .then_some(())
        },
    )
    .await;

    let unauthenticated = support::http()
        .get(s.server.url("/api/v1/events"))
        .send()
        .await
        .expect("GET");
    assert_eq!(unauthenticated.status(), 401);
}

billing_sync_testkit::postgres_test! {
    /// A billing-sync killed right after acknowledging the events, before anything was sent,
    /// still sends what they changed once it is back: the change's outbox row was committed with
    /// it. (The first server has no destination, so it publishes nothing: the kill lands in the
    /// window between the commit and the sending, whatever the timing.)
    #[tokio::test]
    async fn a_change_acknowledged_before_a_kill_still_goes_out_after_the_restart() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let s = setup(&db, &[], &[]).await;
        lifecycle(&s.server, "org_kill", "cus_kill").await;
        // Without BILLING_API_KEYS the feed is not configured, as its document says.
        let unconfigured = support::http()
            .get(s.server.url("/api/v1/events"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("GET the feed");
        let (status, answer) = status_and_json(unconfigured).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (500, Some("INTERNAL_ERROR")),
            "{answer}"
        );
        s.server.kill().await;
        let app_after = ReceiverStandIn::app().await;
        let clerk_after = ReceiverStandIn::clerk().await;
        let _restarted = setup(&db, &[], &destinations(&app_after, &clerk_after)).await;
        support::wait_for(
            "the app to get the change after the restart",
            Duration::from_secs(30),
            || async {
                app_after
                    .received()
                    .iter()
                    .any(|r| {
                        let event = r.json();
                        r.status == 200
                            && event["organization_id"] == "org_kill"
                            && event["data"]["entitlements"] == json!(["api", "sso"])
                    })
                    .then_some(())
            },
        )
        .await;
        support::wait_for(
            "Clerk to get the change after the restart",
            Duration::from_secs(30),
            || async {
                (clerk_after.metadata("org_kill")["billing"]["features"] == json!(["api", "sso"]))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Posts `body` to the ledger's `path` with the API key; the status.
async fn ledger_write(server: &Server, path: &str, body: Value) -> u16 {
    support::http()
        .post(server.url(path))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// A balance that goes below `CREDITS_LOW_BALANCE_THRESHOLD` sends `credits.balance_low` once;
/// spending more below it sends nothing more; back above and below again, once more. On
/// PostgreSQL the decisions that cross the threshold write with the outbox's marks in one
/// transaction, the others in their one statement.
async fn a_balance_going_below_the_threshold_is_told_once_each_time(db: TestDatabase) {
    let app = ReceiverStandIn::app().await;
    let clerk = ReceiverStandIn::clerk().await;
    let mut env = destinations(&app, &clerk);
    env.push(("CREDITS_LOW_BALANCE_THRESHOLD", "50"));
    let s = setup(&db, &[], &env).await;
    let grant = |key: &str, amount: i64| json!({"organization_id": "org_low", "amount": amount, "idempotency_key": key});
    let low_events = || {
        app.received()
            .into_iter()
            .filter(|r| r.status == 200 && r.json()["type"] == "credits.balance_low")
            .map(|r| r.json())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ledger_write(&s.server, "/api/v1/credits/grant", grant("g1", 100)).await,
        200
    );
    assert_eq!(
        ledger_write(&s.server, "/api/v1/credits/consume", grant("c1", 60)).await,
        200
    );
    let first = support::wait_for("credits.balance_low", Duration::from_secs(20), || async {
        low_events().first().cloned()
    })
    .await;
    assert_eq!(first["organization_id"], "org_low");
    assert_eq!(first["data"], json!({"balance": 40, "threshold": 50}));
    // Lower still: no news. Then above, and below again: news once more.
    assert_eq!(
        ledger_write(&s.server, "/api/v1/credits/consume", grant("c2", 10)).await,
        200
    );
    assert_eq!(
        ledger_write(&s.server, "/api/v1/credits/grant", grant("g2", 100)).await,
        200
    );
    assert_eq!(
        ledger_write(&s.server, "/api/v1/credits/consume", grant("c3", 100)).await,
        200
    );
    let both = support::wait_for(
        "a second credits.balance_low",
        Duration::from_secs(20),
        || async {
            let events = low_events();
            (events.len() >= 2).then_some(events)
        },
    )
    .await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[1]["data"], json!({"balance": 30, "threshold": 50}));
}

billing_sync_testkit::postgres_test! {
    /// Two replicas on one PostgreSQL publish and send together while a dozen changes of four
    /// organizations arrive at both: at the app, each event is taken once and an organization's
    /// versions never go down; the last state each organization's receivers hold is its final
    /// state.
    #[tokio::test]
    async fn two_replicas_never_send_an_older_state_after_a_newer_one() {
        let _load = support::one_load_at_a_time().await;
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let app = ReceiverStandIn::app().await;
        let clerk = ReceiverStandIn::clerk().await;
        let replicas = [
            setup(&db, &[], &destinations(&app, &clerk)).await,
            setup(&db, &[], &destinations(&app, &clerk)).await,
        ];
        let organizations = ["org_r1", "org_r2", "org_r3", "org_r4"];
        let t = now() - 3_600;
        for org in organizations {
            let cus = format!("cus_{org}");
            stripe_event(
                &replicas[0].server,
                &format!("evt_{org}_checkout"),
                "checkout.session.completed",
                t,
                json!({"id": format!("cs_{org}"), "object": "checkout.session", "mode": "subscription",
                       "created": t, "customer": cus, "metadata": {"organization_id": org},
                       "livemode": false}),
            )
            .await;
        }
        const STEPS: i64 = 12;
        let deliveries = organizations.iter().map(|org| {
            let replicas = &replicas;
            async move {
                for step in 1..=STEPS {
                    let replica = &replicas[(step % 2) as usize];
                    stripe_event(
                        &replica.server,
                        &format!("evt_{org}_entitlements_{step}"),
                        "entitlements.active_entitlement_summary.updated",
                        t + step,
                        entitlement_summary(&format!("cus_{org}"), &[&format!("f{step:02}")]),
                    )
                    .await;
                }
            }
        });
        futures::future::join_all(deliveries).await;
        let last = format!("f{STEPS:02}");
        support::wait_for(
            "every organization's final state at the app and in Clerk",
            Duration::from_secs(60),
            || async {
                let received = app.received();
                organizations
                    .iter()
                    .all(|org| {
                        let last_taken = received.iter().rev().find(|r| {
                            let event = r.json();
                            r.status == 200 && event["organization_id"] == *org
                        });
                        last_taken.is_some_and(|r| r.json()["data"]["entitlements"] == json!([last]))
                            && clerk.metadata(org)["billing"]["features"] == json!([last])
                    })
                    .then_some(())
            },
        )
        .await;
        let received = app.received();
        let mut ids: Vec<String> = received
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "an event was sent twice");
        for org in organizations {
            let versions: Vec<i64> = received
                .iter()
                .map(Received::json)
                .filter(|event| event["organization_id"] == org)
                .map(|event| event["version"].as_i64().expect("a version"))
                .collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{org}: {versions:?}"
            );
            let features: Vec<Value> = received
                .iter()
                .map(Received::json)
                .filter(|event| event["organization_id"] == org)
                .map(|event| event["data"]["entitlements"].clone())
                .collect();
            let steps: Vec<&str> = features.iter().filter_map(|f| f[0].as_str()).collect();
            assert!(
                steps.windows(2).all(|w| w[0] < w[1]),
                "{org}: an older state after a newer one: {steps:?}"
            );
        }
    }
}

/// With `SVIX_AUTH_TOKEN`, events are handed to Svix's API: each once, with its id as
/// `eventId` and as the idempotency key, in the application `SVIX_APP_ID` (created on the
/// first message); a Svix failure is retried.
#[tokio::test]
async fn with_a_svix_token_events_are_handed_to_svix_once_each() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let svix = ReceiverStandIn::svix().await;
    svix.script(&[(500, None)]);
    let s = setup(
        &db,
        &[],
        &[
            ("SVIX_AUTH_TOKEN", "testsk_outbox_token"),
            ("SVIX_SERVER_URL", svix.base_url.as_str()),
            ("SVIX_APP_ID", "acme-billing"),
            ("BILLING_API_KEYS", API_KEY),
        ],
    )
    .await;
    lifecycle(&s.server, "org_svix", "cus_svix").await;
    let taken = support::wait_for(
        "Svix to get the final state",
        Duration::from_secs(30),
        || async {
            let received = svix.received();
            received
                .iter()
                .rev()
                .find(|r| r.status == 200)
                .is_some_and(|r| {
                    r.json()["payload"]["data"]["entitlements"] == json!(["api", "sso"])
                })
                .then_some(received)
        },
    )
    .await;
    assert_eq!(taken[0].status, 500, "the scripted failure came first");
    for received in taken.iter().filter(|r| r.status == 200) {
        let message = received.json();
        let id = message["payload"]["id"].as_str().expect("an event id");
        assert_eq!(message["eventId"], id);
        assert_eq!(received.header("idempotency-key"), id);
        assert_eq!(message["eventType"], message["payload"]["type"]);
        assert_eq!(message["application"]["uid"], "acme-billing");
        assert_eq!(
            received.header("authorization"),
            "Bearer testsk_outbox_token"
        );
    }
    let feed = feed(&s.server).await;
    assert!(!feed.is_empty());
}
