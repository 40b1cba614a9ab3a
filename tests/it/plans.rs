//! End-to-end tests of the plans page on the real server: the catalog, the organization's
//! billing state and checkout, with state synced through the signed webhook routes, a local
//! JWKS, and a Stripe stand-in that records every request.

use crate::support;

use billing_sync_testkit::{TestDatabase, each_backend};
use serde_json::{Value, json};
use support::operations::{
    APP, ISSUER, STRIPE_KEY, STRIPE_WEBHOOK_SECRET, clerk_event, client, key, setup,
};
use support::standins::StripeAnswer;
use support::{Server, now, status_and_json};

const PLANS: &str = "/api/v1/operations/payment/plans";
const STATE: &str = "/api/v1/operations/payment/subscription";
const CHECKOUT: &str = "/api/v1/operations/payment/checkout";
const CHECKOUT_SESSION: &str = "/api/v1/operations/payment/checkout-session";
const PORTAL: &str = "/api/v1/operations/payment/customer-portal";
/// A session token v2 of `user`, naming `org` with `role` (as Clerk writes it: `admin`).
pub(crate) fn token(user: &str, org: Option<(&str, &str)>) -> String {
    let t = now();
    let mut claims = json!({"sub": user, "iat": t - 10, "nbf": t - 10, "exp": t + 120,
        "iss": ISSUER, "azp": APP, "sid": "sess_1", "v": 2});
    if let Some((org, role)) = org {
        claims["o"] = json!({"id": org, "rol": role, "slg": "acme"});
    }
    key().sign(&claims)
}

/// A session token v1 of `user` in `org` with `org_role`.
fn token_v1(user: &str, org: &str, role: &str) -> String {
    let t = now();
    key().sign(
        &json!({"sub": user, "iat": t - 10, "nbf": t - 10, "exp": t + 120,
        "iss": ISSUER, "azp": APP, "sid": "sess_1", "org_id": org, "org_role": role}),
    )
}

/// Delivers a signed Stripe event about `object`, created at `created`.
async fn stripe_event(server: &Server, id: &str, event_type: &str, created: i64, object: Value) {
    let answer = support::operations::stripe_event(server, id, event_type, created, object).await;
    assert_eq!(answer["status"], "processed", "{event_type}: {answer}");
}

/// `user` joins `org` with `role`, and the user is synced with a primary email.
pub(crate) async fn member(server: &Server, org: &str, user: &str, role: &str) {
    let updated = now() * 1000 - 60_000;
    clerk_event(
        server,
        &format!("msg_user_{user}"),
        "user.created",
        json!({"id": user, "object": "user", "first_name": "Jane", "last_name": "Doe",
               "primary_email_address_id": "idn_1", "email_addresses": [
                   {"id": "idn_0", "email_address": "old@acme.example"},
                   {"id": "idn_1", "email_address": format!("{user}@acme.example")}],
               "created_at": updated, "updated_at": updated}),
    )
    .await;
    clerk_event(
        server,
        &format!("msg_member_{org}_{user}"),
        "organizationMembership.created",
        json!({"id": format!("orgmem_{org}_{user}"), "object": "organization_membership",
               "role": role,
               "organization": {"id": org, "name": "Acme", "slug": "acme", "updated_at": updated},
               "public_user_data": {"user_id": user, "identifier": "jane@acme.example"},
               "created_at": updated, "updated_at": updated}),
    )
    .await;
}

fn product(id: &str, name: &str, active: bool, features: &[&str]) -> Value {
    json!({"id": id, "object": "product", "active": active, "name": name,
           "description": format!("{name} plan"), "default_price": null, "livemode": false,
           "marketing_features": features.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
           "metadata": {}, "created": 1_700_000_000, "updated": 1_700_000_000})
}

fn price(id: &str, product: &str, amount: i64, interval: Option<&str>) -> Value {
    json!({"id": id, "object": "price", "active": true, "currency": "eur",
           "unit_amount": amount, "unit_amount_decimal": amount.to_string(),
           "product": product, "livemode": false, "lookup_key": id, "nickname": null,
           "billing_scheme": "per_unit", "tax_behavior": "exclusive",
           "type": if interval.is_some() { "recurring" } else { "one_time" },
           "recurring": interval.map(|i| json!({"interval": i, "interval_count": 1,
               "usage_type": "licensed", "meter": null, "trial_period_days": null}))})
}

