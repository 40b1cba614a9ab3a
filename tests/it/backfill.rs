//! End-to-end tests of `billing-sync backfill stripe|clerk`: the real binary against local
//! stand-ins that page like Stripe (`has_more`/`starting_after`) and Clerk (`limit`/`offset`
//! with `total_count`), on both database backends.

use crate::support;

use billing_sync_store::Store;
use billing_sync_store::entities::{
    credit_grants, organization_memberships, organizations, stripe_customers, stripe_subscriptions,
    users,
};
use billing_sync_store::sea_orm::EntityTrait;
use billing_sync_testkit::{TestDatabase, each_backend};
use serde_json::{Value, json};
use support::standins::{ClerkApiStandIn, StripeStandIn};
use support::{Finished, Server, now, post_stripe, run, stripe_signature};

const STRIPE_KEY: &str = "sk_test_backfill_key_4242";
const CLERK_KEY: &str = "sk_test_clerk_backfill_key_7777";
const STRIPE_WEBHOOK_SECRET: &str = "whsec_backfill_stripe";

each_backend!(
    a_backfill_stops_when_the_cursor_does_not_advance,
    an_entitlement_list_whose_cursor_does_not_advance_is_never_stored_in_part,
    stripe_backfill_pages_through_everything_and_a_rerun_changes_nothing,
    a_backfill_never_replaces_a_newer_webhook_state,
    an_interrupted_backfill_resumes_after_the_last_committed_page,
    a_key_stripe_refuses_is_said_in_stripes_words_with_what_to_fix,
    clerk_backfill_pages_through_organizations_users_and_memberships,
);

fn customer(n: u32, org: Option<&str>, email: &str) -> Value {
    json!({"id": format!("cus_bf{n}"), "object": "customer", "created": 1_700_000_000 + n,
           "email": email, "name": format!("Customer {n}"), "livemode": false,
           "metadata": org.map(|org| json!({"organization_id": org})).unwrap_or(json!({}))})
}

fn subscription(n: u32, customer: u32, status: &str, org: Option<&str>) -> Value {
    json!({"id": format!("sub_bf{n}"), "object": "subscription",
           "customer": format!("cus_bf{customer}"), "status": status, "livemode": false,
           "cancel_at_period_end": false, "created": 1_700_000_000 + n,
           "metadata": org.map(|org| json!({"organization_id": org})).unwrap_or(json!({})),
           "items": {"object": "list", "data": [{"id": format!("si_bf{n}"), "quantity": 1,
               "current_period_start": 1_763_000_000, "current_period_end": 1_765_600_000,
               "price": {"id": "price_pro", "product": "prod_pro"}}]}})
}

/// Seven customers (one without an organization), newest first as Stripe lists them.
fn listed_customers() -> Vec<Value> {
    (1..=7)
        .rev()
        .map(|n| {
            let org = (n != 7).then(|| format!("org_bf{n}"));
            customer(n, org.as_deref(), &format!("billing{n}@example.com"))
        })
        .collect()
}

