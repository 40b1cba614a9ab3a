//! End-to-end tests of the foundation: the real binary, its configuration, probes, migrations
//! and shutdown, on SQLite and PostgreSQL.

use crate::support;

use billing_sync_testkit::{Backend, TestDatabase, each_backend};
use support::{Server, http, run, status_and_json};

each_backend!(
    serve_migrates_and_answers_both_probes,
    sigterm_stops_the_server_with_status_zero,
    migrate_status_and_up_report_each_migration,
);

async fn serve_migrates_and_answers_both_probes(db: TestDatabase) {
    let server = Server::start(&db.url, &[]).await;
    let client = http();
    for path in ["/healthz", "/readyz"] {
        let response = client.get(server.url(path)).send().await.expect("probe");
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.expect("JSON body");
        assert_eq!(body["status"], "ok", "{path}");
    }
    let status = run(&["migrate", "status"], &[("DATABASE_URL", &db.url)]).await;
    assert!(status.status.success(), "{}", status.stderr);
    assert!(status.stdout.contains("applied"), "{}", status.stdout);
    assert!(!status.stdout.contains("pending"), "{}", status.stdout);
}

async fn sigterm_stops_the_server_with_status_zero(db: TestDatabase) {
    let server = Server::start(&db.url, &[]).await;
    let status = server.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

async fn migrate_status_and_up_report_each_migration(db: TestDatabase) {
    let env = [("DATABASE_URL", db.url.as_str())];
    let before = run(&["migrate", "status"], &env).await;
    if db.url.starts_with("sqlite:") {
        // No file yet: status creates none, and says what to do.
        assert!(
            before.stderr.contains("no database at") && !before.status.success(),
            "{}",
            before.stderr
        );
    } else {
        assert!(before.status.success(), "{}", before.stderr);
        assert!(before.stdout.starts_with("pending"), "{}", before.stdout);
        // Reading the status wrote nothing (sea-orm's own status call creates its table).
        use billing_sync_store::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
        let connection = Database::connect(&db.url).await.expect("connect");
        let tables = connection
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = current_schema()",
            ))
            .await
            .expect("list the tables");
        assert!(
            tables.is_empty(),
            "migrate status created {} table(s)",
            tables.len()
        );
    }
    let up = run(&["migrate", "up"], &env).await;
    assert!(up.status.success(), "{}", up.stderr);
    let after = run(&["migrate", "status"], &env).await;
    assert!(after.stdout.starts_with("applied"), "{}", after.stdout);
}

billing_sync_testkit::postgres_test! {
    #[tokio::test]
    async fn readyz_answers_503_with_a_reason_when_postgres_goes_away() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let server = Server::start(&db.url, &[]).await;
        let client = http();
        assert_eq!(
            client
                .get(server.url("/readyz"))
                .send()
                .await
                .expect("probe")
                .status(),
            200
        );

        let database = db
            .url
            .rsplit('/')
            .next()
            .expect("a database name")
            .to_owned();
        let admin = std::env::var(billing_sync_testkit::POSTGRES_URL_VAR).expect("admin URL");
        let admin = billing_sync_store::Store::connect(&admin)
            .await
            .expect("admin connection");
        use billing_sync_store::sea_orm::ConnectionTrait;
        admin
            .connection()
            .execute_unprepared(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
            .await
            .expect("drop the server's database under it");

        let response = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("probe");
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.expect("JSON reason");
        assert_eq!(body["status"], "unavailable");
        // Public: it says what is wrong, not where the database is (the log has the detail).
        assert_eq!(body["reason"], "database unavailable", "{body}");
        let port = url::Url::parse(&db.url)
            .expect("a database URL")
            .port()
            .expect("a port")
            .to_string();
        assert!(!body.to_string().contains(&port), "{body}");
        assert_eq!(
            client
                .get(server.url("/healthz"))
                .send()
                .await
                .expect("probe")
                .status(),
            200,
            "liveness does not depend on the database"
        );
    }
}

