//! End-to-end tests of the credit ledger on the real server: credits bought through checkout
//! and subscription invoices (signed webhooks), taken back by refunds, spent and granted by the
//! app's backend with an API key, read by a member's browser; exactly once under retries,
//! replicas and a killed process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use serde_json::{Value, json};

use crate::support;
use support::operations::{APP, ISSUER, STRIPE_WEBHOOK_SECRET, clerk_event, key, setup};
use support::{Server, now, status_and_json};

/// The app backend's key, and one it rotates to.
pub(crate) const API_KEY: &str = "bsk_test_0123456789abcdef0123456789abcdef";
const NEXT_API_KEY: &str = "bsk_test_fedcba9876543210fedcba9876543210";
pub(crate) const API_KEYS: &str =
    "bsk_test_0123456789abcdef0123456789abcdef,bsk_test_fedcba9876543210fedcba9876543210";

pub(crate) const CONSUME: &str = "/api/v1/credits/consume";
pub(crate) const GRANT: &str = "/api/v1/credits/grant";
const BROWSER_CREDITS: &str = "/api/v1/operations/payment/credits";
const STATE: &str = "/api/v1/operations/payment/subscription";

each_backend!(
    credits_bought_granted_refunded_and_spent_end_to_end,
    a_key_spends_once_and_bad_requests_change_nothing,
    a_payment_link_purchase_is_read_from_its_line_items_or_failed_until_it_can_be,
    a_live_delivery_waits_on_stripe_only_for_its_budget_then_is_refused_and_applied_on_redelivery,
);

fn token(user: &str, org: &str) -> String {
    let t = now();
    key().sign(
        &json!({"sub": user, "iat": t - 10, "nbf": t - 10, "exp": t + 120,
        "iss": ISSUER, "azp": APP, "sid": "sess_1", "v": 2,
        "o": {"id": org, "rol": "admin", "slg": "acme"}}),
    )
}

async fn stripe_event(server: &Server, id: &str, event_type: &str, object: Value) -> Value {
    support::operations::stripe_event(server, id, event_type, now(), object).await
}

pub(crate) async fn post(
    server: &Server,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = support::http().post(server.url(path)).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    status_and_json(request.send().await.expect("POST")).await
}

/// An answer without its `request_id`, which differs from request to request: what is left
/// is what a retry must get again.
pub(crate) fn without_request_id((status, mut body): (u16, Value)) -> (u16, Value) {
    if let Some(fields) = body.as_object_mut() {
        fields.remove("request_id");
    }
    (status, body)
}

pub(crate) async fn get(server: &Server, path: &str, key: &str) -> (u16, Value) {
    let response = support::http()
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET");
    status_and_json(response).await
}

async fn consume(server: &Server, org: &str, amount: i64, key: &str) -> (u16, Value) {
    post(
        server,
        CONSUME,
        Some(API_KEY),
        json!({"organization_id": org, "amount": amount, "idempotency_key": key}),
    )
    .await
}

/// The organization's whole ledger, oldest first, read page by page through the API.
async fn ledger(server: &Server, org: &str) -> (i64, Vec<Value>) {
    let mut transactions = Vec::new();
    let mut path = format!("/api/v1/credits/{org}?limit=2");
    let balance = loop {
        let (status, page) = get(server, &path, API_KEY).await;
        assert_eq!(status, 200, "{page}");
        transactions.extend(
            page["transactions"]
                .as_array()
                .expect("list")
                .iter()
                .cloned(),
        );
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/v1/credits/{org}?limit=2&before={before}"),
            None => break page["balance"].as_i64().expect("balance"),
        }
    };
    transactions.reverse();
    (balance, transactions)
}

/// The ledger explains the balance: transactions numbered 1, 2, 3…, each `balance_after` the
/// running sum of the amounts, the last one the balance.
pub(crate) async fn assert_ledger_explains(server: &Server, org: &str, balance: i64) {
    let (reported, transactions) = ledger(server, org).await;
    assert_eq!(reported, balance, "{transactions:#?}");
    let mut sum = 0;
    for (n, transaction) in transactions.iter().enumerate() {
        assert_eq!(
            transaction["transaction_id"],
            json!(n + 1),
            "{transactions:#?}"
        );
        sum += transaction["amount"].as_i64().expect("amount");
        assert_eq!(
            transaction["balance_after"],
            json!(sum),
            "{transactions:#?}"
        );
    }
    assert_eq!(sum, balance, "{transactions:#?}");
}