/// [`listed_customers`], a product (and an archived one) with three prices (one archived), five
/// subscriptions (one canceled, one naming no organization of its own), and one customer's
/// active entitlements.
fn stripe_catalog(stripe: &StripeStandIn) {
    stripe.set_list("customers", listed_customers());
    // A paid credits purchase, an open session, and a paid subscription invoice.
    let session = |id: &str, status: &str| {
        json!({"id": id, "object": "checkout.session", "mode": "payment", "status": status,
               "payment_status": if status == "complete" { "paid" } else { "unpaid" },
               "customer": "cus_bf1", "payment_intent": format!("pi_{id}"), "livemode": false,
               "metadata": {"organization_id": "org_bf1", "billing_sync_credits": "250"}})
    };
    stripe.set_list(
        "checkout/sessions",
        vec![
            session("cs_bf_paid", "complete"),
            session("cs_bf_open", "open"),
        ],
    );
    stripe.set_list(
        "invoices",
        vec![
            json!({"id": "in_bf1", "object": "invoice", "status": "paid",
            "customer": "cus_bf1", "livemode": false,
            "parent": {"subscription_details": {"metadata": {"organization_id": "org_bf1"}}},
            "lines": {"object": "list", "has_more": false, "data": [
                {"id": "il_bf1", "quantity": 1, "period": {"start": 1, "end": 4_000_000_000_i64},
                 "parent": {"subscription_item_details": {"proration": false}},
                 "pricing": {"price_details": {"price": "price_pro"}}}]}}),
        ],
    );
    stripe.set_list(
        "products",
        vec![
            json!({"id": "prod_old", "object": "product", "active": false, "name": "Old",
                   "marketing_features": [], "livemode": false}),
            json!({"id": "prod_pro", "object": "product", "active": true, "name": "Pro",
                   "description": "For teams", "marketing_features": [{"name": "SSO"}],
                   "default_price": "price_pro", "livemode": false}),
        ],
    );
    stripe.set_list(
        "prices",
        vec![
            price("price_pro_yearly", 29_000, Some("year"), true),
            price("price_pro", 2_900, Some("month"), true),
            price("price_pro_legacy", 1_900, Some("month"), false),
        ],
    );
    stripe.set_entitlements(
        "cus_bf1",
        vec![
            json!({"id": "ent_2", "object": "entitlements.active_entitlement",
                   "feature": "feat_sso", "lookup_key": "sso", "livemode": false}),
            json!({"id": "ent_1", "object": "entitlements.active_entitlement",
                   "feature": "feat_seats", "lookup_key": "seats", "livemode": false}),
        ],
    );
    stripe.set_list(
        "subscriptions",
        vec![
            subscription(5, 5, "active", None),
            subscription(4, 4, "canceled", Some("org_bf4")),
            subscription(3, 3, "past_due", Some("org_bf3")),
            subscription(2, 2, "trialing", Some("org_bf2")),
            subscription(1, 1, "active", Some("org_bf1")),
        ],
    );
}

fn price(id: &str, amount: i64, interval: Option<&str>, active: bool) -> Value {
    json!({"id": id, "object": "price", "active": active, "currency": "eur",
           "unit_amount": amount, "product": "prod_pro", "livemode": false,
           "lookup_key": id, "nickname": null, "type": if interval.is_some() { "recurring" } else { "one_time" },
           "recurring": interval.map(|i| json!({"interval": i, "interval_count": 1}))})
}

async fn backfill(db: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut full_env = vec![("DATABASE_URL", db.url.as_str()), ("RUST_LOG", "warn")];
    full_env.extend_from_slice(env);
    let mut full_args = vec!["backfill"];
    full_args.extend_from_slice(args);
    run(&full_args, &full_env).await
}

async fn stripe_backfill(db: &TestDatabase, stripe: &StripeStandIn, extra: &[&str]) -> Finished {
    let mut args = vec!["stripe", "--page-size", "3"];
    args.extend_from_slice(extra);
    backfill(
        db,
        &args,
        &[
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_API_BASE", stripe.base_url.as_str()),
        ],
    )
    .await
}

