//! Security checks as tests: no log line of a full run at debug level carries a secret or a
//! token, and slow, stalled or oversized requests are refused or cut off without exhausting
//! the server.

use crate::support;

use std::time::Duration;

use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::json;
use support::standins::{JwksStandIn, SigningKey, StripeStandIn};
use support::{
    Server, deliver_a_customer, now, post_clerk, post_stripe, read_until_closed, stripe_signature,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STRIPE_WEBHOOK_SECRET: &str = "whsec_security_stripe_Zq81";
/// `whsec_` + base64 of "security-clerk-secret-bytes!"
const CLERK_WEBHOOK_SECRET: &str = "whsec_c2VjdXJpdHktY2xlcmstc2VjcmV0LWJ5dGVzIQ==";
const STRIPE_KEY: &str = "sk_test_security_key_Jw7Tq2";
const PORTAL: &str = "/api/v1/operations/payment/customer-portal";

async fn sqlite() -> TestDatabase {
    TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_of_a_full_run_contains_a_secret_or_a_token() {
    let db = sqlite().await;
    let key = SigningKey::generate("ins_security");
    let jwks = JwksStandIn::start(&[&key]).await;
    let stripe = StripeStandIn::start(&[]).await;
    let server = Server::start(
        &db.url,
        &[
            ("RUST_LOG", "debug"),
            ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
            ("CLERK_WEBHOOK_SECRET", CLERK_WEBHOOK_SECRET),
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_API_BASE", stripe.base_url.as_str()),
            ("CLERK_JWKS_URL", jwks.url.as_str()),
            ("APP_BASE_URL", "https://app.example.com"),
        ],
    )
    .await;

    // Webhooks: accepted, and refused for a bad signature (which logs the refusal).
    support::add_member(&server, CLERK_WEBHOOK_SECRET, "org_sec", "user_sec").await;
    let membership =
        support::membership_body("organizationMembership.created", "org_sec", "user_sec");
    let forged = post_clerk(
        &server,
        "whsec_ZGlmZmVyZW50LXNlY3JldC1ieXRlcyEhIQ==",
        "msg_sec_2",
        now(),
        &membership,
    )
    .await;
    assert_eq!(forged.status(), 400);
    support::checkout(&server, STRIPE_WEBHOOK_SECRET, "cus_sec", "org_sec").await;
    let checkout = support::checkout_body("cus_sec", "org_sec");
    let wrong = stripe_signature("whsec_not_the_secret", now(), &checkout);
    assert_eq!(
        post_stripe(&server, &checkout, Some(wrong)).await.status(),
        400
    );

    // The portal: a valid token (bearer and cookie), an expired one, a forged one.
    let claims = |exp: i64| {
        json!({"sub": "user_sec", "iat": now() - 10, "nbf": now() - 10, "exp": exp,
               "iss": jwks.issuer, "sid": "sess_sec", "o": {"id": "org_sec", "rol": "admin"}})
    };
    let valid = key.sign(&claims(now() + 120));
    let expired = key.sign(&claims(now() - 3600));
    let forged = SigningKey::generate("ins_security").sign(&claims(now() + 120));
    let http = support::http();
    let redirect = http
        .get(server.url(PORTAL))
        .bearer_auth(&valid)
        .send()
        .await
        .expect("portal");
    assert_eq!(redirect.status(), 302);
    let by_cookie = http
        .get(server.url(PORTAL))
        .header("cookie", format!("__session={valid}"))
        .send()
        .await
        .expect("portal");
    assert_eq!(by_cookie.status(), 302);
    for token in [&expired, &forged] {
        let refused = http
            .get(server.url(PORTAL))
            .bearer_auth(token)
            .send()
            .await
            .expect("portal");
        assert_eq!(refused.status(), 401);
    }
    assert_eq!(
        stripe.received()[0].authorization.as_deref(),
        Some(format!("Bearer {STRIPE_KEY}").as_str()),
        "the key did reach Stripe"
    );

    let (status, logs) = server.terminate_and_read_logs().await;
    assert!(status.success());
    assert!(logs.len() > 10, "debug logging is on: {} lines", logs.len());
    let clerk_secret_bytes = CLERK_WEBHOOK_SECRET.trim_start_matches("whsec_");
    let token_signature = |token: &str| token.rsplit('.').next().expect("JWS").to_owned();
    let secrets = [
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET.to_owned()),
        ("CLERK_WEBHOOK_SECRET", clerk_secret_bytes.to_owned()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY.to_owned()),
        ("a valid session token", token_signature(&valid)),
        ("an expired session token", token_signature(&expired)),
        ("a forged session token", token_signature(&forged)),
    ];
    for line in &logs {
        for (what, secret) in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a log line: {line}"
            );
        }
    }
}