fn product(id: &str, credits: Option<&str>) -> Value {
    let metadata = credits.map_or(json!({}), |credits| json!({"credits": credits}));
    json!({"id": id, "object": "product", "active": true, "name": id, "livemode": false,
           "marketing_features": [], "metadata": metadata})
}

fn price(id: &str, product: &str, amount: i64, monthly: bool, credits: Option<&str>) -> Value {
    let metadata = credits.map_or(json!({}), |credits| json!({"credits": credits}));
    json!({"id": id, "object": "price", "active": true, "currency": "eur",
           "unit_amount": amount, "product": product, "livemode": false, "metadata": metadata,
           "type": if monthly { "recurring" } else { "one_time" },
           "recurring": monthly.then(|| json!({"interval": "month", "interval_count": 1}))})
}

async fn credits_bought_granted_refunded_and_spent_end_to_end(db: TestDatabase) {
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEYS)]).await;
    let server = &s.server;
    let updated = now() * 1000 - 60_000;
    clerk_event(
        server,
        "msg_member",
        "organizationMembership.created",
        json!({"id": "orgmem_1", "object": "organization_membership", "role": "org:admin",
               "organization": {"id": "org_c", "name": "Acme", "slug": "acme", "updated_at": updated},
               "public_user_data": {"user_id": "user_c", "identifier": "c@acme.example"},
               "created_at": updated, "updated_at": updated}),
    )
    .await;
    // A pack of 100 credits (the price says), and a plan whose product grants 500 a month.
    for (n, (event_type, object)) in [
        ("product.created", product("prod_pack", None)),
        ("product.created", product("prod_plan", Some("500"))),
        (
            "price.created",
            price("price_pack", "prod_pack", 1_000, false, Some("100")),
        ),
        (
            "price.created",
            price("price_plan", "prod_plan", 2_900, true, None),
        ),
        // The most credits a unit may carry: two units would grant more than one grant may.
        (
            "price.created",
            price(
                "price_huge",
                "prod_pack",
                1_000,
                false,
                Some("1000000000000"),
            ),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        stripe_event(server, &format!("evt_catalog_{n}"), event_type, object).await;
    }

    // Checkout of 3 packs writes what the purchase grants into the session.
    let response = support::http()
        .post(server.url("/api/v1/operations/payment/checkout-session"))
        .bearer_auth(token("user_c", "org_c"))
        .json(&json!({"price_id": "price_pack", "quantity": 3}))
        .send()
        .await
        .expect("checkout");
    assert_eq!(response.status(), 200);
    let sent = s.stripe.received().pop().expect("a checkout request");
    assert_eq!(sent.field("metadata[billing_sync_credits]"), Some("300"));
    assert_eq!(
        sent.field("metadata[billing_sync_price]"),
        Some("price_pack")
    );
    assert_eq!(sent.field("metadata[billing_sync_quantity]"), Some("3"));
    // A purchase past the bound is refused before Stripe is asked (it was paid, then recorded
    // `failed` by the webhook that could not grant it).
    let asked = s.stripe.received().len();
    let response = support::http()
        .post(server.url("/api/v1/operations/payment/checkout-session"))
        .bearer_auth(token("user_c", "org_c"))
        .json(&json!({"price_id": "price_huge", "quantity": 2}))
        .send()
        .await
        .expect("checkout");
    let (status, refused) = status_and_json(response).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{refused}"
    );
    assert_eq!(s.stripe.received().len(), asked, "Stripe was not asked");

    // Nothing before the payment succeeds; then 300, once whatever is redelivered.
    let session = |status: &str| {
        json!({"id": "cs_pack", "object": "checkout.session", "mode": "payment",
               "payment_status": status, "customer": "cus_c", "payment_intent": "pi_pack",
               "client_reference_id": "org_c", "livemode": false,
               "metadata": {"organization_id": "org_c", "billing_sync_credits": "300",
                            "billing_sync_price": "price_pack", "billing_sync_quantity": "3"}})
    };
    stripe_event(
        server,
        "evt_cs_unpaid",
        "checkout.session.completed",
        session("unpaid"),
    )
    .await;
    assert_ledger_explains(server, "org_c", 0).await;
    stripe_event(
        server,
        "evt_cs_paid",
        "checkout.session.async_payment_succeeded",
        session("paid"),
    )
    .await;
    assert_ledger_explains(server, "org_c", 300).await;
    stripe_event(
        server,
        "evt_cs_again",
        "checkout.session.completed",
        session("paid"),
    )
    .await;
    assert_ledger_explains(server, "org_c", 300).await;

    // A subscription invoice: 2 seats of the plan, 500 each, until the period ends.
    let period_end = now() + 3_600;
    let invoice = json!({"id": "in_1", "object": "invoice", "customer": "cus_c",
        "payment_intent": "pi_invoice",
        "parent": {"type": "subscription_details", "subscription_details": {
            "metadata": {"organization_id": "org_c"}, "subscription": "sub_1"}},
        "lines": {"object": "list", "has_more": false, "data": [
            {"id": "il_1", "object": "line_item", "quantity": 2,
             "period": {"start": now() - 60, "end": period_end},
             "parent": {"type": "subscription_item_details",
                        "subscription_item_details": {"proration": false, "subscription": "sub_1",
                                                      "subscription_item": "si_1"}},
             "pricing": {"type": "price_details",
                         "price_details": {"price": "price_plan", "product": "prod_plan"}}},
            {"id": "il_2", "object": "line_item", "quantity": 1,
             "period": {"start": now() - 60, "end": period_end},
             "parent": {"type": "subscription_item_details",
                        "subscription_item_details": {"proration": true, "subscription": "sub_1",
                                                      "subscription_item": "si_1"}},
             "pricing": {"type": "price_details",
                         "price_details": {"price": "price_plan", "product": "prod_plan"}}}]}});
    stripe_event(server, "evt_invoice", "invoice.paid", invoice.clone()).await;
    stripe_event(server, "evt_invoice_again", "invoice.paid", invoice).await;
    assert_ledger_explains(server, "org_c", 1_300).await;
    let (_, statement) = get(server, "/api/v1/credits/org_c", API_KEY).await;
    let grants = statement["grants"].as_array().expect("grants");
    assert_eq!(grants.len(), 2, "{statement}");
    assert_eq!(
        grants[0]["reference"], "invoice:in_1:il_1",
        "expiring first first"
    );
    assert_eq!(grants[0]["remaining"], 1_000);
    assert!(grants[0]["expires_at"].is_string(), "{statement}");
    assert_eq!(grants[1]["reference"], "checkout:cs_pack");
    assert!(grants[1].get("expires_at").is_none(), "{statement}");

    // Spending draws from the allowance first.
    let (status, spent) = consume(server, "org_c", 1_000, "spend-1").await;
    assert_eq!(status, 200, "{spent}");
    assert_eq!(spent["balance"], 300);
    // Half of the pack's payment refunded: half of its credits taken back, once.
    let charge = |refunded: i64| {
        json!({"id": "ch_pack", "object": "charge", "payment_intent": "pi_pack",
               "amount": 3_000, "amount_captured": 3_000, "amount_refunded": refunded,
               "refunded": refunded == 3_000})
    };
    stripe_event(server, "evt_refund_1", "charge.refunded", charge(1_500)).await;
    stripe_event(
        server,
        "evt_refund_1_again",
        "charge.refunded",
        charge(1_500),
    )
    .await;
    assert_ledger_explains(server, "org_c", 150).await;
    let (status, refused) = consume(server, "org_c", 200, "spend-2").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(refused["balance"], 150);
    let (status, spent) = consume(server, "org_c", 150, "spend-3").await;
    assert_eq!((status, &spent["balance"]), (200, &json!(0)), "{spent}");
    // The rest refunded after the credits were spent: a debt the next grant pays first.
    stripe_event(server, "evt_refund_2", "charge.refunded", charge(3_000)).await;
    assert_ledger_explains(server, "org_c", -150).await;
    let (status, refused) = consume(server, "org_c", 1, "spend-4").await;
    assert_eq!(
        (status, &refused["balance"]),
        (409, &json!(-150)),
        "{refused}"
    );
    let (status, granted) = post(
        server,
        GRANT,
        Some(NEXT_API_KEY),
        json!({"organization_id": "org_c", "amount": 200, "idempotency_key": "support-1",
               "reason": "sorry"}),
    )
    .await;
    assert_eq!(
        (status, &granted["balance"]),
        (200, &json!(50)),
        "{granted}"
    );
    assert_ledger_explains(server, "org_c", 50).await;
    let (_, transactions) = ledger(server, "org_c").await;
    let kinds: Vec<&str> = transactions
        .iter()
        .map(|t| t["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "grant",
            "grant",
            "consume",
            "refund",
            "consume",
            "refund",
            "adjustment"
        ]
    );

    // The browser sees the same, and the billing state the balance.
    let response = support::http()
        .get(server.url(BROWSER_CREDITS))
        .bearer_auth(token("user_c", "org_c"))
        .send()
        .await
        .expect("GET");
    let (status, mine) = status_and_json(response).await;
    assert_eq!((status, &mine["balance"]), (200, &json!(50)), "{mine}");
    assert_eq!(mine["organization_id"], "org_c");
    let response = support::http()
        .get(server.url(STATE))
        .bearer_auth(token("user_c", "org_c"))
        .send()
        .await
        .expect("GET");
    let (status, state) = status_and_json(response).await;
    assert_eq!(
        (status, &state["credits_balance"]),
        (200, &json!(50)),
        "{state}"
    );
    // The app's backend checks access without a user session.
    let (status, billing) = get(server, "/api/v1/organizations/org_c/billing", API_KEY).await;
    assert_eq!(status, 200, "{billing}");
    assert_eq!(billing["credits_balance"], 50);
    assert_eq!(billing["organization_id"], "org_c");
    let (status, unknown) = get(server, "/api/v1/organizations/org_none/billing", API_KEY).await;
    assert_eq!(status, 200, "{unknown}");
    assert_eq!(unknown["credits_balance"], 0);
    assert_eq!(unknown["active"], false);
}