/// The summary row of `resource`: listed, created, updated, unchanged, failed.
fn summary_row(stdout: &str, resource: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(resource))
        .unwrap_or_else(|| panic!("no summary row for {resource} in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect()
}

/// Each `(resource, row)`'s summary row is `row`.
fn assert_summary(stdout: &str, expected: &[(&str, [u64; 5])]) {
    for (resource, row) in expected {
        assert_eq!(summary_row(stdout, resource), row, "{resource}");
    }
}

fn succeeded(finished: &Finished) {
    assert!(
        finished.status.success(),
        "backfill failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
}

async fn stripe_backfill_pages_through_everything_and_a_rerun_changes_nothing(db: TestDatabase) {
    let stripe = StripeStandIn::start(&[]).await;
    stripe_catalog(&stripe);
    // Rate limited once: the backfill backs off and asks again.
    stripe.fail_next_lists(&[429]);

    let first = stripe_backfill(&db, &stripe, &[]).await;
    succeeded(&first);
    // One entitlement summary per synced customer, empty ones too.
    assert_summary(
        &first.stdout,
        &[
            ("stripe/customers", [7, 7, 0, 0, 0]),
            ("stripe/subscriptions", [5, 5, 0, 0, 0]),
            ("stripe/products", [2, 2, 0, 0, 0]),
            ("stripe/prices", [3, 3, 0, 0, 0]),
            ("stripe/checkout/sessions", [1, 1, 0, 0, 0]),
            ("stripe/invoices", [1, 1, 0, 0, 0]),
            ("stripe/entitlements", [7, 7, 0, 0, 0]),
        ],
    );
    // Not a terminal: one plain progress line per page on standard error.
    assert!(
        first.stderr.contains("stripe/customers: 3 listed")
            && first.stderr.contains("stripe/customers: 7 listed"),
        "{}",
        first.stderr
    );

    let (entitlement_requests, requests): (Vec<_>, Vec<_>) = stripe
        .list_requests()
        .into_iter()
        .partition(|r| r.resource == "entitlements/active_entitlements");
    let customers_asked: Vec<&str> = entitlement_requests
        .iter()
        .filter_map(|r| r.param("customer"))
        .collect();
    assert_eq!(
        customers_asked,
        (1..=7).map(|n| format!("cus_bf{n}")).collect::<Vec<_>>(),
        "every synced customer's entitlements, in id order"
    );
    let cursors: Vec<(String, Option<String>)> = requests
        .iter()
        .map(|r| {
            (
                r.resource.clone(),
                r.param("starting_after").map(str::to_owned),
            )
        })
        .collect();
    let cursor =
        |resource: &str, after: Option<&str>| (resource.to_owned(), after.map(str::to_owned));
    assert_eq!(
        cursors,
        [
            cursor("customers", None), // 429
            cursor("customers", None),
            cursor("customers", Some("cus_bf5")),
            cursor("customers", Some("cus_bf2")),
            cursor("products", None),
            cursor("prices", None),
            cursor("subscriptions", None),
            cursor("subscriptions", Some("sub_bf3")),
            cursor("checkout/sessions", None),
            cursor("invoices", None),
        ]
    );
    for request in &requests {
        assert_eq!(request.param("limit"), Some("3"));
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {STRIPE_KEY}").as_str())
        );
        let status = match request.resource.as_str() {
            "subscriptions" => Some("all"),
            "checkout/sessions" => Some("complete"),
            "invoices" => Some("paid"),
            _ => None,
        };
        assert_eq!(request.param("status"), status, "{}", request.resource);
    }

    let store = Store::connect(&db.url).await.expect("connect");
    let customers = stripe_customers::Entity::find()
        .all(store.connection())
        .await
        .expect("customers");
    assert_eq!(customers.len(), 7);
    let subscriptions = stripe_subscriptions::Entity::find()
        .all(store.connection())
        .await
        .expect("subscriptions");
    let sub = |id: &str| {
        subscriptions
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id} stored"))
    };
    assert_eq!(sub("sub_bf4").status, "canceled");
    // Named no organization itself: inherits its customer's.
    assert_eq!(sub("sub_bf5").organization_id.as_deref(), Some("org_bf5"));
    assert!(sub("sub_bf1").current_period_end.is_some());
    assert_eq!(
        store
            .backfill_checkpoint("stripe/customers")
            .await
            .expect("read"),
        None,
        "a completed pass leaves no checkpoint"
    );

    let second = stripe_backfill(&db, &stripe, &[]).await;
    succeeded(&second);
    assert_summary(
        &second.stdout,
        &[
            ("stripe/customers", [7, 0, 0, 7, 0]),
            ("stripe/subscriptions", [5, 0, 0, 5, 0]),
            ("stripe/checkout/sessions", [1, 0, 0, 1, 0]),
            ("stripe/invoices", [1, 0, 0, 1, 0]),
            ("stripe/entitlements", [7, 0, 0, 7, 0]),
        ],
    );
    // The purchase and the allowance, recorded once under their webhooks' references (the
    // plan's price carries no credits: its allowance grants nothing).
    let references: Vec<Option<String>> = credit_grants::Entity::find()
        .all(store.connection())
        .await
        .expect("grants")
        .into_iter()
        .map(|grant| grant.reference)
        .collect();
    assert_eq!(
        references,
        [
            Some("checkout:cs_bf_paid".to_owned()),
            Some("invoice:in_bf1:il_bf1".to_owned())
        ]
    );
    // What the plans page reads from it: the catalog without what is archived, and the
    // entitlements of the customer's organization.
    let catalog = store.catalog().await.expect("catalog");
    assert_eq!(catalog.len(), 1, "{catalog:?}");
    let prices: Vec<&str> = catalog[0].prices.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(prices, ["price_pro", "price_pro_yearly"]);
    assert_eq!(catalog[0].marketing_features, ["SSO"]);
    let access = store
        .portal_access("user_none", "org_bf1", chrono::Utc::now())
        .await
        .expect("access");
    assert_eq!(access.entitlements, ["seats", "sso"]);
    let subscriptions = store
        .organization_subscriptions("org_bf1")
        .await
        .expect("subscriptions");
    assert_eq!(
        subscriptions[0].items[0].product_name.as_deref(),
        Some("Pro")
    );

    // One customer changed in Stripe since: exactly that one is updated.
    let mut customers = listed_customers();
    customers[3]["email"] = json!("changed@example.com");
    stripe.set_list("customers", customers);
    let third = stripe_backfill(&db, &stripe, &[]).await;
    succeeded(&third);
    assert_eq!(
        summary_row(&third.stdout, "stripe/customers"),
        [7, 0, 1, 6, 0]
    );
    let changed = stripe_customers::Entity::find_by_id("cus_bf4".to_owned())
        .one(store.connection())
        .await
        .expect("read")
        .expect("cus_bf4");
    assert_eq!(changed.email.as_deref(), Some("changed@example.com"));
}

