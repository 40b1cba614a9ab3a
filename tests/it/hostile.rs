//! The webhook routes face the open internet: anyone can connect, and only the body proves a
//! delivery is real. These tests attack the real binary as an unauthenticated client would —
//! stalled heads that claim a megabyte, bodies trickled a byte a second, HTTP/2 streams on a
//! few connections, unfinished oversized heads — while senders that behave like Stripe and
//! Svix deliver real signed events, and check that the real deliveries get through, quickly,
//! and that memory stays bounded.
//!
//! The hostile clients connect from loopback addresses other than the senders' 127.0.0.1, as
//! an attacker's address differs from Stripe's and Svix's: the server bounds what one address
//! may hold.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use billing_sync_projection::Provider;
use billing_sync_store::Store;
use billing_sync_testkit::state::ledger_row;
use billing_sync_testkit::{Backend, TestDatabase};
use serde_json::json;
use support::{Server, now, post_clerk, post_stripe, stripe_signature};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub(crate) const STRIPE_SECRET: &str = "whsec_hostile_stripe_5kq";
pub(crate) const CLERK_SECRET: &str = "whsec_aG9zdGlsZS1jbGVyay1zZWNyZXQtYnl0ZXM=";

/// How long the attack and the real deliveries run together.
const ATTACK: Duration = Duration::from_secs(20);
/// Real senders delivering at once, as Stripe and Svix do.
const SENDERS: usize = 16;

/// The server's address.
pub(crate) fn address(server: &Server) -> SocketAddr {
    server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("host:port")
}

/// A connection to the server from `source` (a loopback address of its own).
pub(crate) async fn connect_from(server: SocketAddr, source: Ipv4Addr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source.into(), 0)).ok()?;
    socket.connect(server).await.ok()
}

/// The hostile clients' addresses: 127.0.0.2 to 127.0.0.9.
pub(crate) fn hostile_source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (n % 8) as u8)
}

/// A Stripe head that passes every check the headers allow (well formed, signed now) and
/// claims a megabyte of body.
fn plausible_head() -> String {
    format!(
        "POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         stripe-signature: t={},v1={}\r\ncontent-length: 1048576\r\n\r\n",
        now(),
        "ab".repeat(32)
    )
}

/// Waits until the server closes `stream` (or `stop` is set).
async fn hold(stream: &mut TcpStream, stop: &AtomicBool) {
    let mut buffer = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await
        {
            return;
        }
    }
}

/// What one hostile client does on each connection, until the server closes it.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// A plausible head claiming a megabyte, then silence.
    StalledHead,
    /// A plausible head, then the body one byte a second.
    Trickle,
    /// h2c with prior knowledge: 40 streams, each a plausible head claiming a megabyte, then
    /// silence.
    Http2Streams,
}

/// Hostile connections made so far.
static CONNECTED: AtomicUsize = AtomicUsize::new(0);

async fn attack_once(server: SocketAddr, source: Ipv4Addr, attack: Attack, stop: &AtomicBool) {
    let Some(mut stream) = connect_from(server, source).await else {
        return;
    };
    CONNECTED.fetch_add(1, Ordering::Relaxed);
    match attack {
        Attack::StalledHead => {
            if stream.write_all(plausible_head().as_bytes()).await.is_ok() {
                hold(&mut stream, stop).await;
            }
        }
        Attack::Trickle => {
            if stream.write_all(plausible_head().as_bytes()).await.is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
                // The attacker's pace, not a wait for the server: its answer (a refusal, a
                // close) is what ends the loop.
                let mut probe = [0u8; 64];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await
                {
                    return;
                }
            }
        }
        Attack::Http2Streams => {
            let Ok((client, connection)) = h2::client::handshake(stream).await else {
                return;
            };
            let driver = tokio::spawn(connection);
            let mut held = Vec::new();
            if let Ok(mut client) = client.ready().await {
                for _ in 0..40 {
                    let request =
                        poem::http::Request::post("http://localhost/api/v1/webhooks/stripe")
                            .header("content-type", "application/json")
                            .header(
                                "stripe-signature",
                                format!("t={},v1={}", now(), "ab".repeat(32)),
                            )
                            .header("content-length", "1048576")
                            .body(())
                            .expect("a request");
                    match client.send_request(request, false) {
                        Ok(stream) => held.push(stream),
                        Err(_) => break,
                    }
                    match client.ready().await {
                        Ok(ready) => client = ready,
                        Err(_) => break,
                    }
                }
            }
            while !stop.load(Ordering::Relaxed) && !driver.is_finished() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            driver.abort();
        }
    }
}