async fn a_key_spends_once_and_bad_requests_change_nothing(db: TestDatabase) {
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEYS)]).await;
    let server = &s.server;
    let (status, granted) = post(
        server,
        GRANT,
        Some(API_KEY),
        json!({"organization_id": "org_k", "amount": 10, "idempotency_key": "g1"}),
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted, json!({"balance": 10, "transaction_id": 1}));

    let first = consume(server, "org_k", 3, "k1").await;
    assert_eq!(first, (200, json!({"balance": 7, "transaction_id": 2})));
    // The same key again, concurrently: the first answer, no second debit.
    let again = futures::future::join_all((0..8).map(|_| consume(server, "org_k", 3, "k1"))).await;
    assert!(again.iter().all(|answer| *answer == first), "{again:?}");
    let (status, reused) = consume(server, "org_k", 4, "k1").await;
    assert_eq!(
        (status, reused["code"].as_str()),
        (409, Some("IDEMPOTENCY_KEY_REUSED"))
    );

    // Refusals in the documented format, nothing changed.
    for body in [
        json!({"organization_id": "org_k", "amount": 0, "idempotency_key": "bad-1"}),
        json!({"organization_id": "org_k", "amount": 1_000_000_000_001_i64, "idempotency_key": "bad-2"}),
        json!({"organization_id": "org_k", "amount": 1}),
        json!({"organization_id": "org_k", "amount": 1.5, "idempotency_key": "bad-3"}),
        json!({"organization_id": "org\u{0}k", "amount": 1, "idempotency_key": "bad-4"}),
        json!({"organization_id": "org_k", "amount": 1, "idempotency_key": "x".repeat(256)}),
        json!({"organization_id": "", "amount": 1, "idempotency_key": "bad-5"}),
        json!({"organization_id": "org_k", "amount": 1, "idempotency_key": 6}),
        json!({"organization_id": "org_k", "amount": 1, "idempotency_key": "bad-7", "reason": false}),
        json!({"organization_id": "org_k", "amount": 1, "idempotency_key": "bad-8", "reason": null}),
    ] {
        let (status, refused) = post(server, CONSUME, Some(API_KEY), body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["code"], "VALIDATION_ERROR", "{body}");
    }
    // A misspelt field is refused, named (it was ignored: a grant meant to expire never did).
    for (path, body) in [
        (
            GRANT,
            json!({"organization_id": "org_k", "amount": 5, "idempotency_key": "typo",
                   "expire_at": "2030-01-01T00:00:00Z"}),
        ),
        (
            CONSUME,
            json!({"organization_id": "org_k", "amount": 1, "idempotency_key": "typo",
                   "reasn": "export"}),
        ),
    ] {
        let (status, refused) = post(server, path, Some(API_KEY), body.clone()).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{body}: {refused}"
        );
        let misspelt = body
            .as_object()
            .and_then(|fields| {
                fields
                    .keys()
                    .find(|k| ["expire_at", "reasn"].contains(&k.as_str()))
            })
            .expect("the misspelt field")
            .clone();
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("`{misspelt}`"))),
            "{refused}"
        );
    }
    // A missing or mistyped field is named (the message said only `Expected input type
    // "string", found null`, of no field).
    for (body, named) in [
        (
            json!({"organization_id": "org_k", "amount": 1}),
            "`idempotency_key` is required",
        ),
        (
            json!({"organization_id": "org_k", "amount": "1", "idempotency_key": "typed"}),
            "`amount` must be an integer",
        ),
        (
            json!({"amount": 1, "idempotency_key": "nameless", "organization_id": null}),
            "`organization_id` is required",
        ),
    ] {
        let (status, refused) = post(server, CONSUME, Some(API_KEY), body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|message| message.contains(named)),
            "{body}: {refused}"
        );
    }
    assert_eq!(ledger(server, "org_k").await.0, 7, "nothing written");
    let valid = json!({"organization_id": "org_k", "amount": 1, "idempotency_key": "auth"});
    for key in [
        None,
        Some("bsk_test_wrong_key_0123456789abcdef01"),
        Some(token("user_k", "org_k").as_str()),
    ] {
        let (status, refused) = post(server, CONSUME, key, valid.clone()).await;
        assert_eq!(status, 401, "{refused}");
        assert_eq!(refused["code"], "UNAUTHORIZED");
        assert!(
            refused["message"]
                .as_str()
                .expect("message")
                .contains("BILLING_API_KEYS"),
            "{refused}"
        );
    }
    // A grant that has already expired could never be spent: refused, nothing written (it
    // was granted and written off at once, and answered a balance the ledger did not have).
    let (_, before) = ledger(server, "org_k").await;
    let (status, expired) = post(
        server,
        GRANT,
        Some(API_KEY),
        json!({"organization_id": "org_k", "amount": 5, "idempotency_key": "late",
               "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        (status, expired["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{expired}"
    );
    assert!(
        expired["message"]
            .as_str()
            .is_some_and(|m| m.contains("expires_at")),
        "{expired}"
    );
    assert_ledger_explains(server, "org_k", 7).await;
    let (_, after) = ledger(server, "org_k").await;
    assert_eq!(before, after, "nothing written");

    // Without BILLING_API_KEYS the backend's operations are off.
    let (status, off) = {
        let other = Server::start(&db.url, &[]).await;
        let answer = post(&other, CONSUME, Some(API_KEY), valid).await;
        other.terminate().await;
        answer
    };
    assert_eq!(
        (status, off["code"].as_str()),
        (500, Some("INTERNAL_ERROR")),
        "{off}"
    );
}

billing_sync_testkit::postgres_test! {
    /// Two replicas on one PostgreSQL, 64 callers, 10,000 consumes of 1 against a balance of
    /// 5,000, a fifth of them sent again with the same key to the other replica, and one replica
    /// killed (SIGKILL) a third of the way through, its callers carrying on at the other with the
    /// same keys: exactly 5,000 spent, never below 0, no key spent twice, every consume answered
    /// 200 in the ledger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_spend_exactly_the_balance_under_retries_and_a_kill() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let _load = support::one_load_at_a_time().await;
        let env = [("BILLING_API_KEYS", API_KEYS)];
        let a = Arc::new(Server::start(&db.url, &env).await);
        let b = Server::start(&db.url, &env).await;
        let b_url = b.base_url.clone();
        let (status, _) = post(
            &a,
            GRANT,
            Some(API_KEY),
            json!({"organization_id": "org_hot", "amount": 5_000, "idempotency_key": "fund"}),
        )
        .await;
        assert_eq!(status, 200);

        const CONSUMES: usize = 10_000;
        let next = Arc::new(AtomicUsize::new(0));
        let b_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let client = support::http();
        let callers = (0..64).map(|_| {
            let (next, a, b_url, b_alive, client) = (
                next.clone(),
                a.clone(),
                b_url.clone(),
                b_alive.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut answered: Vec<(String, u16, Value)> = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= CONSUMES {
                        return answered;
                    }
                    let key = format!("c{n}");
                    let body =
                        json!({"organization_id": "org_hot", "amount": 1, "idempotency_key": key});
                    let send = |base: String| {
                        let (client, body) = (client.clone(), body.clone());
                        async move {
                            let response = client
                                .post(format!("{base}{CONSUME}"))
                                .bearer_auth(API_KEY)
                                .json(&body)
                                .send()
                                .await
                                .ok()?;
                            Some(without_request_id(status_and_json(response).await))
                        }
                    };
                    let first_at_b = n % 2 == 1 && b_alive.load(Ordering::Relaxed);
                    let (first, second) = if first_at_b {
                        (b_url.clone(), a.base_url.clone())
                    } else {
                        (a.base_url.clone(), b_url.clone())
                    };
                    // A caller whose replica died retries the same key at the other.
                    let answer = match send(first).await {
                        Some(answer) => answer,
                        None => send(a.base_url.clone()).await.expect("replica A answers"),
                    };
                    answered.push((key.clone(), answer.0, answer.1.clone()));
                    if n % 5 == 0 {
                        let again = match send(second).await {
                            Some(again) => again,
                            None => send(a.base_url.clone()).await.expect("replica A answers"),
                        };
                        assert_eq!(again, answer, "key {key}: a retry got another answer");
                    }
                }
            })
        });
        let callers: Vec<_> = callers.collect();
        support::wait_for("a third of the consumes", Duration::from_secs(120), || {
            let done = next.load(Ordering::Relaxed) >= CONSUMES / 3;
            async move { done.then_some(()) }
        })
        .await;
        b_alive.store(false, Ordering::Relaxed);
        b.kill().await;
        let mut answered = Vec::new();
        for caller in callers {
            answered.extend(caller.await.expect("caller"));
        }

        let mut spent_keys = BTreeSet::new();
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for (key, status, body) in &answered {
            *statuses.entry(*status).or_default() += 1;
            match status {
                200 => {
                    assert!(body["balance"].as_i64().expect("balance") >= 0, "{body}");
                    spent_keys.insert(key.clone());
                }
                409 => assert_eq!(body["code"], "INSUFFICIENT_CREDITS", "{body}"),
                other => panic!("key {key}: {other} {body}"),
            }
        }
        assert_eq!(spent_keys.len(), 5_000, "{statuses:?}");
        let store = billing_sync_store::Store::connect(&db.url)
            .await
            .expect("store");
        let transactions = store.credit_transactions("org_hot").await.expect("ledger");
        let consumed: Vec<&str> = transactions
            .iter()
            .filter(|t| t.kind == "consume")
            .map(|t| t.idempotency_key.as_deref().expect("a key"))
            .collect();
        let distinct: BTreeSet<&str> = consumed.iter().copied().collect();
        assert_eq!(consumed.len(), 5_000, "no key spent twice");
        assert_eq!(distinct.len(), 5_000);
        assert!(
            spent_keys.iter().all(|key| distinct.contains(key.as_str())),
            "every consume answered 200 is in the ledger"
        );
        assert!(transactions.iter().all(|t| t.balance_after >= 0));
        assert_eq!(transactions.last().expect("some").balance_after, 0);
        // Replica A decided on the accounts it remembered writing too (alone after the kill),
        // not only on reads: the path of one round trip was under the same test.
        let metrics = a.get_text("/metrics").await;
        let count = |name: &str| -> f64 {
            metrics
                .lines()
                .filter_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                .sum()
        };
        let remembered = count("billing_sync_credits_remembered_total");
        assert!(remembered > 0.0, "replica A's decisions on remembered accounts");
        println!(
            "two replicas, one killed: {statuses:?} over {} answers; replica A decided {remembered} \
             organizations on remembered accounts, {} batches refused by the keys' index",
            answered.len(),
            count("billing_sync_credits_remembered_refused_total"),
        );
    }
}

