//! End-to-end tests of the customer-portal endpoint on the real server, with a local JWKS and a
//! local Stripe stand-in, state seeded through the real webhook routes, and the generated client.

use crate::support;

use std::sync::OnceLock;
use std::time::Duration;

use billing_sync_client::Client;
use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use serde_json::{Value, json};
use support::operations::{
    APP, CLERK_WEBHOOK_SECRET, ISSUER, STRIPE_KEY, STRIPE_WEBHOOK_SECRET, Setup, clerk_event,
    client, key, setup,
};
use support::standins::{JwksStandIn, SigningKey, StripeAnswer};
use support::{Server, now, post_clerk};

const PORTAL: &str = "/api/v1/operations/payment/customer-portal";
fn impostor() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    // Same kid as the real key: only the signature can tell them apart.
    KEY.get_or_init(|| SigningKey::generate("ins_key_1"))
}

fn claims(user: &str, org: Option<&str>) -> Value {
    let t = now();
    let mut claims = json!({"sub": user, "iat": t - 10, "nbf": t - 10, "exp": t + 120,
        "iss": ISSUER, "azp": APP, "sid": "sess_1", "v": 2});
    if let Some(org) = org {
        claims["o"] = json!({"id": org, "rol": "admin", "slg": "acme"});
    }
    claims
}

async fn add_member(server: &Server, org: &str, user: &str) {
    support::add_member(server, CLERK_WEBHOOK_SECRET, org, user).await;
}

async fn remove_member(server: &Server, org: &str, user: &str) {
    let body = support::membership_body("organizationMembership.deleted", org, user);
    let id = format!("msg_remove_{org}_{user}");
    let response = post_clerk(server, CLERK_WEBHOOK_SECRET, &id, now(), &body).await;
    assert_eq!(response.status(), 200, "removing {user} from {org}");
}

async fn checkout(server: &Server, customer: &str, org: &str) {
    support::checkout(server, STRIPE_WEBHOOK_SECRET, customer, org).await;
}