/// The catalog: Team (monthly 29 €, yearly 290 €), Business (monthly 99 €), credits (one-time
/// 10 €), an archived product with a price, and an archived price of Team.
pub(crate) async fn sync_catalog(server: &Server, t: i64) {
    let events = [
        (
            "product.created",
            product("prod_team", "Team", true, &["SSO", "10 seats"]),
        ),
        (
            "product.created",
            product("prod_business", "Business", true, &["Audit log"]),
        ),
        (
            "product.created",
            product("prod_credits", "Credits", true, &[]),
        ),
        ("product.created", product("prod_old", "Old", true, &[])),
        (
            "price.created",
            price("price_team_monthly", "prod_team", 2_900, Some("month")),
        ),
        (
            "price.created",
            price("price_team_yearly", "prod_team", 29_000, Some("year")),
        ),
        (
            "price.created",
            price("price_team_legacy", "prod_team", 1_900, Some("month")),
        ),
        (
            "price.created",
            price("price_business", "prod_business", 9_900, Some("month")),
        ),
        (
            "price.created",
            price("price_credits", "prod_credits", 1_000, None),
        ),
        (
            "price.created",
            price("price_old", "prod_old", 500, Some("month")),
        ),
    ];
    for (n, (event_type, object)) in events.into_iter().enumerate() {
        stripe_event(server, &format!("evt_catalog_{n}"), event_type, t, object).await;
    }
    let mut archived = product("prod_old", "Old", false, &[]);
    archived["updated"] = json!(t + 1);
    stripe_event(
        server,
        "evt_catalog_archive",
        "product.updated",
        t + 1,
        archived,
    )
    .await;
    let mut legacy = price("price_team_legacy", "prod_team", 1_900, Some("month"));
    legacy["active"] = json!(false);
    stripe_event(server, "evt_catalog_legacy", "price.updated", t + 1, legacy).await;
}

pub(crate) fn subscription(
    id: &str,
    customer: &str,
    org: &str,
    status: &str,
    ended: Option<i64>,
) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": status,
           "cancel_at_period_end": false, "cancel_at": null, "canceled_at": ended,
           "ended_at": ended, "trial_end": null, "livemode": false,
           "metadata": {"organization_id": org}, "created": 1_763_000_000,
           "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
               "quantity": 3, "current_period_start": 1_763_000_000,
               "current_period_end": 1_765_678_400,
               "price": price("price_team_monthly", "prod_team", 2_900, Some("month"))}]}})
}

pub(crate) fn entitlement_summary(customer: &str, keys: &[&str]) -> Value {
    json!({"object": "entitlements.active_entitlement_summary", "customer": customer,
           "livemode": false, "entitlements": {"object": "list", "has_more": false,
           "url": "/v1/customer/entitlements",
           "data": keys.iter().enumerate().map(|(n, k)| json!({
               "id": format!("ent_{n}"), "object": "entitlements.active_entitlement",
               "feature": format!("feat_{k}"), "livemode": false, "lookup_key": k})).collect::<Vec<_>>()}})
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = support::http().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("GET")
}