/// A paid session billing-sync's checkout did not create (a Payment Link's): with
/// `STRIPE_SECRET_KEY`, its line items say what it bought and the catalog how many credits;
/// without, it is recorded `failed` naming the setting, and `events replay` with the key grants.
async fn a_payment_link_purchase_is_read_from_its_line_items_or_failed_until_it_can_be(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEYS)]).await;
    let server = &s.server;
    stripe_event(
        server,
        "evt_pl_product",
        "product.created",
        product("prod_pack", None),
    )
    .await;
    stripe_event(
        server,
        "evt_pl_price",
        "price.created",
        price("price_pack", "prod_pack", 1_000, false, Some("100")),
    )
    .await;
    let session = |id: &str| {
        json!({"id": id, "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "customer": "cus_pl", "payment_intent": "pi_pl",
               "livemode": false, "metadata": {"organization_id": "org_pl"}})
    };
    let item = json!({"id": "li_1", "object": "item", "quantity": 2,
                      "price": {"id": "price_pack", "object": "price"}});
    s.stripe
        .set_list("checkout/sessions/cs_pl/line_items", vec![item.clone()]);
    let answer = stripe_event(
        server,
        "evt_pl",
        "checkout.session.completed",
        session("cs_pl"),
    )
    .await;
    assert_eq!(answer["status"], "processed", "{answer}");
    stripe_event(
        server,
        "evt_pl_again",
        "checkout.session.completed",
        session("cs_pl"),
    )
    .await;
    assert_ledger_explains(server, "org_pl", 200).await;

    // Without a key: failed, naming it; replayed with one: granted.
    let plain = Server::start(&db.url, &[("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET)]).await;
    s.stripe
        .set_list("checkout/sessions/cs_pl2/line_items", vec![item]);
    let answer = stripe_event(
        &plain,
        "evt_pl2",
        "checkout.session.completed",
        session("cs_pl2"),
    )
    .await;
    assert_eq!(answer["status"], "failed", "{answer}");
    let store = billing_sync_store::Store::connect(&db.url)
        .await
        .expect("store");
    let row = store
        .find_events_by_id("evt_pl2")
        .await
        .expect("ledger")
        .remove(0);
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("STRIPE_SECRET_KEY")),
        "{:?}",
        row.error
    );
    plain.terminate().await;
    let replayed = support::run(
        &["events", "replay", "evt_pl2"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STRIPE_SECRET_KEY", support::operations::STRIPE_KEY),
            ("STRIPE_API_BASE", s.stripe.base_url.as_str()),
        ],
    )
    .await;
    assert!(
        replayed.status.success(),
        "{}\n{}",
        replayed.stdout,
        replayed.stderr
    );
    assert_ledger_explains(server, "org_pl", 400).await;
}

