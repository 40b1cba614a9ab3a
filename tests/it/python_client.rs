//! The committed OpenAPI document through a mainstream generator of another ecosystem:
//! openapi-python-client generates a Python client without a warning, every module of it
//! imports, and its calls work against the real server (the catalog, a checkout as JSON, the
//! same checkout as the HTML form's post, and a documented error).
//!
//! `./scripts/test` installs openapi-python-client into its virtual environment and sets
//! `BILLING_SYNC_TEST_REQUIRE_PYTHON_CLIENT=1`; without it, and without the generator on the
//! PATH, this test says SKIPPED and passes.

use std::path::Path;

use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::Value;

use crate::plans::{member, sync_catalog, token};
use crate::support;
use support::operations::setup;

/// Calls the generated client makes, printed as one JSON object.
const SCRIPT: &str = r#"
import importlib, json, pkgutil, sys
import billing_sync_client
from billing_sync_client import AuthenticatedClient, Client
from billing_sync_client.api.payment import checkout, create_checkout_session, list_plans
from billing_sync_client.models import CheckoutRequest, ErrorBody

base_url, token = sys.argv[1], sys.argv[2]
imported = [
    module.name
    for module in pkgutil.walk_packages(billing_sync_client.__path__, "billing_sync_client.")
    if importlib.import_module(module.name)
]
plans = list_plans.sync(client=Client(base_url=base_url))
member = AuthenticatedClient(base_url=base_url, token=token)
session = create_checkout_session.sync(
    client=member, body=CheckoutRequest(price_id="price_team_monthly", quantity=2))
form = checkout.sync_detailed(client=member, body=CheckoutRequest(price_id="price_credits"))
refused = create_checkout_session.sync(client=member, body=CheckoutRequest(price_id="price_nope"))
print(json.dumps({
    "imported": imported,
    "products": [product.name for product in plans.products],
    "session_url": session.url,
    "form_status": form.status_code,
    "form_location": form.headers.get("location"),
    "refused": refused.code if isinstance(refused, ErrorBody) else repr(refused),
}))
"#;

billing_sync_testkit::tool_test! {
    #[tokio::test]
    async fn the_generated_python_client_imports_and_calls_every_kind_of_operation() {
        let Some(generator) = support::tool(
            "openapi-python-client",
            "BILLING_SYNC_TEST_REQUIRE_PYTHON_CLIENT",
        ) else {
            return;
        };
        let workdir = tempfile::tempdir().expect("a directory for the generated client");
        let config = workdir.path().join("config.yaml");
        // No formatting hooks: the generated code is imported, not read.
        std::fs::write(&config, "post_hooks: []\n").expect("write the generator's configuration");
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
        let generated = tokio::process::Command::new(&generator)
            .args(["generate", "--meta", "none", "--path"])
            .arg(&spec)
            .arg("--config")
            .arg(&config)
            .current_dir(workdir.path())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run openapi-python-client");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&generated.stdout),
            String::from_utf8_lossy(&generated.stderr)
        );
        assert!(generated.status.success(), "{said}");
        assert!(
            !said.to_ascii_lowercase().contains("warning"),
            "the generator took the document cleanly:\n{said}"
        );

        let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
        let s = setup(&db, &[], &[]).await;
        sync_catalog(&s.server, support::now() - 3_600).await;
        member(&s.server, "org_py", "user_py", "org:admin").await;
        let python = generator.with_file_name("python3");
        let run = tokio::process::Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(s.server.base_url.trim_end_matches('/'))
            .arg(token("user_py", Some(("org_py", "admin"))))
            .current_dir(workdir.path())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run the generated client");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let answers: Value = serde_json::from_slice(&run.stdout).expect("the script's JSON");

        let imported = answers["imported"].as_array().expect("modules");
        for module in [
            "billing_sync_client.api.payment.checkout",
            "billing_sync_client.api.payment.create_checkout_session",
            "billing_sync_client.api.credits_.consume_credits",
        ] {
            assert!(
                imported.iter().any(|name| name == module),
                "{module} in {imported:?}"
            );
        }
        assert_eq!(answers["products"][0], "Credits", "{answers}");
        assert!(
            answers["session_url"]
                .as_str()
                .is_some_and(|url| url.starts_with("https://checkout.stripe.com/")),
            "{answers}"
        );
        assert_eq!(answers["form_status"], 303, "{answers}");
        assert!(
            answers["form_location"]
                .as_str()
                .is_some_and(|url| url.starts_with("https://checkout.stripe.com/")),
            "{answers}"
        );
        assert_eq!(answers["refused"], "VALIDATION_ERROR", "{answers}");

        // What the client sent: JSON for the call, a form for the form's post.
        let sent = s.stripe.checkout_sessions();
        assert_eq!(sent.len(), 2, "two sessions: {sent:?}");
        assert_eq!(
            sent[0].field("line_items[0][price]"),
            Some("price_team_monthly")
        );
        assert_eq!(sent[0].field("line_items[0][quantity]"), Some("2"));
        assert_eq!(sent[1].field("line_items[0][price]"), Some("price_credits"));
    }
}