async fn state(server: &Server, token: &str) -> Value {
    let (status, body) = status_and_json(get(server, STATE, Some(token)).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `POST …/checkout` with a JSON body, asking for JSON back.
async fn checkout_json(server: &Server, token: &str, body: Value) -> (u16, Value) {
    let response = support::http()
        .post(server.url(CHECKOUT_SESSION))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST checkout");
    status_and_json(response).await
}

each_backend!(
    the_plans_page_loop_from_catalog_through_checkout_to_an_ended_subscription,
    only_billing_roles_open_the_portal_and_start_checkout,
    checkout_refuses_what_cannot_be_bought_in_the_documented_format,
    a_stripe_failure_is_a_500_and_the_log_names_stripes_request_id,
    only_the_apps_own_pages_may_post_a_checkout_with_the_session_cookie,
    a_payment_link_naming_another_organization_never_re_points_its_billing,
);

async fn only_the_apps_own_pages_may_post_a_checkout_with_the_session_cookie(db: TestDatabase) {
    // Without CORS_ALLOWED_ORIGINS no CORS layer refuses foreign origins first: the check is
    // the checkout's own.
    let s = setup(&db, &[], &[]).await;
    sync_catalog(&s.server, now() - 3_600).await;
    member(&s.server, "org_c", "user_c", "org:admin").await;
    let admin = token("user_c", Some(("org_c", "admin")));
    let post = |origin: Option<&'static str>, cookie: bool| {
        let mut request = support::http()
            .post(s.server.url(CHECKOUT))
            .form(&[("price_id", "price_credits")]);
        request = if cookie {
            request.header("cookie", format!("__session={admin}"))
        } else {
            request.bearer_auth(&admin)
        };
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    let forged = post(Some("https://evil.example"), true)
        .await
        .expect("POST");
    let (status, body) = status_and_json(forged).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{body}"
    );
    assert!(
        s.stripe.received().is_empty(),
        "no session for a forged post"
    );

    for (origin, cookie, why) in [
        (Some("https://app.example.com"), true, "the app's own page"),
        (None, true, "no Origin: not a browser's cross-origin post"),
        (
            Some("https://evil.example"),
            false,
            "a bearer token, which no page sends by itself",
        ),
    ] {
        let response = post(origin, cookie).await.expect("POST");
        assert_eq!(response.status(), 303, "{why}");
    }
}

/// With `CORS_ALLOWED_ORIGINS` set, the CORS policy never stands between the web app and its
/// own API: a form posted from `APP_BASE_URL`'s origin, or from the server's own origin (Swagger
/// UI on `/docs`, an app behind the same host), reaches checkout as it does without CORS; only
/// other origins not in the list get the documented 403.
#[tokio::test]
async fn with_cors_on_the_apps_own_origin_and_the_servers_own_still_start_a_checkout() {
    let db = TestDatabase::create(billing_sync_testkit::Backend::Sqlite)
        .await
        .expect("sqlite");
    let partner = "https://partner.example.com";
    let s = setup(&db, &[], &[("CORS_ALLOWED_ORIGINS", partner)]).await;
    sync_catalog(&s.server, now() - 3_600).await;
    member(&s.server, "org_x", "user_x", "org:admin").await;
    let admin = token("user_x", Some(("org_x", "admin")));
    let own = s.server.base_url.trim_end_matches('/').to_owned();
    let post = |origin: String, fetch_site: &'static str| {
        support::http()
            .post(s.server.url(CHECKOUT))
            .form(&[("price_id", "price_credits")])
            .header("cookie", format!("__session={admin}"))
            .header("origin", origin)
            .header("sec-fetch-site", fetch_site)
            .send()
    };
    for (origin, fetch_site, why) in [
        (APP.to_owned(), "same-site", "APP_BASE_URL's origin"),
        (own.clone(), "same-origin", "the server's own origin"),
        (
            own.clone(),
            "none",
            "the server's own origin, by its Host (a browser without Sec-Fetch-Site)",
        ),
        (
            "https://billing.example.com".to_owned(),
            "same-origin",
            "a page of the origin a proxy serves the API on",
        ),
        (partner.to_owned(), "cross-site", "an origin in the list"),
    ] {
        let response = post(origin, fetch_site).await.expect("POST");
        assert_eq!(response.status(), 303, "{why}");
        let vary = response
            .headers()
            .get("vary")
            .map(|v| v.to_str().expect("text").to_owned());
        assert!(
            vary.is_some_and(|vary| vary.to_ascii_lowercase().contains("origin")),
            "{why}: Vary: Origin"
        );
    }
    let sessions = s.stripe.received().len();
    for (origin, fetch_site) in [
        ("https://evil.example", "cross-site"),
        ("https://other.app.example.com", "same-site"),
    ] {
        let refused = post(origin.to_owned(), fetch_site).await.expect("POST");
        let (status, body) = status_and_json(refused).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{origin}: {body}"
        );
    }
    assert_eq!(
        s.stripe.received().len(),
        sessions,
        "no session for a refused origin"
    );
}