/// While Stripe's API answers 503, a Payment Link checkout (whose purchase is only in its line
/// items) gets 503 `UPSTREAM_UNAVAILABLE` within seconds, not the backfill's two patient
/// minutes, and nothing is recorded; Stripe's redelivery is then applied once.
async fn a_live_delivery_waits_on_stripe_only_for_its_budget_then_is_refused_and_applied_on_redelivery(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEYS)]).await;
    let server = &s.server;
    stripe_event(
        server,
        "evt_lb_product",
        "product.created",
        product("prod_lb", None),
    )
    .await;
    stripe_event(
        server,
        "evt_lb_price",
        "price.created",
        price("price_lb", "prod_lb", 1_000, false, Some("100")),
    )
    .await;
    s.stripe.set_list(
        "checkout/sessions/cs_lb/line_items",
        vec![json!({"id": "li_lb", "object": "item", "quantity": 1,
                    "price": {"id": "price_lb", "object": "price"}})],
    );
    let body = serde_json::to_vec(&json!({
        "id": "evt_lb", "object": "event", "api_version": "2026-07-29.dahlia", "created": now(),
        "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_lb", "object": "checkout.session", "mode": "payment",
            "payment_status": "paid", "customer": "cus_lb", "payment_intent": "pi_lb",
            "livemode": false, "metadata": {"organization_id": "org_lb"}}},
    }))
    .expect("JSON");
    let deliver = || async {
        let signature = support::stripe_signature(STRIPE_WEBHOOK_SECRET, now(), &body);
        let started = std::time::Instant::now();
        let response = support::post_stripe(server, &body, Some(signature)).await;
        let (status, answer) = status_and_json(response).await;
        (status, answer, started.elapsed())
    };
    // Stripe answers 503 to every try a live delivery makes (three), and would answer the
    // fourth, which only a patient policy reaches.
    s.stripe.fail_next_lists(&[503, 503, 503]);
    let (status, answer, took) = deliver().await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("UPSTREAM_UNAVAILABLE")),
        "{answer}"
    );
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    let store = billing_sync_store::Store::connect(&db.url)
        .await
        .expect("store");
    assert!(
        store
            .find_events_by_id("evt_lb")
            .await
            .expect("ledger")
            .is_empty(),
        "nothing recorded"
    );
    let (status, answer, _) = deliver().await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("processed")),
        "{answer}"
    );
    let (status, answer, _) = deliver().await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    assert_ledger_explains(server, "org_lb", 100).await;
}

