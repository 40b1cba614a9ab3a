//! Spec-driven API testing: schemathesis (from PyPI) generates requests from the running
//! server's own `/api/v1/openapi.json`, valid and invalid, with and without credentials, and
//! checks every answer against the spec: documented status, content type, headers and
//! schema, no 5xx, invalid input refused, authentication not ignored.
//!
//! `./scripts/test` installs schemathesis and sets `BILLING_SYNC_TEST_REQUIRE_SCHEMATHESIS=1`;
//! without it, and without schemathesis on the PATH, this test says SKIPPED and passes.

use crate::support;

use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::json;
use support::standins::{JwksStandIn, SigningKey, StripeStandIn};
use support::{Server, now};

const STRIPE_WEBHOOK_SECRET: &str = "whsec_schemathesis_stripe";
const CLERK_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Checkout refuses a schema-valid price id with 400 `VALIDATION_ERROR` unless the synced
/// catalog sells it: that depends on state no schema can express, so 400 is an accepted answer
/// to valid data there (every other check still applies). Likewise a schema-valid consume of
/// more credits than the organization has, or a key used before with another body, is 409;
/// and a grant whose schema-valid `expires_at` has already passed is 400 (validity that
/// depends on the clock, which no schema can express).
///
/// Any warning fails the run, so a passing run prints none, but two: `validation_mismatch` (the
/// valid data of an operation mostly refused), which is checkout's state-dependent 400 again,
/// and which the `positive_data_acceptance` check already turns into a failure for every other
/// operation; and `missing_test_data` (an operation mostly answering 404): a capture or release
/// names a reservation by the id `reserve` answered, which a generated request cannot know, so
/// they answer `RESERVATION_NOT_FOUND` as documented (their other answers are
/// `tests/it/reservations.rs`'). (This schemathesis ignores `warnings` set for one operation.)
const CONFIG: &str = r#"
[warnings]
fail-on = true
display = ["missing_auth", "base_url_mismatch", "missing_deserializer",
  "unused_openapi_auth", "unsupported_regex", "method_not_allowed", "unmatched_filter",
  "unresolvable_reference", "low_valid_rate", "rate_limited", "dictionary_mismatch"]

[[operations]]
include-operation-id = ["checkout", "create_checkout_session"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "409", "429"]

[[operations]]
include-operation-id = ["consumeCredits"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "409"]

[[operations]]
include-operation-id = ["reserveCredits"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "409"]

[[operations]]
include-operation-id = ["captureCredits", "releaseCredits"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

[[operations]]
include-operation-id = ["grantCredits"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]
"#;

billing_sync_testkit::tool_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_answer_conforms_to_the_served_spec() {
        let _load = support::one_load_at_a_time().await;
        let Some(schemathesis) =
            support::tool("schemathesis", "BILLING_SYNC_TEST_REQUIRE_SCHEMATHESIS")
        else {
            return;
        };
        let db = TestDatabase::create(Backend::Sqlite)
            .await
            .expect("SQLite is always available");
        let key = SigningKey::generate("ins_schemathesis");
        let jwks = JwksStandIn::start(&[&key]).await;
        let stripe = StripeStandIn::start(&[]).await;
        // One credential for every operation: the session token is also the app backend's API key
        // (schemathesis sends one `Authorization` header).
        let token = key.sign(
            &json!({"sub": "user_st", "iat": now() - 10, "nbf": now() - 10,
            "exp": now() + 900, "iss": jwks.issuer, "sid": "sess_st",
            "o": {"id": "org_st", "rol": "admin"}}),
        );
        let server = Server::start(
            &db.url,
            &[
                ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
                ("CLERK_WEBHOOK_SECRET", CLERK_WEBHOOK_SECRET),
                ("STRIPE_SECRET_KEY", "sk_test_schemathesis"),
                ("STRIPE_API_BASE", stripe.base_url.as_str()),
                ("CLERK_JWKS_URL", jwks.url.as_str()),
                ("APP_BASE_URL", "https://app.example.com"),
                ("BILLING_API_KEYS", token.as_str()),
                (
                    "STRIPE_CLIENT_REFERENCE_SECRET",
                    "a-schemathesis-client-reference-secret",
                ),
            ],
        )
        .await;

        // A member of an organization with a Stripe customer: valid credentials reach the 302.
        support::add_member(&server, CLERK_WEBHOOK_SECRET, "org_st", "user_st").await;
        support::checkout(&server, STRIPE_WEBHOOK_SECRET, "cus_st", "org_st").await;
        // A catalog, so the plans have content and a checkout for its one-time price can succeed.
        for (n, (event_type, object)) in [
            (
                "product.created",
                json!({"id": "prod_st", "object": "product", "active": true, "name": "Credits",
                       "marketing_features": [{"name": "Fast"}], "livemode": false}),
            ),
            (
                "price.created",
                json!({"id": "price_st", "object": "price", "active": true, "currency": "eur",
                       "unit_amount": 1000, "product": "prod_st", "type": "one_time",
                       "recurring": null, "livemode": false}),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let body = serde_json::to_vec(&json!({"id": format!("evt_st_catalog_{n}"),
                "object": "event", "type": event_type, "created": now(), "livemode": false,
                "data": {"object": object}}))
            .expect("JSON");
            let signature = support::stripe_signature(STRIPE_WEBHOOK_SECRET, now(), &body);
            let response = support::post_stripe(&server, &body, Some(signature)).await;
            assert_eq!(response.status(), 200, "{event_type}");
        }

        let report = tempfile::tempdir().expect("a report directory");
        let config = report.path().join("schemathesis.toml");
        std::fs::write(&config, CONFIG).expect("write the schemathesis configuration");
        let output = tokio::process::Command::new(schemathesis)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(server.url("/api/v1/openapi.json"))
            .args(["--checks", "all", "--max-redirects", "0", "--workers", "1"])
            .args(["--max-examples", "40", "--seed", "20261122", "--no-color"])
            .args(["--generation-database", "none"])
            .arg("--header")
            .arg(format!("Authorization: Bearer {token}"))
            .arg("--report-dir")
            .arg(report.path())
            // Its caches go to the temporary directory, not the source tree.
            .current_dir(report.path())
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{stdout}");
        assert!(
            output.status.success(),
            "schemathesis found answers that do not conform to the spec:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !stripe.received().is_empty(),
            "schemathesis reached the 302 path with valid credentials"
        );
    }
}