async fn a_stripe_failure_is_a_500_and_the_log_names_stripes_request_id(db: TestDatabase) {
    // A 400 from Stripe is not retried: one answer decides.
    let s = setup(&db, &[StripeAnswer::Error(400)], &[]).await;
    sync_catalog(&s.server, now() - 3_600).await;
    member(&s.server, "org_f", "user_f", "org:admin").await;
    let admin = token("user_f", Some(("org_f", "admin")));

    let typed = client(&s.server, &admin)
        .create_checkout_session(&billing_sync_client::types::CheckoutRequest {
            price_id: "price_credits".into(),
            quantity: None,
        })
        .await;
    let Err(billing_sync_client::Error::ErrorResponse(error)) = typed else {
        panic!("a documented error expected, got {typed:?}");
    };
    assert_eq!(error.status(), 500);
    assert_eq!(error.code, "INTERNAL_ERROR");
    s.server
        .wait_for_log("the checkout failure naming Stripe's request id", |line| {
            line.contains("checkout") && line.contains("req_standin0000")
        })
        .await;
    assert!(
        !s.server.logs().iter().any(|line| line.contains(STRIPE_KEY)),
        "never the key"
    );
    // The next attempt (Stripe healthy again) succeeds.
    let (status, _) = checkout_json(&s.server, &admin, json!({"price_id": "price_credits"})).await;
    assert_eq!(status, 200);
}