/// docs/credits.md's example, run top to bottom on a fresh database as a newcomer pastes it
/// (it consumed before it granted: a 409 on first paste): each `curl` sent as written (the key
/// and the address replaced), each answer the page shows (`# {…}` after it) checked.
#[tokio::test]
async fn the_credits_example_runs_top_to_bottom_on_a_fresh_database() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let s = setup(&db, &[], &[("BILLING_API_KEYS", API_KEY)]).await;
    let readme = support::doc("docs/credits.md");
    // The Credits example, then the reservations' that goes on from its balance.
    let example: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .filter(|block| {
            block.contains("/api/v1/credits/consume") || block.contains("/api/v1/credits/reserve")
        })
        .collect();
    assert_eq!(
        example.len(),
        2,
        "docs/credits.md's ledger and reservations examples"
    );
    let lines: Vec<String> = example
        .join("\n")
        .replace("\\\n", " ")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut sent = 0;
    for (n, line) in lines.iter().enumerate() {
        let Some(command) = line.strip_prefix("curl ") else {
            continue;
        };
        let words = shell_words(command);
        let (mut url, mut headers, mut body) = (None, Vec::new(), None);
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "-s" => {}
                "-H" => headers.push(words.next().expect("a header")),
                "-d" => body = Some(words.next().expect("a body")),
                other => url = Some(other.to_owned()),
            }
        }
        let url = url.expect("a URL").replace(
            "localhost:8080",
            s.server.base_url.trim_start_matches("http://"),
        );
        let url = format!("http://{}", url.trim_start_matches("http://"));
        let mut request = match &body {
            Some(body) => support::http().post(&url).body(body.clone()),
            None => support::http().get(&url),
        };
        for header in headers {
            let (name, value) = header.split_once(": ").expect("name: value");
            request = request.header(name, value.replace("$KEY", API_KEY));
        }
        let (status, answer) = status_and_json(request.send().await.expect("curl")).await;
        assert_eq!(
            status,
            200,
            "docs/credits.md line {}: {line}\n{answer}",
            n + 1
        );
        if let Some(shown) = lines
            .get(n + 1)
            .and_then(|next| next.strip_prefix("# {"))
            .map(|rest| format!("{{{rest}"))
        {
            let mut shown: Value = serde_json::from_str(&shown).expect("the page shows JSON");
            // A value the page elides (`"…"`, a time that depends on the clock) is only
            // checked to be there.
            let mut answer = answer;
            if let (Some(shown), Some(answer)) = (shown.as_object_mut(), answer.as_object_mut()) {
                shown.retain(|field, value| {
                    *value != "…" || answer.remove(field).is_none_or(|v| v.is_null())
                });
            }
            assert_eq!(answer, shown, "docs/credits.md line {}: {line}", n + 1);
        }
        sent += 1;
    }
    assert!(sent >= 6, "the example's requests were found: {sent}");
}

/// `command`'s words as a POSIX shell splits them: single quotes literal, double quotes
/// grouping (the example's `$KEY` is replaced by the caller).
fn shell_words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}