async fn start_with_timeout(db: &TestDatabase, timeout_secs: &str) -> Server {
    Server::start(
        &db.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
            ("REQUEST_TIMEOUT_SECS", timeout_secs),
            ("WEBHOOK_BODY_LIMIT_BYTES", "65536"),
        ],
    )
    .await
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.base_url.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// The head of a Stripe delivery whose signature header passes every check that can be made
/// before the body (well formed, signed now), so that the server goes on to read the body.
fn webhook_head(content_length: usize) -> String {
    format!(
        "POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         stripe-signature: t={},v1=00\r\ncontent-length: {content_length}\r\n\r\n",
        now()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_refused_with_408_and_a_silent_connection_is_closed() {
    let db = sqlite().await;
    let server = start_with_timeout(&db, "1").await;

    let mut trickle = connect(&server).await;
    trickle
        .write_all(format!("{}{{\"id\":", webhook_head(500)).as_bytes())
        .await
        .expect("write");
    let answer = read_until_closed(&mut trickle, Duration::from_secs(15))
        .await
        .expect("the server answers and closes within the deadline");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_TIMEOUT"), "{answer}");

    // Headers begun and never finished: the connection is closed, not held.
    let mut silent = connect(&server).await;
    silent
        .write_all(b"POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: local")
        .await
        .expect("write");
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(15))
            .await
            .is_some(),
        "a silent connection is closed by the deadline"
    );

    // Headers trickled a byte at a time, each within a second: closed all the same.
    let mut trickled = connect(&server).await;
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        for byte in b"POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: localhost\r\nx-padding: "
            .iter()
            .cycle()
        {
            if trickled.write_all(&[*byte]).await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            // Wait up to 200 ms for the server to close; writing again tells a closed socket.
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(200), trickled.read(&mut probe)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a trickling client is cut off by the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_once_the_limit_is_passed() {
    let db = sqlite().await;
    let server = start_with_timeout(&db, "30").await;
    let mut stream = connect(&server).await;
    // Claims a gigabyte; sends a little over the 64 KiB limit and waits for the answer.
    stream
        .write_all(webhook_head(1 << 30).as_bytes())
        .await
        .expect("write the head");
    let _ = stream.write_all(&vec![b' '; 65_536 + 4_096]).await;
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
        .await
        .expect("answered without waiting for the rest of the claimed gigabyte")
        .expect("read");
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_stalled_clients_do_not_starve_a_real_delivery() {
    let _load = support::one_load_at_a_time().await;
    let db = sqlite().await;
    let server = start_with_timeout(&db, "30").await;
    let mut stalled = Vec::new();
    for n in 0..400 {
        let mut stream = connect(&server).await;
        let partial = if n % 2 == 0 {
            // Headers never finished.
            "POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: loc".to_owned()
        } else {
            // A body never finished.
            format!("{}{{\"id\"", webhook_head(10_000))
        };
        stream.write_all(partial.as_bytes()).await.expect("write");
        stalled.push(stream);
    }
    let delivered = tokio::time::timeout(
        Duration::from_secs(10),
        deliver_a_customer(&server, STRIPE_WEBHOOK_SECRET, "sec_live"),
    )
    .await
    .expect("a real delivery is served while 400 clients stall");
    assert_eq!(delivered, 200);
    let health = support::http()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_headers_can_refuse_is_refused_before_the_body_is_read() {
    let db = sqlite().await;
    let server = Server::start(
        &db.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
            (
                "CLERK_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("REQUEST_TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let stale = now() - 3_600;
    let cases = [
        ("stripe", String::new(), "SIGNATURE_MISSING"),
        (
            "stripe",
            "stripe-signature: v1=00\r\n".to_owned(),
            "SIGNATURE_INVALID",
        ),
        (
            "stripe",
            format!("stripe-signature: t={stale},v1=00\r\n"),
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        (
            "stripe",
            format!("stripe-signature: t={},v1=00\r\n", i64::MIN),
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        ("clerk", String::new(), "SIGNATURE_MISSING"),
        (
            "clerk",
            format!("svix-id: msg_1\r\nsvix-timestamp: {stale}\r\nsvix-signature: v1,x\r\n"),
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
    ];
    for (provider, headers, code) in cases {
        let mut stream = connect(&server).await;
        // A megabyte announced, not a byte of it sent: the answer must not wait for it.
        stream
            .write_all(
                format!(
                    "POST /api/v1/webhooks/{provider} HTTP/1.1\r\nhost: localhost\r\n\
                     content-type: application/json\r\n{headers}content-length: 1048575\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .expect("write the head");
        let mut buffer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{provider} {code}: answered without the body"))
            .expect("read");
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{provider} {code}: {answer}"
        );
        assert!(answer.contains(code), "{provider} {code}: {answer}");
    }
}

/// The bound `WEBHOOK_BODY_BYTES_IN_FLIGHT` (32 MiB by default) puts on the server's memory
/// under a thousand stalled megabyte bodies, with room for the runtime, the pool and the
/// connections themselves (the README documents it).
const STALLED_BODIES_RSS_BOUND: u64 = 160 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_megabyte_bodies_keep_memory_bounded() {
    let _load = support::one_load_at_a_time().await;
    let db = sqlite().await;
    let server = Server::start(
        &db.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
            ("REQUEST_TIMEOUT_SECS", "5"),
        ],
    )
    .await;
    let before = server.resident_bytes();
    let body = vec![b' '; (1 << 20) - 1];
    let body = std::sync::Arc::new(body);
    let mut clients = Vec::new();
    for _ in 0..1_000 {
        let mut stream = connect(&server).await;
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            // Signed now and well formed: past every check the headers allow. One byte short.
            if stream
                .write_all(webhook_head(1 << 20).as_bytes())
                .await
                .is_err()
            {
                return String::new();
            }
            let _ = stream.write_all(&body).await;
            read_until_closed(&mut stream, Duration::from_secs(60))
                .await
                .unwrap_or_default()
        }));
    }
    // Peak: sample while the bodies stall (until the first answers of the admitted come back).
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        peak = peak.max(server.resident_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    for client in clients {
        let answer = client.await.expect("client task");
        let status = answer.get(9..12).unwrap_or("closed").to_owned();
        *answers.entry(status).or_default() += 1;
    }
    peak = peak.max(server.resident_bytes());
    let after = server.resident_bytes();
    eprintln!(
        "1,000 stalled 1 MiB bodies: RSS before {} MiB, peak {} MiB, after {} MiB; answers {answers:?}",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        peak < STALLED_BODIES_RSS_BOUND,
        "peak RSS {} MiB is over the bound",
        peak >> 20
    );
    assert!(
        after < STALLED_BODIES_RSS_BOUND,
        "RSS {} MiB after the bodies timed out is over the bound",
        after >> 20
    );
    assert!(
        answers.contains_key("503"),
        "past the budget, bodies are refused: {answers:?}"
    );
    assert!(
        answers.contains_key("408"),
        "bodies admitted to the budget time out: {answers:?}"
    );
    // The budget is free again: a real delivery goes through.
    assert_eq!(
        deliver_a_customer(&server, STRIPE_WEBHOOK_SECRET, "after_stall").await,
        200
    );
}