async fn the_plans_page_loop_from_catalog_through_checkout_to_an_ended_subscription(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[]).await;
    let t = now() - 3_600;
    member(&s.server, "org_a", "user_a", "org:admin").await;
    sync_catalog(&s.server, t).await;

    // The catalog: public, cacheable, in the documented order, nothing archived.
    let response = get(&s.server, PLANS, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    let etag = response.headers()["etag"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag}"
    );
    let plans: Value = response.json().await.expect("JSON");
    let products: Vec<&str> = plans["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(products, ["prod_credits", "prod_team", "prod_business"]);
    let team = &plans["products"][1];
    assert_eq!(team["name"], "Team");
    assert_eq!(team["description"], "Team plan");
    assert_eq!(team["marketing_features"], json!(["SSO", "10 seats"]));
    let team_prices: Vec<&str> = team["prices"]
        .as_array()
        .expect("prices")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(team_prices, ["price_team_monthly", "price_team_yearly"]);
    assert_eq!(
        team["prices"][0],
        json!({"id": "price_team_monthly", "type": "recurring", "lookup_key": "price_team_monthly",
               "unit_amount": 2900, "currency": "eur",
               "recurring": {"interval": "month", "interval_count": 1}})
    );
    assert_eq!(plans["products"][0]["prices"][0]["type"], "one_time");
    assert!(plans["products"][0]["prices"][0].get("recurring").is_none());

    let not_modified = support::http()
        .get(s.server.url(PLANS))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"].to_str().expect("text"), etag);
    // A read answers HEAD as GET (only the portal, which creates a session, refuses it).
    let head = support::http()
        .head(s.server.url(PLANS))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().expect("text"), etag);

    // An organization that never paid: the free plan.
    let admin = token("user_a", Some(("org_a", "admin")));
    let free = state(&s.server, &admin).await;
    assert_eq!(
        free,
        json!({"organization_id": "org_a", "active": false, "subscriptions": [],
               "entitlements": [], "credits_balance": 0})
    );
    let (status, portal) = status_and_json(get(&s.server, PORTAL, Some(&admin)).await).await;
    assert_eq!((status, portal["code"].as_str()), (404, Some("NOT_FOUND")));

    // Checkout for an organization without a customer.
    let (status, first) = checkout_json(
        &s.server,
        &admin,
        json!({"price_id": "price_team_monthly", "quantity": 3}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let url = first["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("https://checkout.stripe.com/"), "{url}");
    let (status, again) = checkout_json(
        &s.server,
        &admin,
        json!({"price_id": "price_team_monthly", "quantity": 3}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["url"], url, "a double click makes one session");

    let received = s.stripe.received();
    assert_eq!(received.len(), 2);
    let request = &received[0];
    assert_eq!(request.path, "/v1/checkout/sessions");
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {STRIPE_KEY}").as_str())
    );
    assert_eq!(request.field("mode"), Some("subscription"));
    assert_eq!(
        request.field("line_items[0][price]"),
        Some("price_team_monthly")
    );
    assert_eq!(request.field("line_items[0][quantity]"), Some("3"));
    assert_eq!(request.field("client_reference_id"), Some("org_a"));
    assert_eq!(request.field("metadata[organization_id]"), Some("org_a"));
    assert_eq!(
        request.field("subscription_data[metadata][organization_id]"),
        Some("org_a")
    );
    assert_eq!(
        request.field("success_url"),
        Some(
            "https://app.example.com/organization?checkout=success&session_id={CHECKOUT_SESSION_ID}#/plans"
        )
    );
    assert_eq!(
        request.field("cancel_url"),
        Some("https://app.example.com/organization#/plans")
    );
    assert_eq!(request.field("customer_email"), Some("user_a@acme.example"));
    assert_eq!(request.field("customer"), None);
    assert_eq!(
        request.field("customer_creation"),
        None,
        "subscription mode creates one"
    );
    assert!(request.idempotency_key.is_some());
    assert_eq!(received[1].idempotency_key, request.idempotency_key);

    // Credits by a plain HTML form post: a one-time payment, redirected with 303.
    let form = support::http()
        .post(s.server.url(CHECKOUT))
        .bearer_auth(&admin)
        .header("accept", "text/html")
        .form(&[("price_id", "price_credits"), ("quantity", "2")])
        .send()
        .await
        .expect("POST the form");
    assert_eq!(form.status(), 303);
    assert_eq!(form.headers()["cache-control"], "no-store");
    assert!(
        form.headers()["location"]
            .to_str()
            .expect("text")
            .starts_with("https://checkout.stripe.com/")
    );
    let credits = s.stripe.received().pop().expect("a request");
    assert_eq!(credits.field("mode"), Some("payment"));
    assert_eq!(credits.field("customer_creation"), Some("always"));
    assert_eq!(
        credits.field("payment_intent_data[metadata][organization_id]"),
        Some("org_a")
    );

    // Stripe completes the checkout: the customer, its subscription and its entitlements.
    stripe_event(
        &s.server,
        "evt_loop_checkout",
        "checkout.session.completed",
        t + 10,
        json!({"id": "cs_test_standin0000", "object": "checkout.session",
               "mode": "subscription", "customer": "cus_new", "client_reference_id": "org_a",
               "metadata": {"organization_id": "org_a"}, "subscription": "sub_new",
               "livemode": false, "status": "complete"}),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_loop_sub_created",
        "customer.subscription.created",
        t + 11,
        subscription("sub_new", "cus_new", "org_a", "active", None),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_loop_entitlements",
        "entitlements.active_entitlement_summary.updated",
        t + 12,
        entitlement_summary("cus_new", &["sso", "seats"]),
    )
    .await;

    let paid = state(&s.server, &admin).await;
    assert_eq!(paid["customer_id"], "cus_new");
    assert_eq!(paid["active"], true);
    assert_eq!(paid["entitlements"], json!(["seats", "sso"]));
    let subscription_state = &paid["subscriptions"][0];
    assert_eq!(subscription_state["id"], "sub_new");
    assert_eq!(subscription_state["status"], "active");
    assert_eq!(subscription_state["cancel_at_period_end"], false);
    assert_eq!(
        subscription_state["items"],
        json!([{"price_id": "price_team_monthly", "product_id": "prod_team",
                "product_name": "Team", "quantity": 3}])
    );
    assert!(subscription_state["current_period_end"].is_string());

    // Already subscribed: another plan goes through the portal.
    let (status, conflict) =
        checkout_json(&s.server, &admin, json!({"price_id": "price_business"})).await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (409, Some("CONFLICT")),
        "{conflict}"
    );
    let portal = get(&s.server, PORTAL, Some(&admin)).await;
    assert_eq!(portal.status(), 302);
    let portal_request = s.stripe.received().pop().expect("a request");
    assert_eq!(portal_request.path, "/v1/billing_portal/sessions");
    assert_eq!(portal_request.field("customer"), Some("cus_new"));

    // The subscription ends and the entitlements go.
    stripe_event(
        &s.server,
        "evt_loop_sub_deleted",
        "customer.subscription.deleted",
        t + 20,
        subscription("sub_new", "cus_new", "org_a", "canceled", Some(t + 20)),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_loop_entitlements_gone",
        "entitlements.active_entitlement_summary.updated",
        t + 21,
        entitlement_summary("cus_new", &[]),
    )
    .await;
    let ended = state(&s.server, &admin).await;
    // The generated client reads the same state, typed.
    let typed = client(&s.server, &admin)
        .billing_state()
        .await
        .expect("billing state")
        .into_inner();
    assert_eq!(typed.customer_id.as_deref(), Some("cus_new"));
    assert!(!typed.active);
    assert_eq!(typed.subscriptions[0].status, "canceled");
    assert_eq!(
        typed.subscriptions[0].items[0].product_name.as_deref(),
        Some("Team")
    );
    assert_eq!(ended["active"], false);
    assert_eq!(ended["entitlements"], json!([]));
    assert_eq!(ended["subscriptions"][0]["status"], "canceled");
    assert!(ended["subscriptions"][0]["ended_at"].is_string());
    // And a new subscription may be bought again.
    let (status, _) = checkout_json(&s.server, &admin, json!({"price_id": "price_business"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        s.stripe
            .received()
            .pop()
            .expect("a request")
            .field("customer"),
        Some("cus_new"),
        "the organization's customer is reused"
    );
}

async fn only_billing_roles_open_the_portal_and_start_checkout(db: TestDatabase) {
    let s = setup(&db, &[], &[("BILLING_ROLES", "org:admin, billing_manager")]).await;
    let t = now() - 3_600;
    sync_catalog(&s.server, t).await;
    member(&s.server, "org_r", "user_admin", "org:admin").await;
    member(&s.server, "org_r", "user_member", "org:member").await;
    support::checkout(&s.server, STRIPE_WEBHOOK_SECRET, "cus_r", "org_r").await;
    let order = json!({"price_id": "price_credits"});

    // The token's role: v2's `o.rol` without the prefix, v1's `org_role` with it.
    for (who, allowed_token, refused_token) in [
        (
            "v2",
            token("user_admin", Some(("org_r", "admin"))),
            token("user_member", Some(("org_r", "member"))),
        ),
        (
            "v1",
            token_v1("user_admin", "org_r", "org:admin"),
            token_v1("user_member", "org_r", "org:member"),
        ),
    ] {
        assert_eq!(
            get(&s.server, PORTAL, Some(&allowed_token)).await.status(),
            302,
            "{who}"
        );
        let (status, _) = checkout_json(&s.server, &allowed_token, order.clone()).await;
        assert_eq!(status, 200, "{who}");

        let (status, body) =
            status_and_json(get(&s.server, PORTAL, Some(&refused_token)).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{who}: {body}"
        );
        let (status, body) = checkout_json(&s.server, &refused_token, order.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{who}: {body}"
        );
        // Reads are for every member.
        assert_eq!(
            state(&s.server, &refused_token).await["customer_id"],
            "cus_r"
        );
    }
    // A role named in BILLING_ROLES without the prefix matches Clerk's prefixed role.
    let billing_manager = token("user_member", Some(("org_r", "billing_manager")));
    assert_eq!(
        get(&s.server, PORTAL, Some(&billing_manager))
            .await
            .status(),
        302
    );

    // No organization in the token: the synced membership's role decides.
    let (status, _) = checkout_json(&s.server, &token("user_admin", None), order.clone()).await;
    assert_eq!(status, 200, "synced org:admin");
    let (status, body) =
        status_and_json(get(&s.server, PORTAL, Some(&token("user_member", None))).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "synced org:member"
    );

    // Not a member of anything: refused, whatever the operation.
    let stranger = token("user_stranger", None);
    for response in [
        get(&s.server, PORTAL, Some(&stranger)).await,
        get(&s.server, STATE, Some(&stranger)).await,
    ] {
        let (status, body) = status_and_json(response).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{body}"
        );
    }
    let (status, _) = checkout_json(&s.server, &stranger, order).await;
    assert_eq!(status, 400);
}

async fn checkout_refuses_what_cannot_be_bought_in_the_documented_format(db: TestDatabase) {
    let s = setup(&db, &[], &[]).await;
    sync_catalog(&s.server, now() - 3_600).await;
    member(&s.server, "org_v", "user_v", "org:admin").await;
    let admin = token("user_v", Some(("org_v", "admin")));

    for (body, why) in [
        (json!({"price_id": "price_nope"}), "unknown price"),
        (json!({"price_id": "price_team_legacy"}), "archived price"),
        (
            json!({"price_id": "price_old"}),
            "price of an archived product",
        ),
        (
            json!({"price_id": "price_credits", "quantity": 0}),
            "quantity 0",
        ),
        (
            json!({"price_id": "price_credits", "quantity": 10_001}),
            "quantity too large",
        ),
        (json!({"quantity": 1}), "no price"),
    ] {
        let (status, answer) = checkout_json(&s.server, &admin, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{why}: {answer}"
        );
    }
    let form = support::http()
        .post(s.server.url(CHECKOUT))
        .bearer_auth(&admin)
        .form(&[("price_id", "price_credits"), ("quantity", "0")])
        .send()
        .await
        .expect("POST");
    let (status, answer) = status_and_json(form).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{answer}"
    );

    // Each operation takes its one media type: JSON at the form's path, or a form at the JSON
    // path, is refused in the documented format and creates nothing.
    let json_to_form = support::http()
        .post(s.server.url(CHECKOUT))
        .bearer_auth(&admin)
        .json(&json!({"price_id": "price_credits"}))
        .send()
        .await
        .expect("POST");
    let form_to_json = support::http()
        .post(s.server.url(CHECKOUT_SESSION))
        .bearer_auth(&admin)
        .form(&[("price_id", "price_credits")])
        .send()
        .await
        .expect("POST");
    for (response, why) in [
        (json_to_form, "JSON to the form"),
        (form_to_json, "a form to JSON"),
    ] {
        let (status, answer) = status_and_json(response).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{why}: {answer}"
        );
    }

    let unauthenticated = support::http()
        .post(s.server.url(CHECKOUT_SESSION))
        .json(&json!({"price_id": "price_credits"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(unauthenticated.headers()["www-authenticate"], "Bearer");
    let (status, answer) = status_and_json(unauthenticated).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert!(
        s.stripe.received().is_empty(),
        "no Stripe call for a refusal"
    );
}

/// The secret the plans tests sign pricing-table references with.
const CLIENT_REFERENCE_SECRET: &str = "a-client-reference-secret-of-32-bytes-at-least";
const CLIENT_REFERENCE: &str = "/api/v1/operations/payment/client-reference";

/// With a Payment Link or a pricing table the browser chooses `client_reference_id`: an
/// attacker's checkout naming the victim's organization, without metadata, must leave the
/// victim's customer, entitlements and portal as they were, and one naming an organization
/// that no customer bills yet must not link it either. Only a reference billing-sync signed
/// for a member of the organization (`client-reference`), in a session created before it
/// expired, links an organization that no customer bills yet.
async fn a_payment_link_naming_another_organization_never_re_points_its_billing(db: TestDatabase) {
    let s = setup(
        &db,
        &[],
        &[("STRIPE_CLIENT_REFERENCE_SECRET", CLIENT_REFERENCE_SECRET)],
    )
    .await;
    let t = now() - 3_600;
    member(&s.server, "org_victim", "user_victim", "org:admin").await;
    member(&s.server, "org_new", "user_new", "org:admin").await;
    stripe_event(
        &s.server,
        "evt_victim_checkout",
        "checkout.session.completed",
        t,
        json!({"id": "cs_victim", "object": "checkout.session", "mode": "subscription",
               "customer": "cus_victim", "client_reference_id": "org_victim",
               "metadata": {"organization_id": "org_victim"}, "livemode": false}),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_victim_sub",
        "customer.subscription.created",
        t + 1,
        subscription("sub_victim", "cus_victim", "org_victim", "active", None),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_victim_entitlements",
        "entitlements.active_entitlement_summary.updated",
        t + 2,
        entitlement_summary("cus_victim", &["sso"]),
    )
    .await;
    let victim = token("user_victim", Some(("org_victim", "admin")));
    let before = state(&s.server, &victim).await;
    assert_eq!(before["customer_id"], "cus_victim");
    assert_eq!(before["entitlements"], json!(["sso"]));

    // The attacker pays through a Payment Link whose URL names the victim's organization.
    for (n, created) in [(1, t + 10), (2, t + 20)] {
        stripe_event(
            &s.server,
            &format!("evt_attack_{n}"),
            "checkout.session.completed",
            created,
            json!({"id": format!("cs_attack_{n}"), "object": "checkout.session",
                   "created": created, "mode": "payment",
                   "customer": format!("cus_zz_attacker_{n}"),
                   "client_reference_id": "org_victim", "metadata": {}, "livemode": false}),
        )
        .await;
    }
    // The attacker's customer is newer than the victim's, and its id sorts after it: whichever
    // way an organization's customers were ordered, a link would make it the victim's.
    stripe_event(
        &s.server,
        "evt_attacker_customer",
        "customer.created",
        t + 25,
        json!({"id": "cus_zz_attacker_1", "object": "customer", "created": t + 25,
               "email": "mallory@example.net", "metadata": {}, "livemode": false}),
    )
    .await;
    stripe_event(
        &s.server,
        "evt_attacker_entitlements",
        "entitlements.active_entitlement_summary.updated",
        t + 30,
        entitlement_summary("cus_zz_attacker_1", &[]),
    )
    .await;
    let after = state(&s.server, &victim).await;
    assert_eq!(after["customer_id"], "cus_victim", "{after}");
    assert_eq!(after["entitlements"], json!(["sso"]), "{after}");
    assert_eq!(after["active"], true, "{after}");
    let portal = get(&s.server, PORTAL, Some(&victim)).await;
    assert_eq!(portal.status(), 302);
    let session = s.stripe.received().pop().expect("a portal request");
    assert_eq!(session.field("customer"), Some("cus_victim"));

    // An organization that no customer bills yet: the attacker names it, bare and in a
    // reference of their own making; neither links it.
    let new_member = token("user_new", Some(("org_new", "admin")));
    let (status, reference) =
        status_and_json(get(&s.server, CLIENT_REFERENCE, Some(&new_member)).await).await;
    assert_eq!(status, 200, "{reference}");
    let signed = reference["client_reference_id"]
        .as_str()
        .expect("a reference");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(reference["expires_at"].as_str().expect("an expiry"))
            .expect("RFC 3339")
            .timestamp();
    assert!(
        signed.len() <= 200 && signed.ends_with("org_new"),
        "{signed}"
    );
    // The same reference with a later expiry: its MAC no longer matches.
    let extended = signed.replacen(
        &format!("_{expires_at}_"),
        &format!("_{}_", expires_at + 86_400),
        1,
    );
    assert_ne!(extended, signed);
    for (n, (reference, created)) in [
        ("org_new".to_owned(), now()),
        (extended, now()),
        (signed.to_owned(), expires_at + 1),
    ]
    .into_iter()
    .enumerate()
    {
        stripe_event(
            &s.server,
            &format!("evt_new_attack_{n}"),
            "checkout.session.completed",
            t + 40,
            json!({"id": format!("cs_new_attack_{n}"), "object": "checkout.session",
                   "created": created, "mode": "payment",
                   "customer": format!("cus_attacker_new_{n}"), "client_reference_id": reference,
                   "metadata": {}, "livemode": false}),
        )
        .await;
    }
    let unlinked = state(&s.server, &new_member).await;
    assert_eq!(unlinked["customer_id"], Value::Null, "{unlinked}");

    // The member's own reference, in a session created before it expired, links it.
    stripe_event(
        &s.server,
        "evt_new_checkout",
        "checkout.session.completed",
        t + 50,
        json!({"id": "cs_new", "object": "checkout.session", "created": now(),
               "mode": "payment", "customer": "cus_new_org", "client_reference_id": signed,
               "metadata": {}, "livemode": false}),
    )
    .await;
    let new = state(&s.server, &new_member).await;
    assert_eq!(new["customer_id"], "cus_new_org", "{new}");
}