/// One hostile client: attacks, and attacks again each time the server closes the connection
/// (a refused client renews at once, with a short pause so a refusal loop is not a busy loop).
fn hostile_client(
    server: SocketAddr,
    n: usize,
    attack: Attack,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut connections = 0;
        while !stop.load(Ordering::Relaxed) {
            connections += 1;
            let started = Instant::now();
            attack_once(server, hostile_source(n), attack, &stop).await;
            if started.elapsed() < Duration::from_millis(200) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        connections
    })
}

/// A realistic Stripe subscription event of about 3 KB.
fn stripe_body(event_id: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event_id, "object": "event", "api_version": "2026-07-29.dahlia",
        "created": now(), "livemode": false, "pending_webhooks": 1,
        "request": {"id": format!("req_{n}"), "idempotency_key": null},
        "type": "customer.subscription.updated",
        "data": {"object": {
            "id": format!("sub_hostile_{n}"), "object": "subscription",
            "customer": format!("cus_hostile_{n}"), "status": "active",
            "cancel_at_period_end": false, "created": 1_700_000_000,
            "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
            "metadata": {"organization_id": format!("org_hostile_{n}"), "note": "x".repeat(1500)},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_hostile_{n}"), "object": "subscription_item", "quantity": 3,
                "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
                "price": {"id": "price_team", "object": "price", "product": "prod_team",
                          "unit_amount": 2900, "currency": "eur", "type": "recurring",
                          "recurring": {"interval": "month", "interval_count": 1}}}]}}},
    }))
    .expect("JSON")
}

fn clerk_body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "user.updated", "object": "event", "data": {
        "id": format!("user_hostile_{n}"), "object": "user", "first_name": "Jane",
        "last_name": "Doe", "updated_at": now() * 1000,
        "email_addresses": [{"id": format!("idn_{n}"), "email_address": "jane@example.com"}],
        "primary_email_address_id": format!("idn_{n}")}}))
    .expect("JSON")
}

/// What the real senders saw.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// (provider, event id) of each acknowledged delivery.
    pub(crate) acknowledged: Vec<(Provider, String)>,
    /// Every delivery's latency, and whether it was acknowledged (2xx).
    pub(crate) answers: Vec<(Duration, bool)>,
}

impl Deliveries {
    /// What `senders` saw, together, once each has stopped.
    pub(crate) async fn gathered(senders: Vec<tokio::task::JoinHandle<Deliveries>>) -> Deliveries {
        let mut seen = Deliveries::default();
        for sender in senders {
            let one = sender.await.expect("a sender");
            seen.acknowledged.extend(one.acknowledged);
            seen.answers.extend(one.answers);
        }
        seen
    }