async fn get_portal(
    server: &Server,
    token: Option<&str>,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut request = support::http().get(server.url(PORTAL));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.expect("GET the portal")
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

each_backend!(
    a_token_issued_in_the_second_of_the_removal_is_refused,
    a_member_is_redirected_to_a_fresh_session_for_the_checkout_linked_customer,
    the_organization_comes_from_the_only_active_membership_when_the_token_has_none,
    a_member_removed_by_a_clerk_webhook_loses_access_before_the_token_expires,
    an_organization_without_a_customer_is_not_found,
);

async fn a_member_is_redirected_to_a_fresh_session_for_the_checkout_linked_customer(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_a", "user_a").await;
    checkout(&s.server, "cus_a", "org_a").await;
    let token = key().sign(&claims("user_a", Some("org_a")));

    let first = get_portal(&s.server, Some(&token), None).await;
    assert_eq!(first.status(), 302);
    let location = first.headers()["location"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(
        location,
        "https://billing.stripe.com/p/session/test_standin0000"
    );
    assert_eq!(first.headers()["cache-control"], "no-store");
    assert!(
        first.bytes().await.expect("body").is_empty(),
        "no body on success"
    );

    let second = get_portal(&s.server, Some(&token), None).await;
    assert_eq!(second.status(), 302);
    assert_ne!(
        second.headers()["location"].to_str().expect("text"),
        location,
        "never cached"
    );

    let received = s.stripe.received();
    assert_eq!(received.len(), 2);
    let request = &received[0];
    assert_eq!(request.field("customer"), Some("cus_a"));
    assert_eq!(
        request.field("return_url"),
        Some("https://app.example.com/organization#/plans")
    );
    assert_eq!(request.field("configuration"), None);
    assert_eq!(
        request.form.len(),
        2,
        "exactly customer and return_url: {:?}",
        request.form
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {STRIPE_KEY}").as_str())
    );
    assert_eq!(
        request.stripe_version.as_deref(),
        Some(billing_sync_stripe_api::STRIPE_VERSION)
    );
    assert!(
        request
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    );
    assert_ne!(received[0].idempotency_key, received[1].idempotency_key);
    assert!(
        !s.server.logs().join("\n").contains(STRIPE_KEY),
        "the Stripe key is never logged"
    );
}

async fn the_organization_comes_from_the_only_active_membership_when_the_token_has_none(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[]).await;
    let token = key().sign(&claims("user_b", None));
    let (status, code, message) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION_ERROR"));
    assert!(
        message.contains("not associated with an organization"),
        "{message}"
    );

    add_member(&s.server, "org_b1", "user_b").await;
    checkout(&s.server, "cus_b1", "org_b1").await;
    let response = get_portal(&s.server, Some(&token), None).await;
    assert_eq!(response.status(), 302);
    assert_eq!(s.stripe.received()[0].field("customer"), Some("cus_b1"));

    add_member(&s.server, "org_b2", "user_b").await;
    let (status, code, message) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION_ERROR"));
    assert!(
        message.contains("select an active organization"),
        "{message}"
    );
}

async fn a_member_removed_by_a_clerk_webhook_loses_access_before_the_token_expires(
    db: TestDatabase,
) {
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_c", "user_c").await;
    checkout(&s.server, "cus_c", "org_c").await;
    let token = key().sign(&claims("user_c", Some("org_c")));
    assert_eq!(
        get_portal(&s.server, Some(&token), None).await.status(),
        302
    );

    remove_member(&s.server, "org_c", "user_c").await;
    let (status, code, message) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION_ERROR"));
    assert!(message.contains("no longer a member"), "{message}");
    assert_eq!(
        s.stripe.received().len(),
        1,
        "no session is created for a removed member"
    );

    // The organization deleted in Clerk: also refused.
    add_member(&s.server, "org_c2", "user_c").await;
    checkout(&s.server, "cus_c2", "org_c2").await;
    clerk_event(
        &s.server,
        "msg_org_c2_deleted",
        "organization.deleted",
        json!({"id": "org_c2", "object": "organization", "deleted": true}),
    )
    .await;
    let token = key().sign(&claims("user_c", Some("org_c2")));
    let (status, code, _) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION_ERROR"));
}

async fn an_organization_without_a_customer_is_not_found(db: TestDatabase) {
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_d", "user_d").await;
    let token = key().sign(&claims("user_d", Some("org_d")));
    let (status, code, message) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    assert!(message.contains("no Stripe customer"), "{message}");
    assert!(s.stripe.received().is_empty());
}

async fn sqlite() -> TestDatabase {
    TestDatabase::create(Backend::Sqlite).await.expect("sqlite")
}

#[tokio::test]
async fn the_session_cookie_and_a_v1_token_are_accepted() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_e", "user_e").await;
    checkout(&s.server, "cus_e", "org_e").await;
    let mut v1 = claims("user_e", None);
    v1["org_id"] = json!("org_e");
    v1["v"] = json!(1);
    let token = key().sign(&v1);
    let response = support::http()
        .get(s.server.url(PORTAL))
        .header("cookie", format!("__session={token}; other=1"))
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 302);
}