#[tokio::test]
async fn an_unreachable_database_fails_startup_naming_the_host_not_the_password() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let url = "postgres://billing:sup3rs3cret@127.0.0.1:1/billing";
    let finished = run(
        &["serve"],
        &[("DATABASE_URL", url), ("LISTEN_ADDR", "127.0.0.1:0")],
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    let last = finished.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("127.0.0.1:1"), "{last}");
    assert!(
        !finished.stderr.contains("sup3rs3cret"),
        "{}",
        finished.stderr
    );
}

/// The README's "try it without accounts" path: `scripts/send-test-event` signs a customer event
/// with a local secret, and the server records it as processed; the same body again is a
/// duplicate, a byte changed after signing is refused, and a refusal is the script's failure.
/// It also sends a sample catalog the plans page lists, a sample of a type, an event from a file.
#[tokio::test]
async fn the_readme_test_event_script_gets_a_first_processed_event() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = format!("sqlite://{}", dir.path().join("try.db").display());
    let server = Server::start(&url, &[("STRIPE_WEBHOOK_SECRET", "whsec_local_try")]).await;
    let send = |args: &[&str], secret: &str| {
        tokio::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/send-test-event"
        ))
        .args(args)
        .arg(&server.base_url)
        .env("STRIPE_WEBHOOK_SECRET", secret)
        .output()
    };

    let twice = send(&["--repeat", "2"], "whsec_local_try")
        .await
        .expect("run scripts/send-test-event");
    let stdout = String::from_utf8_lossy(&twice.stdout);
    assert!(
        twice.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&twice.stderr)
    );
    let answers: Vec<&str> = stdout.lines().collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    assert!(answers[0].contains(r#""status":"processed""#), "{stdout}");
    assert!(answers[1].contains(r#""status":"duplicate""#), "{stdout}");

    for (args, secret, code) in [
        (&["--tamper"][..], "whsec_local_try", "SIGNATURE_INVALID"),
        (&[][..], "whsec_not_the_servers", "SIGNATURE_INVALID"),
    ] {
        let refused = send(args, secret)
            .await
            .expect("run scripts/send-test-event");
        let stdout = String::from_utf8_lossy(&refused.stdout);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains(code), "{args:?}: {stdout}");
        assert!(
            stderr.contains("the server answered 400"),
            "{args:?}: {stderr}"
        );
    }

    // A sample catalog through the same signed ingestion, which the public plans page then
    // lists; a sample of another type; an event from a file; a type it has no sample of.
    let catalog = send(&["--catalog"], "whsec_local_try")
        .await
        .expect("run scripts/send-test-event --catalog");
    let stdout = String::from_utf8_lossy(&catalog.stdout);
    assert!(catalog.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches(r#""status":"processed""#).count(),
        4,
        "{stdout}"
    );
    let plans = server.get_text("/api/v1/operations/payment/plans").await;
    for name in [
        "\"Pro\"",
        "\"100 credits\"",
        "price_try_pro_monthly",
        "price_try_credits",
    ] {
        assert!(plans.contains(name), "{name} in {plans}");
    }
    let bought = send(&["--type", "checkout.session.completed"], "whsec_local_try")
        .await
        .expect("run scripts/send-test-event --type");
    let stdout = String::from_utf8_lossy(&bought.stdout);
    assert!(
        bought.status.success() && stdout.contains(r#""status":"processed""#),
        "{stdout}"
    );
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        r#"{"id":"evt_from_a_file","object":"event","type":"customer.updated","created":1796500000,"livemode":false,"data":{"object":{"id":"cus_try","object":"customer","metadata":{"organization_id":"org_try"}}}}"#,
    )
    .expect("write the event");
    let path = file.display().to_string();
    let from_file = send(&["--file", &path], "whsec_local_try")
        .await
        .expect("run scripts/send-test-event --file");
    let stdout = String::from_utf8_lossy(&from_file.stdout);
    assert!(
        stdout.contains(r#""event_id":"evt_from_a_file""#),
        "{stdout}"
    );
    let unknown = send(&["--type", "invoice.nothing"], "whsec_local_try")
        .await
        .expect("run scripts/send-test-event --type");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no sample of type"));
}

/// The README's local tour: with the public key of `scripts/dev-session` as `CLERK_JWT_KEY`,
/// after `scripts/send-test-event --tour`, the sample member's session token shows the
/// organization's billing state (the Pro plan, its features, the credits bought), its credits
/// statement, and reaches checkout; a token of another key pair is refused.
#[tokio::test]
async fn the_local_tour_shows_a_sample_member_their_billing_without_accounts() {
    let dir = tempfile::tempdir().expect("a directory");
    let script = |name: &str| {
        let mut command = tokio::process::Command::new(format!(
            "{}/../../scripts/{name}",
            env!("CARGO_MANIFEST_DIR")
        ));
        command.env("DEV_SESSION_DIR", dir.path().join("pair"));
        command
    };
    let output = |finished: std::process::Output| {
        let stdout = String::from_utf8_lossy(&finished.stdout).into_owned();
        assert!(
            finished.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&finished.stderr)
        );
        stdout
    };
    let public_key = output(
        script("dev-session")
            .arg("public-key")
            .output()
            .await
            .expect("run scripts/dev-session public-key"),
    );
    let url = format!("sqlite://{}", dir.path().join("tour.db").display());
    let server = Server::start(
        &url,
        &[
            ("STRIPE_WEBHOOK_SECRET", "whsec_local_try"),
            ("CLERK_JWT_KEY", &public_key),
        ],
    )
    .await;
    let tour = output(
        script("send-test-event")
            .args(["--tour", &server.base_url])
            .env("STRIPE_WEBHOOK_SECRET", "whsec_local_try")
            .output()
            .await
            .expect("run scripts/send-test-event --tour"),
    );
    assert_eq!(tour.matches(r#""status":"processed""#).count(), 8, "{tour}");
    let token = output(
        script("dev-session")
            .arg("token")
            .output()
            .await
            .expect("run scripts/dev-session token"),
    );
    let bearer = format!("Bearer {}", token.trim());
    let get = |path: &str, authorization: &str| {
        http()
            .get(server.url(path))
            .header("authorization", authorization)
            .send()
    };

    let (status, state) = status_and_json(
        get("/api/v1/operations/payment/subscription", &bearer)
            .await
            .expect("the billing state"),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["organization_id"], "org_try", "{state}");
    assert_eq!(state["active"], true, "{state}");
    assert_eq!(
        state["entitlements"],
        serde_json::json!(["priority-support", "unlimited-projects"]),
        "{state}"
    );
    assert_eq!(
        state["subscriptions"][0]["items"][0]["product_name"], "Pro",
        "{state}"
    );
    assert_eq!(state["credits_balance"], 100, "{state}");
    let (status, statement) = status_and_json(
        get("/api/v1/operations/payment/credits", &bearer)
            .await
            .expect("the credits statement"),
    )
    .await;
    assert_eq!(
        (status, &statement["balance"]),
        (200, &100.into()),
        "{statement}"
    );

    // Checkout is reached as the member (no Stripe key here: the server says so).
    let response = http()
        .post(server.url("/api/v1/operations/payment/checkout-session"))
        .header("authorization", &bearer)
        .json(&serde_json::json!({"price_id": "price_try_credits"}))
        .send()
        .await
        .expect("a checkout");
    let (status, refusal) = status_and_json(response).await;
    assert_eq!(
        (status, refusal["code"].as_str()),
        (500, Some("INTERNAL_ERROR")),
        "{refusal}"
    );
    server
        .wait_for_log("checkout not configured", |line| {
            line.contains("checkout is not configured: set STRIPE_SECRET_KEY and APP_BASE_URL")
        })
        .await;

    // Another pair's token (a newcomer's folder deleted, say) is verified and refused.
    let other = output(
        script("dev-session")
            .arg("token")
            .env("DEV_SESSION_DIR", dir.path().join("another pair"))
            .output()
            .await
            .expect("run scripts/dev-session token"),
    );
    let response = get(
        "/api/v1/operations/payment/subscription",
        &format!("Bearer {}", other.trim()),
    )
    .await
    .expect("the billing state");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn text_logs_into_a_pipe_carry_no_colour_codes() {
    // The test captures standard error through a pipe, as journald or `docker logs` would.
    let url = "postgres://billing@127.0.0.1:1/billing";
    let finished = run(
        &["serve"],
        &[
            ("DATABASE_URL", url),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    assert!(
        finished.stderr.lines().count() >= 2,
        "log lines were written: {}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains('\u{1b}'),
        "ANSI escape codes in piped logs: {:?}",
        finished.stderr
    );
}

#[tokio::test]
async fn each_bad_configuration_value_exits_2_with_one_line_naming_it() {
    let cases: [(&str, &str, &[&str]); 16] = [
        (
            "CORS_ALLOWED_ORIGINS",
            "https://app.example.com/",
            &["serve"],
        ),
        ("WEBHOOK_BODY_BYTES_IN_FLIGHT", "1000", &["serve"]),
        ("STRIPE_SESSIONS_PER_MINUTE", "0", &["serve"]),
        ("PORTAL_SESSIONS_PER_MINUTE", "0", &["serve"]),
        ("STRIPE_REFETCH_OBJECTS", "true", &["serve"]),
        ("STRIPE_WEBHOOK_SECRET", "not-a-whsec-s3cret", &["serve"]),
        ("APP_BASE_URL", "app.example.com", &["serve"]),
        ("LISTEN_ADDR", "localhost", &["serve"]),
        ("LOG_FORMAT", "xml", &["serve"]),
        ("WORKER_THREADS", "0", &["serve"]),
        ("RUST_LOG", "info,[bad", &["serve"]),
        // A misspelt level parsed as a target and silenced every log line.
        ("RUST_LOG", "inof", &["serve"]),
        // A publishable key was accepted, and every session creation then failed.
        ("STRIPE_SECRET_KEY", "pk_test_s3cret", &["serve"]),
        ("STRIPE_SECRET_KEY", "whsec_s3cret", &["serve"]),
        (
            "DATABASE_URL",
            "mysql://root:hunter2@db/x",
            &["migrate", "status"],
        ),
        ("DATABASE_URL", "not a url with pa55word", &["serve"]),
    ];
    for (variable, value, args) in cases {
        let finished = run(args, &[(variable, value)]).await;
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{variable}={value}: {}",
            finished.stderr
        );
        let lines: Vec<&str> = finished.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{variable}: {lines:?}");
        assert!(lines[0].contains(variable), "{variable}: {}", lines[0]);
        for secret in ["hunter2", "pa55word", "s3cret"] {
            assert!(
                !lines[0].contains(secret),
                "{variable} echoed a secret: {}",
                lines[0]
            );
        }
    }
}

#[tokio::test]
async fn worker_threads_sets_how_many_threads_run_the_service() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("a database");
    let server = Server::start(&db.url, &[("WORKER_THREADS", "3")]).await;
    let listening = server
        .wait_for_log("the listening line", |line| line.contains("\"listening\""))
        .await;
    let event: serde_json::Value = serde_json::from_str(&listening).expect("a JSON line");
    assert_eq!(event["worker_threads"], 3, "{listening}");
}

#[tokio::test]
async fn help_and_version_are_readable() {
    let help = run(&["--help"], &[]).await;
    assert!(help.status.success());
    for word in ["serve", "migrate", "DATABASE_URL", "LOG_FORMAT"] {
        assert!(
            help.stdout.contains(word),
            "--help lacks {word}:\n{}",
            help.stdout
        );
    }
    let version = run(&["--version"], &[]).await;
    assert_eq!(
        version.stdout.trim(),
        format!("billing-sync {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_generated_and_served_one() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/openapi.json"
    ))
    .expect("openapi/openapi.json is committed");
    let generated = run(&["openapi"], &[]).await;
    assert!(generated.status.success(), "{}", generated.stderr);
    assert!(
        generated.stdout == committed,
        "openapi/openapi.json is stale: regenerate it with \
         `cargo run -- openapi > openapi/openapi.json` and commit it"
    );

    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let server = Server::start(&db.url, &[]).await;
    let served: serde_json::Value =
        serde_json::from_str(&server.get_text("/api/v1/openapi.json").await).expect("JSON spec");
    let committed: serde_json::Value = serde_json::from_str(&committed).expect("JSON");
    assert_eq!(served, committed);
    let docs = http().get(server.url("/docs")).send().await.expect("docs");
    assert_eq!(docs.status(), 200);
}

#[tokio::test]
async fn header_names_in_the_openapi_document_have_their_canonical_case() {
    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/openapi.json"
    ))
    .expect("openapi/openapi.json is committed");
    for canonical in ["\"Location\"", "\"Cache-Control\"", "\"WWW-Authenticate\""] {
        assert!(document.contains(canonical), "{canonical} missing");
        assert!(
            !document.contains(&canonical.to_ascii_uppercase()),
            "{canonical} upper-cased"
        );
    }
}

billing_sync_testkit::tool_test! {
    #[tokio::test]
    async fn the_committed_openapi_document_passes_an_independent_validator() {
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
        let output = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator", spec])
            .output();
        let require = "BILLING_SYNC_TEST_REQUIRE_OPENAPI_VALIDATOR";
        match output {
            Ok(output) if output.status.success() => {
                assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
            }
            Ok(output) if String::from_utf8_lossy(&output.stderr).contains("No module named") => {
                support::missing("openapi-spec-validator: python3 cannot import it", require);
            }
            Ok(output) => panic!(
                "openapi/openapi.json does not validate:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => support::missing(&format!("python3 ({err})"), require),
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_that_its_log_lines_carry_too() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let server = Server::start(&db.url, &[]).await;
    let client = http();
    let kept = client
        .get(server.url("/healthz"))
        .header("x-request-id", "req-from-the-caller-42")
        .send()
        .await
        .expect("probe");
    assert_eq!(kept.headers()["x-request-id"], "req-from-the-caller-42");
    let generated = client
        .get(server.url("/no-such-route"))
        .send()
        .await
        .expect("404");
    assert_eq!(generated.status(), 404);
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let replaced = client
        .get(server.url("/healthz"))
        .header("x-request-id", "has spaces in it")
        .send()
        .await
        .expect("probe");
    assert_ne!(replaced.headers()["x-request-id"], "has spaces in it");

    // The access log line is written as the response leaves.
    let line = server
        .wait_for_log("the access log line", |l| {
            l.contains("request completed") && l.contains("req-from-the-caller-42")
        })
        .await;
    let event: serde_json::Value =
        serde_json::from_str(&line).expect("LOG_FORMAT=json lines are JSON");
    assert_eq!(
        event["span"]["request_id"], "req-from-the-caller-42",
        "{line}"
    );
    assert_eq!(event["status"], 200, "{line}");
}

#[tokio::test]
async fn events_prune_takes_an_age_and_refuses_a_bare_number() {
    let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let env = [("DATABASE_URL", db.url.as_str())];
    assert!(run(&["migrate", "up"], &env).await.status.success());
    let pruned = run(&["events", "prune", "--older-than", "90d"], &env).await;
    assert!(pruned.status.success(), "{}", pruned.stderr);
    assert!(pruned.stdout.starts_with("pruned 0 "), "{}", pruned.stdout);
    let bad = run(&["events", "prune", "--older-than", "90"], &env).await;
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--older-than"), "{}", bad.stderr);
}

/// The deployment files parse, say what the docs promise, and the systemd unit verifies.
/// (No container engine or Kubernetes API runs here: images and manifests are not applied.)
#[tokio::test]
async fn the_deploy_files_parse_and_the_systemd_unit_verifies() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let check = format!(
        r#"
import glob, yaml
docs = {{}}
for path in ["{deploy}/compose.yaml"] + sorted(glob.glob("{deploy}/kubernetes/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        docs[doc.get("kind", "compose")] = doc
deployment = docs["Deployment"]["spec"]
container = deployment["template"]["spec"]["containers"][0]
assert deployment["replicas"] == 2
assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert container["args"] == ["serve", "--no-migrate"]
assert docs["Job"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", "up"]
assert {{"Service", "Secret", "ConfigMap", "compose"}} <= set(docs)
assert "postgres" in docs["compose"]["services"]
print("OK")
"#
    );
    let python = std::process::Command::new("python3")
        .args(["-c", &check])
        .output();
    match python {
        Ok(output) if output.status.success() => {}
        Ok(output)
            if String::from_utf8_lossy(&output.stderr).contains("No module named 'yaml'") =>
        {
            eprintln!("SKIPPED YAML checks: PyYAML is not installed (./scripts/test installs it)");
        }
        Ok(output) => panic!("deploy YAML: {}", String::from_utf8_lossy(&output.stderr)),
        Err(err) => eprintln!("SKIPPED YAML checks: no python3: {err}"),
    }

    let unit = std::fs::read_to_string(format!("{deploy}/systemd/billing-sync.service"))
        .expect("the systemd unit");
    for hardening in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "missing {hardening}");
    }
    // systemd-analyze checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("billing-sync.service");
    std::fs::write(
        &local,
        unit.replace("/usr/local/bin/billing-sync", support::binary())
            .replace("EnvironmentFile=/", "EnvironmentFile=-/"),
    )
    .expect("write the unit");
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
    {
        Ok(output) => assert!(
            output.status.success() && output.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => eprintln!("SKIPPED systemd-analyze: not installed: {err}"),
    }
}

/// `billing-sync openapi | head`: the reader has gone before the command writes (a pipe whose
/// read end is closed, so every write fails with EPIPE, whatever the timing). The command ends
/// quietly with status 0, as a Unix tool does, where `println!` panicked ("failed printing to
/// stdout: Broken pipe") and exited 101.
#[tokio::test]
async fn a_reader_that_goes_away_ends_the_output_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    // Spawned, not `output()`: that would replace the closed pipe with one of its own.
    let output = support::command(&[])
        .arg("openapi")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn billing-sync openapi")
        .wait_with_output()
        .await
        .expect("wait for billing-sync openapi");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A command that only uses a database, pointed at an SQLite file that does not exist (run from
/// another directory, say), says so in one line and creates nothing: it created an empty file
/// and then failed with "no such table".
#[tokio::test]
async fn a_read_only_command_never_creates_a_missing_database() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("missing.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        &["events", "list"][..],
        &["migrate", "status"],
        &["events", "replay", "--failed"],
    ] {
        let finished = run(args, &[("DATABASE_URL", url.as_str())]).await;
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{args:?}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(&format!(
                "no database at {}; run `billing-sync migrate up` or set DATABASE_URL",
                path.display()
            )),
            "{args:?}: {}",
            finished.stderr
        );
        assert!(!path.exists(), "{args:?} created {}", path.display());
    }
    let created = run(&["migrate", "up"], &[("DATABASE_URL", url.as_str())]).await;
    assert!(created.status.success(), "{}", created.stderr);
    let listed = run(&["events", "list"], &[("DATABASE_URL", url.as_str())]).await;
    assert!(listed.status.success(), "{}", listed.stderr);
}

/// The development loop's `stripe listen --events` line (docs/operations.md) forwards exactly the event types the projections
/// read (the plans page stayed empty when it named customers, subscriptions and checkout only).
#[test]
fn the_stripe_listen_line_names_every_projected_event_type() {
    let readme = support::doc("docs/operations.md");
    let listed: Vec<&str> = readme
        .lines()
        .find_map(|line| line.strip_prefix("stripe listen --events "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a `stripe listen --events …` line in docs/operations.md")
        .split(',')
        .collect();
    let projected: Vec<&str> = billing_sync_projection::stripe::projected_event_types().collect();
    assert_eq!(listed, projected);
}

/// A command that fails says each cause once, the driver's own: sea-orm's connection error
/// repeats its source in its own message (the chain printed "pool timed out …: pool timed out
/// …"), and the pool's retries hid why it could not connect ("pool timed out" after 5 s where
/// PostgreSQL refused the connection at once).
#[tokio::test]
async fn a_failing_command_says_each_cause_once() {
    let finished = run(
        &["events", "list"],
        &[("DATABASE_URL", "postgres://billing@127.0.0.1:1/billing")],
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    let line = finished
        .stderr
        .lines()
        .find(|line| line.starts_with("billing-sync: "))
        .expect("the error line");
    assert!(line.contains("is unavailable"), "{line}");
    assert!(line.contains("DATABASE_URL"), "the next step: {line}");
    assert_eq!(
        line.matches("Connection refused").count(),
        1,
        "the cause: {line}"
    );
    assert!(!line.contains("pool timed out"), "{line}");
}

/// Every error body carries the request's id, as the `X-Request-Id` header does: the API's
/// (a 401 here), the webhooks' (a 400), the ledger writes' refused before their body is read
/// (a 401), the router's for a wrong method and an unknown path (405, 404: poem's plain text
/// before), and the caller's own id when it sent a sane one.
#[tokio::test]
async fn every_error_body_carries_the_request_id() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = format!("sqlite://{}", dir.path().join("ids.db").display());
    let server = Server::start(&url, &[("STRIPE_WEBHOOK_SECRET", "whsec_ids")]).await;
    let portal = http()
        .get(server.url("/api/v1/operations/payment/customer-portal"))
        .send()
        .await
        .expect("GET");
    let unsigned = http()
        .post(server.url("/api/v1/webhooks/stripe"))
        .header("x-request-id", "req-from-the-caller")
        .body("{}")
        .send()
        .await
        .expect("POST");
    let keyless = http()
        .post(server.url("/api/v1/credits/consume"))
        .body("{}")
        .send()
        .await
        .expect("POST");
    let wrong_method = http()
        .get(server.url("/api/v1/webhooks/stripe"))
        .send()
        .await
        .expect("GET");
    let no_route = http()
        .get(server.url("/api/v1/nothing-here"))
        .send()
        .await
        .expect("GET");
    for (response, status) in [
        (portal, 401),
        (unsigned, 400),
        (keyless, 401),
        (wrong_method, 405),
        (no_route, 404),
    ] {
        let header = response.headers()["x-request-id"]
            .to_str()
            .expect("text")
            .to_owned();
        let (got, body) = status_and_json(response).await;
        assert_eq!(got, status, "{body}");
        assert!(body["code"].is_string(), "{body}");
        assert_eq!(body["request_id"], header.as_str(), "{body}");
        if status == 400 {
            assert_eq!(
                body["request_id"], "req-from-the-caller",
                "the caller's own id"
            );
        }
    }
}

/// Every metric the code records is in the `GET /metrics` table of docs/operations.md: each
/// `"billing_sync_…"` literal of the crates' sources (their Stripe metadata keys aside).
#[test]
fn every_metric_the_code_records_is_in_the_metrics_table() {
    use billing_sync_projection::stripe::{
        CHECKOUT_CREDITS_METADATA, CHECKOUT_PRICE_METADATA, CHECKOUT_QUANTITY_METADATA,
    };
    let mut names = std::collections::BTreeSet::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read a source folder")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("benches") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            for (start, _) in text.match_indices("\"billing_sync_") {
                let rest = &text[start + 1..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if rest[name.len()..].starts_with('"') {
                    names.insert(name);
                }
            }
        }
    }
    for key in [
        CHECKOUT_PRICE_METADATA,
        CHECKOUT_QUANTITY_METADATA,
        CHECKOUT_CREDITS_METADATA,
    ] {
        names.remove(key);
    }
    assert!(names.len() >= 20, "the metrics were found: {names:?}");
    let readme = support::doc("docs/operations.md");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/operations.md's metrics table: {missing:?}"
    );
}

/// A port in use is said before any database is made: `serve` on a taken address exits naming
/// it, and the SQLite file it would have created and migrated does not exist (it did).
#[tokio::test]
async fn a_port_in_use_is_said_before_a_database_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("never.db");
    let url = format!("sqlite://{}", file.display());
    let finished = run(
        &["serve"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("LISTEN_ADDR", address.as_str()),
        ],
    )
    .await;
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(&format!("cannot listen on {address}")),
        "{}",
        finished.stderr
    );
    assert!(
        !file.exists(),
        "the database was created for a server that could not start"
    );
}

billing_sync_testkit::postgres_test! {
    /// A PostgreSQL error ends a command in PostgreSQL's words for the user, without the line of
    /// PostgreSQL's own source the driver appends (the message ended "… at line 1234").
    #[tokio::test]
    async fn a_postgresql_error_is_said_without_postgresqls_source_line() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let migrated = run(&["migrate", "up"], &[("DATABASE_URL", db.url.as_str())]).await;
        assert!(migrated.status.success(), "{}", migrated.stderr);
        // A ledger a hand edit broke: its table lost a column the command reads.
        use billing_sync_store::sea_orm::ConnectionTrait;
        let store = billing_sync_store::Store::connect(&db.url).await.expect("connect");
        store
            .connection()
            .execute_unprepared("ALTER TABLE webhook_events DROP COLUMN event_type")
            .await
            .expect("alter");
        let finished = run(&["events", "list"], &[("DATABASE_URL", db.url.as_str())]).await;
        assert!(!finished.status.success(), "{}", finished.stdout);
        let line = finished
            .stderr
            .lines()
            .find(|line| line.starts_with("billing-sync: "))
            .expect("the error line");
        assert!(line.contains("event_type"), "the cause: {line}");
        assert!(!line.contains(" at line "), "{line}");
    }

    /// A command on a database that exists but was never migrated says what to run (it failed
    /// on a missing table).
    #[tokio::test]
    async fn a_command_on_an_unmigrated_database_says_to_migrate() {
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        for args in [&["events", "list"][..], &["outbox", "republish"][..]] {
            let finished = run(args, &[("DATABASE_URL", db.url.as_str())]).await;
            assert!(!finished.status.success(), "{args:?}: {}", finished.stdout);
            assert!(
                finished.stderr.contains("billing-sync migrate up"),
                "{args:?}: {}",
                finished.stderr
            );
        }
    }
}

/// The README stays a page a newcomer reads in minutes (at most 250 lines: what it is, the two
/// commands, try it, the map), and every relative link of it and of `docs/` leads to a file
/// that exists and, with a `#fragment`, to a heading of that file.
#[test]
fn the_readme_is_short_and_every_link_of_the_docs_resolves() {
    let readme = support::doc("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move detail to docs/"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut checked = 0;
    for page in &pages {
        let text = support::doc(page);
        let base = std::path::Path::new(page)
            .parent()
            .expect("a folder")
            .to_owned();
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')'))
        {
            let target = target.0;
            if target.contains("://") || target.starts_with('`') || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                page.clone()
            } else {
                base.join(file).to_string_lossy().into_owned()
            };
            let linked = std::fs::read_to_string(root.join(&file))
                .unwrap_or_else(|_| panic!("{page} links to {target}: no such file"));
            if !fragment.is_empty() {
                let anchors: Vec<String> = linked
                    .lines()
                    .filter_map(|line| {
                        line.trim_start_matches('#')
                            .strip_prefix(' ')
                            .filter(|_| line.starts_with('#'))
                    })
                    .map(|heading| {
                        heading
                            .to_lowercase()
                            .chars()
                            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                            .map(|c| if c == ' ' { '-' } else { c })
                            .collect()
                    })
                    .collect();
                assert!(
                    anchors.iter().any(|anchor| anchor == fragment),
                    "{page} links to {target}: no such heading in {file}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "the docs' links were found: {checked}");
}