    /// (acknowledged, total, p99 latency) of what the senders saw.
    pub(crate) fn summary(&self) -> (usize, usize, Duration) {
        let total = self.answers.len();
        let acknowledged = self.answers.iter().filter(|(_, ok)| *ok).count();
        let mut latencies: Vec<Duration> =
            self.answers.iter().map(|(latency, _)| *latency).collect();
        latencies.sort();
        let p99 = latencies
            .get((total * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default();
        (acknowledged, total, p99)
    }
}

/// How often each sender delivers: 16 senders make 32 events a second, far more than a
/// billing account's webhooks, and not so many that the senders alone saturate two cores (then
/// latency would measure the senders' own queue, not the attack).
const SENDER_PACE: Duration = Duration::from_millis(500);

/// One sender: delivers an event every [`SENDER_PACE`] until `stop`, alternating Stripe and
/// Clerk.
pub(crate) fn sender(
    server: Arc<Server>,
    n: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Deliveries> {
    tokio::spawn(async move {
        let mut seen = Deliveries::default();
        let mut sequence = 0;
        let mut pace = tokio::time::interval(SENDER_PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            sequence += 1;
            let id = n * 100_000 + sequence;
            let started = Instant::now();
            let (provider, event_id, status) = if sequence % 2 == 0 {
                let event_id = format!("evt_hostile_{id}");
                let body = stripe_body(&event_id, id);
                let signature = stripe_signature(STRIPE_SECRET, now(), &body);
                let response = tokio::time::timeout(
                    Duration::from_secs(30),
                    post_stripe(&server, &body, Some(signature)),
                )
                .await;
                (
                    Provider::Stripe,
                    event_id,
                    response.map(|r| r.status().as_u16()),
                )
            } else {
                let event_id = format!("msg_hostile_{id}");
                let response = tokio::time::timeout(
                    Duration::from_secs(30),
                    post_clerk(&server, CLERK_SECRET, &event_id, now(), &clerk_body(id)),
                )
                .await;
                (
                    Provider::Clerk,
                    event_id,
                    response.map(|r| r.status().as_u16()),
                )
            };
            let ok = status.is_ok_and(|status| (200..300).contains(&status));
            seen.answers.push((started.elapsed(), ok));
            if ok {
                seen.acknowledged.push((provider, event_id));
            }
        }
        seen
    })
}

/// The server's memory while the attack lasts may not pass this.
const HOSTILE_RSS_BOUND: u64 = 300 * 1024 * 1024;

billing_sync_testkit::postgres_test! {
    /// 1,000 hostile connections (stalled heads claiming a megabyte, bodies trickled a byte a
    /// second, HTTP/2 streams on a few connections) while 16 senders deliver real signed Stripe
    /// and Clerk events: at least 99 % of the real deliveries are acknowledged, their p99 is under
    /// a second, RSS stays under 300 MB, and every acknowledged event is in the ledger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_deliveries_get_through_a_thousand_hostile_connections() {
        let _load = support::one_load_at_a_time().await;
        let Some(db) = TestDatabase::create(Backend::Postgres).await else {
            return;
        };
        let server = Arc::new(
            Server::start(
                &db.url,
                &[
                    ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
                    ("CLERK_WEBHOOK_SECRET", CLERK_SECRET),
                    // The refusals would be a log line each; the address line is what the start
                    // waits for.
                    ("RUST_LOG", "error,billing_sync::startup=info"),
                ],
            )
            .await,
        );
        let target = address(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let mut hostile = Vec::new();
        for n in 0..1_000 {
            let attack = match n % 100 {
                0..48 => Attack::StalledHead,
                48..97 => Attack::Trickle,
                _ => Attack::Http2Streams,
            };
            hostile.push(hostile_client(target, n, attack, stop.clone()));
        }
        // Every hostile client has connected before the first real delivery.
        support::wait_for(
            "the hostile clients to connect",
            Duration::from_secs(60),
            || async { (CONNECTED.load(Ordering::Relaxed) >= 1_000).then_some(()) },
        )
        .await;

        let senders: Vec<_> = (0..SENDERS)
            .map(|n| sender(server.clone(), n, stop.clone()))
            .collect();
        let started = Instant::now();
        let mut peak = 0;
        while started.elapsed() < ATTACK {
            peak = peak.max(server.resident_bytes());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let seen = Deliveries::gathered(senders).await;
        let mut renewals = 0;
        for client in hostile {
            client.abort();
            renewals += client.await.unwrap_or_default();
        }

        let (acknowledged, total, p99) = seen.summary();
        eprintln!(
            "hostile: {total} real deliveries in {ATTACK:?}, {acknowledged} acknowledged ({:.2} %), \
             p99 {p99:?}; peak RSS {} MiB; hostile connections opened {renewals}",
            100.0 * acknowledged as f64 / total.max(1) as f64,
            peak >> 20
        );
        assert!(total >= 100, "the senders delivered: {total}");
        assert!(
            acknowledged * 100 >= total * 99,
            "{acknowledged} of {total} real deliveries acknowledged"
        );
        assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
        assert!(peak < HOSTILE_RSS_BOUND, "peak RSS {} MiB", peak >> 20);
        let store = Store::connect(&db.url).await.expect("connect");
        for (provider, event_id) in &seen.acknowledged {
            assert!(
                ledger_row(&store, *provider, event_id).await.is_some(),
                "acknowledged but not in the ledger: {event_id}"
            );
        }
    }
}

/// The server's memory under a thousand unfinished 300 KB heads may not pass this.
const HEADS_RSS_BOUND: u64 = 150 * 1024 * 1024;

/// 1,000 connections each sending 300 KB of header bytes and never finishing: each is refused
/// (431) once its head passes the limit, and RSS stays under 150 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unfinished_oversized_heads_keep_memory_bounded() {
    let _load = support::one_load_at_a_time().await;
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let server = Server::start(&db.url, &[("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)]).await;
    let target = address(&server);
    let before = server.resident_bytes();
    let padding = Arc::new(vec![b'a'; 300 * 1024]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..1_000)
        .map(|n| {
            let (padding, stop) = (padding.clone(), stop.clone());
            tokio::spawn(async move {
                let Some(mut stream) = connect_from(target, hostile_source(n)).await else {
                    return String::from("unconnected");
                };
                let head =
                    "POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: localhost\r\nx-padding: ";
                if stream.write_all(head.as_bytes()).await.is_ok() {
                    let _ = stream.write_all(&padding).await;
                }
                let mut answer = Vec::new();
                let mut buffer = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer))
                        .await
                    {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
                        Err(_) => {}
                    }
                }
                String::from_utf8_lossy(&answer)
                    .get(9..12)
                    .unwrap_or("closed")
                    .to_owned()
            })
        })
        .collect();
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        peak = peak.max(server.resident_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    for client in clients {
        *answers.entry(client.await.expect("a client")).or_default() += 1;
    }
    peak = peak.max(server.resident_bytes());
    eprintln!(
        "1,000 unfinished 300 KB heads: RSS before {} MiB, peak {} MiB; answers {answers:?}",
        before >> 20,
        peak >> 20
    );
    assert!(peak < HEADS_RSS_BOUND, "peak RSS {} MiB", peak >> 20);
    // Every connection is refused: with 431, or closed before the client could read it (the
    // server closes with unread bytes of the head in its buffer, which resets the connection).
    let refused = answers.get("431").copied().unwrap_or_default();
    assert_eq!(
        refused + answers.get("closed").copied().unwrap_or_default(),
        1_000,
        "every oversized head is refused: {answers:?}"
    );
    assert!(
        refused >= 100,
        "the 431 is read where the connection lets it: {answers:?}"
    );
    assert_eq!(
        support::deliver_a_customer(&server, STRIPE_SECRET, "after_heads").await,
        200
    );
}

/// A head that does not arrive whole within `REQUEST_HEADER_TIMEOUT_SECS` of its first byte is
/// answered 408 and its connection closed, however steadily it trickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_not_received_within_the_header_timeout_is_cut_off() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let server = Server::start(
        &db.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
            ("REQUEST_HEADER_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let target = address(&server);

    // Begun, then stalled: answered 408 in the documented format.
    let mut stalled = connect_from(target, hostile_source(0))
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: local")
        .await
        .expect("write");
    let answer = support::read_until_closed(&mut stalled, Duration::from_secs(15))
        .await
        .expect("answered and closed within the header timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("HEADERS_TIMEOUT"), "{answer}");

    // Trickled a byte every 100 ms, never finished: cut off all the same (the answer itself may
    // be lost: the connection is closed while the trickler's next byte is on its way).
    let mut trickled = connect_from(target, hostile_source(1))
        .await
        .expect("connect");
    let started = Instant::now();
    for byte in b"POST /api/v1/webhooks/stripe HTTP/1.1\r\nhost: localhost\r\nx-padding: "
        .iter()
        .cycle()
    {
        if trickled.write_all(&[*byte]).await.is_err() {
            break;
        }
        // The trickler's pace; the server closing the connection ends the loop.
        let mut buffer = [0u8; 512];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), trickled.read(&mut buffer)).await
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the trickled head is still being read"
        );
    }
}

/// With `MAX_CONNECTIONS` open, a new connection waits in the backlog until one closes; then it
/// is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_waits_for_a_free_slot() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let server = Server::start(&db.url, &[("MAX_CONNECTIONS", "2")]).await;
    let target = address(&server);
    let mut held = Vec::new();
    for n in 0..2 {
        let mut stream = connect_from(target, hostile_source(n))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: l")
            .await
            .expect("write");
        held.push(stream);
    }
    let waiting = tokio::spawn({
        let url = server.url("/healthz");
        async move {
            support::http()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let early = tokio::time::timeout(Duration::from_millis(1500), async {
        while !waiting.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        early.is_err(),
        "the third connection is not served while two are open"
    );
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("served once a slot is free")
        .expect("the request task")
        .expect("the request");
    assert_eq!(status, 200);
}

/// The guard reads heads as they come: a request whose bytes arrive one at a time (a slow
/// network, or a client that writes them so) is served like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_a_byte_at_a_time_is_served() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let server = Server::start(&db.url, &[]).await;
    let mut stream = connect_from(address(&server), Ipv4Addr::LOCALHOST)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("no delay");
    // A POST: its first byte is also the first byte of HTTP/2's preface (`PRI * …`).
    for byte in
        b"POST /healthz HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    {
        stream.write_all(&[*byte]).await.expect("write");
        // Apart, so that each byte is a read of its own on the server (the first one even on
        // a loaded machine).
        tokio::time::sleep(Duration::from_millis(if *byte == b'P' { 300 } else { 5 })).await;
    }
    let answer = support::read_until_closed(&mut stream, Duration::from_secs(15))
        .await
        .expect("answered");
    // Answered (405: the probe takes GET), not refused as h2c.
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}