#[tokio::test]
async fn the_generated_client_gets_the_json_variant_and_every_error_row() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[("STRIPE_PORTAL_CONFIGURATION", "bpc_custom")]).await;
    add_member(&s.server, "org_f", "user_f").await;
    checkout(&s.server, "cus_f", "org_f").await;

    let ok = client(&s.server, &key().sign(&claims("user_f", Some("org_f"))))
        .customer_portal()
        .await
        .expect("200 {url}");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    assert!(
        ok.url.starts_with("https://billing.stripe.com/p/session/"),
        "{}",
        ok.url
    );
    assert_eq!(
        s.stripe.received()[0].field("configuration"),
        Some("bpc_custom")
    );

    type PortalResult = Result<
        billing_sync_client::ResponseValue<billing_sync_client::types::PortalUrl>,
        billing_sync_client::Error<billing_sync_client::types::ErrorBody>,
    >;
    let expect_error = |result: PortalResult, status: u16, code: &str| match result {
        Err(billing_sync_client::Error::ErrorResponse(response)) => {
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.code, code);
            if status == 401 {
                assert_eq!(response.headers()["www-authenticate"], "Bearer");
            }
        }
        Ok(ok) => panic!("expected {status} {code}, got 200 {}", ok.url),
        Err(other) => panic!("expected {status} {code}, got {other}"),
    };
    // 400, 404 through the client.
    expect_error(
        client(&s.server, &key().sign(&claims("user_nobody", None)))
            .customer_portal()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    add_member(&s.server, "org_nocus", "user_g").await;
    expect_error(
        client(&s.server, &key().sign(&claims("user_g", Some("org_nocus"))))
            .customer_portal()
            .await,
        404,
        "NOT_FOUND",
    );

    // 401: every way a token can be wrong.
    let t = now();
    let mut expired = claims("user_f", Some("org_f"));
    expired["exp"] = json!(t - 60);
    expired["iat"] = json!(t - 120);
    let mut not_yet = claims("user_f", Some("org_f"));
    not_yet["nbf"] = json!(t + 60);
    let mut wrong_azp = claims("user_f", Some("org_f"));
    wrong_azp["azp"] = json!("https://evil.example.com");
    let mut wrong_iss = claims("user_f", Some("org_f"));
    wrong_iss["iss"] = json!("https://other.clerk.example.com");
    let good = claims("user_f", Some("org_f"));
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(key().kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(key().public_pem.as_bytes()),
    )
    .expect("HS256 token");
    let tokens = [
        ("expired", key().sign(&expired)),
        ("not yet valid", key().sign(&not_yet)),
        ("wrong azp", key().sign(&wrong_azp)),
        ("wrong issuer", key().sign(&wrong_iss)),
        ("wrong key", impostor().sign(&good)),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256_with_public_key),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    for (name, token) in tokens {
        let result = client(&s.server, &token).customer_portal().await;
        match result {
            Err(billing_sync_client::Error::ErrorResponse(response)) => {
                assert_eq!(
                    (response.status().as_u16(), response.code.as_str()),
                    (401, "UNAUTHORIZED"),
                    "{name}"
                );
            }
            _ => panic!("{name}: expected 401"),
        }
    }
    // No token at all.
    let anonymous = Client::new(&s.server.base_url);
    expect_error(anonymous.customer_portal().await, 401, "UNAUTHORIZED");
    // 401 costs no Stripe call.
    assert_eq!(s.stripe.received().len(), 1);
    // And the JWKS was fetched once, then served from the cache.
    assert_eq!(s.jwks.fetch_count(), 1);
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_k", "user_k").await;
    checkout(&s.server, "cus_k", "org_k").await;
    // Before any fetch, a rotated-in key is picked up by the first (lazy) fetch.
    let rotated = SigningKey::generate("ins_key_2");
    s.jwks.publish(&rotated);
    let response = get_portal(
        &s.server,
        Some(&rotated.sign(&claims("user_k", Some("org_k")))),
        None,
    )
    .await;
    assert_eq!(response.status(), 302);
    assert_eq!(s.jwks.fetch_count(), 1);
    // An unknown kid right after: no second fetch within 30 s, so 401.
    let unknown = SigningKey::generate("ins_key_3");
    s.jwks.publish(&unknown);
    let (status, code, _) = error_of(
        get_portal(
            &s.server,
            Some(&unknown.sign(&claims("user_k", Some("org_k")))),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(s.jwks.fetch_count(), 1, "refetch is rate-limited");
}

#[tokio::test]
async fn a_stripe_500_is_retried_with_the_same_idempotency_key() {
    let db = sqlite().await;
    let s = setup(&db, &[StripeAnswer::Error(500)], &[]).await;
    add_member(&s.server, "org_r", "user_r").await;
    checkout(&s.server, "cus_r", "org_r").await;
    let response = get_portal(
        &s.server,
        Some(&key().sign(&claims("user_r", Some("org_r")))),
        None,
    )
    .await;
    assert_eq!(response.status(), 302);
    let received = s.stripe.received();
    assert_eq!(received.len(), 2);
    assert!(received[0].idempotency_key.is_some());
    assert_eq!(received[0].idempotency_key, received[1].idempotency_key);
}

#[tokio::test]
async fn stripe_failing_every_attempt_is_a_500_logged_with_its_request_id() {
    let db = sqlite().await;
    let script = [
        StripeAnswer::Error(503),
        StripeAnswer::Error(500),
        StripeAnswer::Error(502),
    ];
    let s = setup(&db, &script, &[]).await;
    add_member(&s.server, "org_x", "user_x").await;
    checkout(&s.server, "cus_x", "org_x").await;
    let (status, code, message) = error_of(
        get_portal(
            &s.server,
            Some(&key().sign(&claims("user_x", Some("org_x")))),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
    assert!(
        !message.contains("req_standin"),
        "internals stay out of the answer: {message}"
    );
    assert_eq!(
        s.stripe.received().len(),
        3,
        "the first attempt and two retries"
    );
    s.server
        .wait_for_log("the last request-id", |line| {
            line.contains("req_standin0002")
        })
        .await;
    assert!(!s.server.logs().join("\n").contains(STRIPE_KEY));
}

#[tokio::test]
async fn a_stripe_timeout_is_a_500() {
    let db = sqlite().await;
    let s = setup(&db, &[StripeAnswer::Hang(Duration::from_secs(5))], &[]).await;
    add_member(&s.server, "org_t", "user_t").await;
    checkout(&s.server, "cus_t", "org_t").await;
    let (status, code, _) = error_of(
        get_portal(
            &s.server,
            Some(&key().sign(&claims("user_t", Some("org_t")))),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
}

#[tokio::test]
async fn without_stripe_configuration_the_portal_says_billing_is_not_configured() {
    let db = sqlite().await;
    let jwks = JwksStandIn::start(&[key()]).await;
    let server = Server::start(
        &db.url,
        &[
            ("CLERK_JWKS_URL", jwks.url.as_str()),
            ("CLERK_ISSUER", ISSUER),
        ],
    )
    .await;
    let (status, code, message) = error_of(
        get_portal(
            &server,
            Some(&key().sign(&claims("user_n", Some("org_n")))),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
    assert!(message.contains("not configured"), "{message}");
    let warnings = server.logs().join("\n");
    assert_eq!(
        warnings.matches("billing is not configured").count(),
        1,
        "startup warns once"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_before_exiting() {
    let db = sqlite().await;
    let s = setup(&db, &[StripeAnswer::Hang(Duration::from_millis(800))], &[]).await;
    add_member(&s.server, "org_s", "user_s").await;
    checkout(&s.server, "cus_s", "org_s").await;
    let token = key().sign(&claims("user_s", Some("org_s")));
    let request = tokio::spawn({
        let url = s.server.url(PORTAL);
        async move { support::http().get(url).bearer_auth(token).send().await }
    });
    // Once the request is in flight (Stripe has it), SIGTERM.
    support::wait_for(
        "the request to reach Stripe",
        Duration::from_secs(20),
        || async { (!s.stripe.received().is_empty()).then_some(()) },
    )
    .await;
    let Setup { server, stripe, .. } = s;
    let status = server.terminate().await;
    let response = request
        .await
        .expect("task")
        .expect("the in-flight request is answered");
    assert_eq!(
        response.status(),
        302,
        "it completed (after Stripe's retry)"
    );
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(stripe.received().len(), 2);
}

async fn a_token_issued_in_the_second_of_the_removal_is_refused(db: TestDatabase) {
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_s", "user_s").await;
    checkout(&s.server, "cus_s", "org_s").await;
    let t = now();
    let mut same_second = claims("user_s", Some("org_s"));
    same_second["iat"] = json!(t);
    let token = key().sign(&same_second);
    // The deletion is delivered at `t` and carries an older `updated_at`: it happened at `t`.
    let body = support::membership_body("organizationMembership.deleted", "org_s", "user_s");
    let response = post_clerk(&s.server, CLERK_WEBHOOK_SECRET, "msg_remove_s", t, &body).await;
    assert_eq!(response.status(), 200);
    let (status, code, message) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "VALIDATION_ERROR"),
        "{message}"
    );
    assert!(
        s.stripe.received().is_empty(),
        "no session for a removed member"
    );
}

#[tokio::test]
async fn with_an_issuer_configured_a_token_without_iss_is_refused() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_i", "user_i").await;
    checkout(&s.server, "cus_i", "org_i").await;
    let mut without_iss = claims("user_i", Some("org_i"));
    without_iss.as_object_mut().expect("claims").remove("iss");
    let (status, code, _) =
        error_of(get_portal(&s.server, Some(&key().sign(&without_iss)), None).await).await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    // The same claims with the issuer: accepted.
    assert_eq!(
        get_portal(
            &s.server,
            Some(&key().sign(&claims("user_i", Some("org_i")))),
            None
        )
        .await
        .status(),
        302
    );
}

#[tokio::test]
async fn a_failed_jwks_fetch_does_not_block_the_next_one() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    add_member(&s.server, "org_j", "user_j").await;
    checkout(&s.server, "cus_j", "org_j").await;
    let token = key().sign(&claims("user_j", Some("org_j")));
    s.jwks.fail_next(1);
    let (status, code, _) = error_of(get_portal(&s.server, Some(&token), None).await).await;
    assert_eq!(
        (status, code.as_str()),
        (500, "INTERNAL_ERROR"),
        "the JWKS could not be fetched: authentication is unavailable"
    );
    // Clerk answers again: once the short back-off after the failure ends (a second, not the
    // 30 s of the refetch interval), the next request fetches and is served. Requests during
    // the back-off are refused without a fetch of their own, so however many the polling
    // makes, exactly one more fetch happens.
    support::wait_for(
        "a request served after the back-off",
        Duration::from_secs(10),
        || async {
            (get_portal(&s.server, Some(&token), None).await.status() == 302).then_some(())
        },
    )
    .await;
    assert_eq!(s.jwks.fetch_count(), 2);
    // After that success, the interval stands: an unknown kid is refused without a fetch,
    // and the keys already known keep verifying.
    let rotated = SigningKey::generate("ins_key_9");
    let unknown = rotated.sign(&claims("user_j", Some("org_j")));
    assert_eq!(
        error_of(get_portal(&s.server, Some(&unknown), None).await)
            .await
            .0,
        401
    );
    assert_eq!(s.jwks.fetch_count(), 2);
    assert_eq!(
        get_portal(&s.server, Some(&token), None).await.status(),
        302,
        "known keys still verify"
    );
}

/// At a cold start with Clerk's JWKS not answering, concurrent requests wait on one fetch and
/// share its failure: all are answered within the fetch's timeout (3 s), not one after another.
#[tokio::test]
async fn a_hanging_jwks_at_cold_start_answers_concurrent_requests_together() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    s.jwks.hang();
    let token = key().sign(&claims("user_cold", Some("org_cold")));
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (s.server.url(PORTAL), token.clone());
            tokio::spawn(async move {
                let response = support::http()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("GET the portal");
                (response.status().as_u16(), started.elapsed())
            })
        })
        .collect();
    for request in requests {
        let (status, after) = request.await.expect("the request task");
        assert_eq!(status, 500, "authentication is unavailable");
        assert!(
            after < Duration::from_secs(6),
            "answered after {after:?}: requests waited in line"
        );
    }
    assert_eq!(s.jwks.fetch_count(), 1, "one fetch for all of them");
}

/// While Clerk's JWKS fails, tokens with random `kid`s do not make a fetch each: after a
/// failure, keys not cached are refused at once until the back-off ends.
#[tokio::test]
async fn while_the_jwks_fails_random_kids_do_not_make_a_fetch_each() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    s.jwks.fail_next(usize::MAX);
    let started = std::time::Instant::now();
    for n in 0..40 {
        let stranger = SigningKey::generate(&format!("ins_random_{n}"));
        let token = stranger.sign(&claims("user_r", Some("org_r")));
        let (status, code, _) = error_of(get_portal(&s.server, Some(&token), None).await).await;
        assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
    }
    // The back-off starts at 1 s and doubles: in `elapsed`, at most 1 + log2(elapsed) fetches.
    let elapsed = started.elapsed().as_secs_f64();
    let most = 2 + elapsed.max(1.0).log2().ceil() as usize;
    assert!(
        s.jwks.fetch_count() <= most,
        "{} fetches for 40 requests in {elapsed:.1} s",
        s.jwks.fetch_count()
    );
}

/// With `CLERK_JWKS_URL` and no `CLERK_ISSUER`, tokens must carry the issuer the URL implies
/// (Clerk's Frontend API origin); a JWKS URL that implies none needs `CLERK_ISSUER`.
#[tokio::test]
async fn the_jwks_url_implies_the_issuer_when_none_is_set() {
    let db = sqlite().await;
    let jwks = JwksStandIn::start(&[key()]).await;
    let server = Server::start(&db.url, &[("CLERK_JWKS_URL", jwks.url.as_str())]).await;
    let mut foreign = claims("user_i", Some("org_i"));
    foreign["iss"] = json!("https://another-app.clerk.accounts.dev");
    let (status, code, _) =
        error_of(get_portal(&server, Some(&key().sign(&foreign)), None).await).await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    let mut own = claims("user_i", Some("org_i"));
    own["iss"] = json!(jwks.issuer);
    let (status, _, message) =
        error_of(get_portal(&server, Some(&key().sign(&own)), None).await).await;
    assert_eq!(status, 500, "past authentication: {message}");
    assert!(message.contains("not configured"), "{message}");

    let refused = support::run(
        &["serve"],
        &[
            ("DATABASE_URL", "sqlite::memory:"),
            ("CLERK_JWKS_URL", "https://api.clerk.com/v1/jwks"),
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("CLERK_ISSUER"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn head_creates_no_session_and_a_user_is_limited_per_minute() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[("STRIPE_SESSIONS_PER_MINUTE", "3")]).await;
    add_member(&s.server, "org_h", "user_h").await;
    checkout(&s.server, "cus_h", "org_h").await;
    let token = key().sign(&claims("user_h", Some("org_h")));

    let head = support::http()
        .head(s.server.url(PORTAL))
        .bearer_auth(&token)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 405);
    assert_eq!(head.headers()["allow"], "GET");
    assert!(s.stripe.received().is_empty(), "HEAD created a session");

    for _ in 0..3 {
        assert_eq!(
            get_portal(&s.server, Some(&token), None).await.status(),
            302
        );
    }
    let limited = get_portal(&s.server, Some(&token), None).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, code, _) = error_of(limited).await;
    assert_eq!((status, code.as_str()), (429, "TOO_MANY_REQUESTS"));
    assert_eq!(
        s.stripe.received().len(),
        3,
        "the refused request cost no Stripe call"
    );
}

#[tokio::test]
async fn error_answers_are_not_cached_nor_sniffed() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    let unauthenticated = get_portal(&s.server, None, None).await;
    let webhook_refused = support::post_stripe(&s.server, b"{}", None).await;
    let unknown_path = support::http()
        .get(s.server.url("/api/v1/nowhere"))
        .send()
        .await
        .expect("GET");
    for response in [unauthenticated, webhook_refused, unknown_path] {
        let status = response.status();
        assert!(status.is_client_error(), "{status}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{status}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{status}"
        );
    }
}

/// The requests a browser sends for a `fetch` with credentials from a page on another origin:
/// the preflight (`OPTIONS` with `Access-Control-Request-*`), then the call with `Origin`.
#[tokio::test]
async fn a_web_app_on_an_allowed_origin_passes_the_preflight_and_reads_the_answer() {
    let db = sqlite().await;
    let s = setup(
        &db,
        &[],
        &[(
            "CORS_ALLOWED_ORIGINS",
            "https://app.example.com,http://localhost:5173",
        )],
    )
    .await;
    add_member(&s.server, "org_o", "user_o").await;
    checkout(&s.server, "cus_o", "org_o").await;
    let preflight = |origin: &'static str| {
        support::http()
            .request(reqwest::Method::OPTIONS, s.server.url(PORTAL))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("OPTIONS");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_varies_on_origin(&allowed);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("text")
            .contains("GET")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .expect("text")
            .to_ascii_lowercase()
            .contains("authorization")
    );
    let refused = preflight("https://evil.example.net")
        .await
        .expect("OPTIONS");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "another origin is not allowed"
    );
    let (status, code, _) = error_of(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "FORBIDDEN"),
        "in the documented error format"
    );

    let token = key().sign(&claims("user_o", Some("org_o")));
    let call_from = |origin: &'static str| {
        support::http()
            .get(s.server.url(PORTAL))
            .bearer_auth(&token)
            .header("accept", "application/json")
            .header("origin", origin)
            .send()
    };
    let call = call_from("http://localhost:5173").await.expect("GET");
    assert_eq!(call.status(), 200);
    assert_eq!(
        call.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(call.headers()["access-control-allow-credentials"], "true");
    assert_varies_on_origin(&call);

    // The public, cacheable plans page too: a shared cache keeps one answer per origin.
    let plans = support::http()
        .get(s.server.url("/api/v1/operations/payment/plans"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("GET the plans");
    assert_eq!(plans.status(), 200);
    assert_varies_on_origin(&plans);

    // The same call from another origin never reaches the operation: no session is created.
    let sessions = s.stripe.received().len();
    let foreign = call_from("https://evil.example.net").await.expect("GET");
    assert_varies_on_origin(&foreign);
    let (status, code, _) = error_of(foreign).await;
    assert_eq!((status, code.as_str()), (403, "FORBIDDEN"));
    assert_eq!(s.stripe.received().len(), sessions);
}

/// The answer says that its headers depend on the request's `Origin`.
fn assert_varies_on_origin(response: &reqwest::Response) {
    let vary: Vec<&str> = response
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    assert!(
        vary.iter().any(|name| name.eq_ignore_ascii_case("origin")),
        "{} {}: Vary {vary:?}",
        response.status(),
        response.url()
    );
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cors() {
    let db = sqlite().await;
    let s = setup(&db, &[], &[]).await;
    let preflight = support::http()
        .request(reqwest::Method::OPTIONS, s.server.url(PORTAL))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("OPTIONS");
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