async fn a_backfill_never_replaces_a_newer_webhook_state(db: TestDatabase) {
    let server = Server::start(&db.url, &[("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET)]).await;
    // An update Stripe created after the backfill's listing will be fetched.
    let created = now() + 600;
    let event = json!({"id": "evt_bf_newer", "object": "event", "type": "customer.updated",
        "created": created, "api_version": "2026-07-29.dahlia", "livemode": false,
        "data": {"object": customer(1, Some("org_bf1"), "newer@example.com")}});
    let body = serde_json::to_vec(&event).expect("JSON");
    let t = now();
    let response = post_stripe(
        &server,
        &body,
        Some(stripe_signature(STRIPE_WEBHOOK_SECRET, t, &body)),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(server.terminate().await.success());

    let stripe = StripeStandIn::start(&[]).await;
    stripe.set_list(
        "customers",
        vec![
            customer(2, Some("org_bf2"), "two@example.com"),
            customer(1, Some("org_bf1"), "older@example.com"),
        ],
    );
    stripe.set_list("subscriptions", Vec::new());
    let finished = stripe_backfill(&db, &stripe, &[]).await;
    succeeded(&finished);
    assert_eq!(
        summary_row(&finished.stdout, "stripe/customers"),
        [2, 1, 0, 1, 0]
    );
    let store = Store::connect(&db.url).await.expect("connect");
    let kept = stripe_customers::Entity::find_by_id("cus_bf1".to_owned())
        .one(store.connection())
        .await
        .expect("read")
        .expect("cus_bf1");
    assert_eq!(kept.email.as_deref(), Some("newer@example.com"));
    assert_eq!(kept.ordering_key, created);
}

/// A key Stripe refuses (401) stops the backfill with Stripe's own message and the setting to
/// fix, not only a status and "run it again" (which would fail the same way).
async fn a_key_stripe_refuses_is_said_in_stripes_words_with_what_to_fix(db: TestDatabase) {
    let stripe = StripeStandIn::start(&[]).await;
    stripe_catalog(&stripe);
    stripe.fail_lists_after(Some((0, 401)));
    let refused = stripe_backfill(&db, &stripe, &[]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Stripe answered 401")
            && refused
                .stderr
                .contains("Invalid API Key provided: sk_test_****4242")
            && refused.stderr.contains("check STRIPE_SECRET_KEY"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(STRIPE_KEY));
}

async fn an_interrupted_backfill_resumes_after_the_last_committed_page(db: TestDatabase) {
    let stripe = StripeStandIn::start(&[]).await;
    stripe_catalog(&stripe);
    // Two pages of customers succeed, then Stripe refuses every call.
    stripe.fail_lists_after(Some((2, 400)));
    let interrupted = stripe_backfill(&db, &stripe, &[]).await;
    assert_eq!(interrupted.status.code(), Some(1), "{}", interrupted.stderr);
    assert!(
        interrupted.stderr.contains("Stripe answered 400")
            && interrupted.stderr.contains("run it again to resume"),
        "{}",
        interrupted.stderr
    );
    assert!(!interrupted.stderr.contains(STRIPE_KEY));

    let store = Store::connect(&db.url).await.expect("connect");
    let checkpoint = store
        .backfill_checkpoint("stripe/customers")
        .await
        .expect("read")
        .expect("a checkpoint after two committed pages");
    assert_eq!(checkpoint.cursor, "cus_bf2");
    assert_eq!((checkpoint.tally.seen, checkpoint.tally.created), (6, 6));
    let stored = stripe_customers::Entity::find()
        .all(store.connection())
        .await
        .expect("customers");
    assert_eq!(stored.len(), 6, "the committed pages are applied");

    stripe.fail_lists_after(None);
    let before = stripe.list_requests().len();
    let resumed = stripe_backfill(&db, &stripe, &[]).await;
    succeeded(&resumed);
    let requests = stripe.list_requests();
    assert_eq!(
        requests[before].param("starting_after"),
        Some("cus_bf2"),
        "resumes after the last committed page"
    );
    // The summary counts the whole pass, the pages before the interruption included.
    assert_eq!(
        summary_row(&resumed.stdout, "stripe/customers"),
        [7, 7, 0, 0, 0]
    );
    assert!(
        resumed.stdout.contains("stripe/customers (resumed)"),
        "{}",
        resumed.stdout
    );
    assert_eq!(
        summary_row(&resumed.stdout, "stripe/subscriptions"),
        [5, 5, 0, 0, 0]
    );

    // --restart lists from the beginning again.
    let restarted = stripe_backfill(&db, &stripe, &["--restart"]).await;
    succeeded(&restarted);
    assert_eq!(
        summary_row(&restarted.stdout, "stripe/customers"),
        [7, 0, 0, 7, 0]
    );
}

fn organization(n: u32, updated_at: i64) -> Value {
    json!({"object": "organization", "id": format!("org_ck{n}"), "name": format!("Org {n}"),
           "slug": format!("org-{n}"), "created_at": 1_700_000_000_000i64 + i64::from(n),
           "updated_at": updated_at, "members_count": 1})
}

fn user(n: u32, email: &str, updated_at: i64) -> Value {
    json!({"object": "user", "id": format!("user_ck{n}"), "first_name": format!("First{n}"),
           "last_name": "Last", "primary_email_address_id": format!("idn_ck{n}"),
           "email_addresses": [{"id": format!("idn_ck{n}"), "object": "email_address",
                                "email_address": email}],
           "created_at": 1_700_000_000_000i64 + i64::from(n), "updated_at": updated_at})
}

fn membership(n: u32, org: u32, user: u32) -> Value {
    json!({"object": "organization_membership", "id": format!("orgmem_ck{n}"),
           "role": if n == 1 { "org:admin" } else { "org:member" },
           "created_at": 1_700_000_000_000i64 + i64::from(n),
           "updated_at": 1_700_000_100_000i64 + i64::from(n),
           "organization": organization(org, 1_700_000_050_000),
           "public_user_data": {"user_id": format!("user_ck{user}"),
               "identifier": format!("u{user}@example.com"), "first_name": null, "last_name": null}})
}

fn clerk_catalog(clerk: &ClerkApiStandIn, user_two_email: &str, user_two_updated: i64) {
    clerk.set_list(
        "organizations",
        (1..=3)
            .map(|n| organization(n, 1_700_000_050_000))
            .collect(),
    );
    clerk.set_list(
        "users",
        vec![
            user(1, "one@example.com", 1_700_000_060_000),
            user(2, user_two_email, user_two_updated),
            user(3, "three@example.com", 1_700_000_060_000),
            user(4, "four@example.com", 1_700_000_060_000),
        ],
    );
    clerk.set_list(
        "organization_memberships",
        vec![
            membership(1, 1, 1),
            membership(2, 1, 2),
            membership(3, 2, 3),
            membership(4, 3, 4),
            membership(5, 3, 1),
        ],
    );
}

async fn clerk_backfill(db: &TestDatabase, clerk: &ClerkApiStandIn, key: &str) -> Finished {
    backfill(
        db,
        &["clerk", "--page-size", "2"],
        &[
            ("CLERK_SECRET_KEY", key),
            ("CLERK_API_BASE", clerk.base_url.as_str()),
        ],
    )
    .await
}

async fn clerk_backfill_pages_through_organizations_users_and_memberships(db: TestDatabase) {
    let clerk = ClerkApiStandIn::start(CLERK_KEY).await;
    clerk_catalog(&clerk, "two@example.com", 1_700_000_060_000);

    // A wrong key: Clerk's 401, reported without echoing any key.
    let refused = clerk_backfill(&db, &clerk, "sk_test_wrong_key_0000").await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused
            .stderr
            .contains("Clerk answered 401 (authentication_invalid)"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("sk_test_wrong_key_0000"));

    // Rate limited once, with Retry-After: the backfill waits and asks again.
    clerk.fail_next_lists(&[429]);
    let first = clerk_backfill(&db, &clerk, CLERK_KEY).await;
    succeeded(&first);
    assert_eq!(
        summary_row(&first.stdout, "clerk/organizations"),
        [3, 3, 0, 0, 0]
    );
    assert_eq!(summary_row(&first.stdout, "clerk/users"), [4, 4, 0, 0, 0]);
    assert_eq!(
        summary_row(&first.stdout, "clerk/organization_memberships"),
        [5, 5, 0, 0, 0]
    );
    assert!(
        first.stderr.contains("clerk/organizations: 2 of 3 listed"),
        "{}",
        first.stderr
    );

    let offsets = |resource: &str| -> Vec<String> {
        clerk
            .requests()
            .iter()
            .filter(|r| {
                r.resource == resource
                    && r.authorization.as_deref() == Some(&format!("Bearer {CLERK_KEY}"))
            })
            .map(|r| r.param("offset").unwrap_or("-").to_owned())
            .collect()
    };
    // 429 then the same page again; stops at total_count.
    assert_eq!(offsets("organizations"), ["0", "0", "2"]);
    // /v1/users has no total_count: paging ends at the first short page.
    assert_eq!(offsets("users"), ["0", "2", "4"]);
    assert_eq!(offsets("organization_memberships"), ["0", "2", "4"]);
    assert!(
        clerk
            .requests()
            .iter()
            .all(|r| r.param("order_by") == Some("+created_at") && r.param("limit") == Some("2"))
    );

    let store = Store::connect(&db.url).await.expect("connect");
    let db_conn = store.connection();
    assert_eq!(
        organizations::Entity::find()
            .all(db_conn)
            .await
            .expect("orgs")
            .len(),
        3
    );
    let stored_users = users::Entity::find().all(db_conn).await.expect("users");
    assert_eq!(stored_users.len(), 4);
    let two = stored_users
        .iter()
        .find(|u| u.id == "user_ck2")
        .expect("user_ck2");
    assert_eq!(two.primary_email.as_deref(), Some("two@example.com"));
    let memberships = organization_memberships::Entity::find()
        .all(db_conn)
        .await
        .expect("memberships");
    assert_eq!(memberships.len(), 5);
    assert!(
        store
            .active_membership("user_ck1", "org_ck3")
            .await
            .expect("read")
            .is_some(),
        "a membership listed from the instance-wide list is active"
    );

    let second = clerk_backfill(&db, &clerk, CLERK_KEY).await;
    succeeded(&second);
    assert_eq!(summary_row(&second.stdout, "clerk/users"), [4, 0, 0, 4, 0]);
    assert_eq!(
        summary_row(&second.stdout, "clerk/organization_memberships"),
        [5, 0, 0, 5, 0]
    );

    // A user updated in Clerk since: updated; the same content at an older key would not be.
    clerk_catalog(&clerk, "two-new@example.com", 1_700_000_070_000);
    let third = clerk_backfill(&db, &clerk, CLERK_KEY).await;
    succeeded(&third);
    assert_eq!(summary_row(&third.stdout, "clerk/users"), [4, 0, 1, 3, 0]);
    clerk_catalog(&clerk, "stale@example.com", 1_700_000_065_000);
    let stale = clerk_backfill(&db, &clerk, CLERK_KEY).await;
    succeeded(&stale);
    assert_eq!(summary_row(&stale.stdout, "clerk/users"), [4, 0, 0, 4, 0]);
    let two = users::Entity::find_by_id("user_ck2".to_owned())
        .one(db_conn)
        .await
        .expect("read")
        .expect("user_ck2");
    assert_eq!(two.primary_email.as_deref(), Some("two-new@example.com"));
}

#[tokio::test]
async fn a_backfill_without_its_api_key_names_the_variable() {
    for (source, variable) in [
        ("stripe", "STRIPE_SECRET_KEY"),
        ("clerk", "CLERK_SECRET_KEY"),
    ] {
        let finished = run(
            &["backfill", source],
            &[("DATABASE_URL", "sqlite::memory:")],
        )
        .await;
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{source}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(&format!("invalid {variable}")),
            "{}",
            finished.stderr
        );
    }
}

/// Runs a Stripe backfill that must stop by itself, failing (exit 1) with `message`.
async fn stuck_backfill(db: &TestDatabase, stripe: &StripeStandIn, message: &str) {
    let finished = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stripe_backfill(db, stripe, &[]),
    )
    .await
    .expect("the backfill stops by itself");
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(finished.stderr.contains(message), "{}", finished.stderr);
}

async fn a_backfill_stops_when_the_cursor_does_not_advance(db: TestDatabase) {
    let stripe = StripeStandIn::start(&[]).await;
    stripe_catalog(&stripe);
    stripe.never_advance();
    stuck_backfill(&db, &stripe, "cursor does not advance").await;
    let customer_pages = stripe
        .list_requests()
        .iter()
        .filter(|request| request.resource == "customers")
        .count();
    assert_eq!(
        customer_pages, 2,
        "the second page's repeated cursor stops the pass"
    );
}

async fn an_entitlement_list_whose_cursor_does_not_advance_is_never_stored_in_part(
    db: TestDatabase,
) {
    let stripe = StripeStandIn::start(&[]).await;
    stripe_catalog(&stripe);
    stripe.never_advance_entitlements();
    stuck_backfill(
        &db,
        &stripe,
        "stripe/entitlements of cus_bf1: the source says there is more",
    )
    .await;
    let store = Store::connect(&db.url).await.expect("connect");
    let stored = billing_sync_store::entities::stripe_entitlement_summaries::Entity::find()
        .all(store.connection())
        .await
        .expect("read the entitlement lists");
    assert!(
        stored.is_empty(),
        "no entitlement list is stored from a pass that could not read it to the end: {stored:?}"
    );
}

/// An upstream that cannot be reached is named in the retry log, with why: the log said
/// `retrying … retry=7` and no more, for a minute and a half.
#[tokio::test]
async fn an_unreachable_api_is_named_with_its_cause_while_retrying() {
    use tokio::io::AsyncBufReadExt;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = closed.local_addr().expect("its address");
    drop(closed);
    let dir = tempfile::tempdir().expect("a folder");
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let base = format!("http://{address}");
    let mut child = support::command(&[
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", base.as_str()),
    ])
    .args(["backfill", "stripe"])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("run backfill");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("retrying an upstream API call") {
                return line;
            }
        }
        panic!("backfill ended without retrying");
    })
    .await
    .expect("a retry within 30 s");
    child.kill().await.ok();
    eprintln!("{line}");
    assert!(line.contains(&format!("{base}/v1/")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert!(!line.contains(STRIPE_KEY), "{line}");
}
