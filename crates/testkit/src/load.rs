//! A load driver that delivers signed scenario events the way Stripe and Svix do, and the check
//! that nothing acknowledged was lost.
//!
//! Every organization gets the Stripe and the Clerk lifecycle of [`crate::scenarios`] under a
//! namespace of its own. Organizations are delivered in waves; within a wave every event (and
//! a share of duplicates) is shuffled and sent concurrently. A delivery is retried with
//! backoff until it gets a 2xx, like the providers' retries, so a fault in the middle of a run
//! only delays acknowledgements. The check then asks two questions: is every acknowledged
//! event in the ledger, and does every organization's projected state equal the state that
//! in-order delivery produces (computed by the same projections in a reference database)?

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use billing_sync_projection::Provider;
use billing_sync_store::Store;
use billing_sync_store::entities::webhook_events;
use billing_sync_store::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::scenarios::{ScenarioEvent, clerk_lifecycle_at, stripe_lifecycle};
use crate::state::{deliver, migrated_store, state_of};

/// The webhook signing secrets the server under test was started with.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// `STRIPE_WEBHOOK_SECRET`.
    pub stripe: String,
    /// `CLERK_WEBHOOK_SECRET`.
    pub clerk: String,
}

/// The base URLs of the running replicas; a test replaces them when it restarts one.
#[derive(Clone, Debug, Default)]
pub struct Targets(Arc<RwLock<Vec<String>>>);

impl Targets {
    /// Deliveries go to these base URLs (`http://127.0.0.1:PORT`).
    pub fn new(urls: Vec<String>) -> Targets {
        Targets(Arc::new(RwLock::new(urls)))
    }

    /// From now on, deliveries go to these.
    pub fn replace(&self, urls: Vec<String>) {
        *self.0.write().expect("targets lock") = urls;
    }

    fn all(&self) -> Vec<String> {
        self.0.read().expect("targets lock").clone()
    }
}

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct Load {
    /// A short tag that namespaces this run's ids (letters only).
    pub tag: String,
    /// Organizations, each with a Stripe and a Clerk lifecycle (23 events).
    pub organizations: usize,
    /// Organizations per wave.
    pub wave: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Extra deliveries of already-sent events, as a share of the events (0.2 = 20 %).
    pub duplicates: f64,
    /// Which deliveries go to every replica at the same moment (the others go to a random one).
    pub fanout: Fanout,
    /// Seed of the shuffles, so that a failing run can be repeated.
    pub seed: u64,
    /// A delivery still unacknowledged after this long is given up (and reported).
    pub give_up_after: Duration,
}

/// Which deliveries a run sends to every replica at once, racing each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// Each delivery to one replica, picked at random.
    OneReplica,
    /// Each duplicate to every replica.
    Duplicates,
    /// Every delivery to every replica: the most contention two writers can have, since both
    /// write the same ledger rows and the same objects' rows at the same moment.
    Everything,
}

impl Load {
    /// How many distinct events the run delivers (duplicates not counted).
    pub fn events(&self) -> usize {
        self.organizations * organization_events("count", 0).len()
    }
}

/// One organization's events: its Stripe lifecycle, then its Clerk lifecycle dated from `c0`.
fn organization_events(ns: &str, c0: i64) -> Vec<ScenarioEvent> {
    let mut events = stripe_lifecycle(ns);
    events.extend(clerk_lifecycle_at(ns, c0));
    events
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Deliveries (an event sent until acknowledged), duplicates included.
    pub deliveries: u64,
    /// Distinct events.
    pub events: u64,
    /// Distinct events acknowledged with a 2xx: `(provider, event_id)`.
    pub acknowledged: HashSet<(String, String)>,
    /// Answers by status (`200`, `503`, …, or `connection error`).
    pub answers: BTreeMap<String, u64>,
    /// The `status` of every 2xx answer's body (`processed`, `duplicate`, …), counted.
    pub acknowledged_as: BTreeMap<String, u64>,
    /// Every organization's namespace with its events in order.
    pub organizations: Vec<(String, Vec<ScenarioEvent>)>,
}

/// The verdict on a run.
#[derive(Debug)]
pub struct Verdict {
    /// Acknowledged events missing from the ledger.
    pub missing: Vec<(String, String)>,
    /// Acknowledged events present in the ledger.
    pub present: usize,
    /// Namespaces whose state differs from in-order delivery.
    pub mismatched: Vec<String>,
    /// Ledger rows recorded `failed`: acknowledged, so never retried by the provider, and not
    /// applied. The events of a load are all well formed, so there must be none.
    pub failed_in_ledger: Vec<String>,
    /// Acknowledgements whose status says the event was not applied (anything but
    /// `processed`, `ignored` or `duplicate`), counted by status.
    pub acknowledged_unapplied: BTreeMap<String, u64>,
}

/// Runs `load` against `targets`, publishing the number of acknowledged events on `acked` (a
/// test waits on it to inject its fault mid-run).
pub async fn drive(
    load: &Load,
    targets: &Targets,
    secrets: &Secrets,
    acked: &watch::Sender<usize>,
) -> Report {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(load.concurrency)
        .build()
        .expect("an HTTP client");
    let mut rng = StdRng::seed_from_u64(load.seed);
    let shared = Shared {
        requests: AtomicU64::new(0),
        answers: Mutex::new(BTreeMap::new()),
        acknowledged_as: Mutex::new(BTreeMap::new()),
        acknowledged: Mutex::new(HashSet::new()),
    };
    let mut report = Report::default();
    let started = Instant::now();
    let namespaces: Vec<String> = (0..load.organizations)
        .map(|i| format!("{}{i:05}x", load.tag))
        .collect();
    for wave in namespaces.chunks(load.wave.max(1)) {
        // Clerk's svix-timestamp must be within five minutes of now: each wave is dated anew.
        let c0 = (chrono::Utc::now().timestamp() - 60) * 1000;
        let mut deliveries = Vec::new();
        for ns in wave {
            let events = organization_events(ns, c0);
            report.events += events.len() as u64;
            deliveries.extend(events.iter().cloned().map(|e| (e, false)));
            report.organizations.push((ns.clone(), events));
        }
        let extra = (deliveries.len() as f64 * load.duplicates).round() as usize;
        for _ in 0..extra {
            let (event, _) = deliveries
                .choose(&mut rng)
                .expect("events to duplicate")
                .clone();
            deliveries.push((event, true));
        }
        deliveries.shuffle(&mut rng);
        report.deliveries += deliveries.len() as u64;
        let seeds: Vec<u64> = deliveries.iter().map(|_| rng.random()).collect();
        futures::stream::iter(deliveries.into_iter().zip(seeds))
            .for_each_concurrent(load.concurrency, |((event, duplicate), seed)| {
                let (http, shared) = (&http, &shared);
                async move {
                    let urls = targets.all();
                    let to_every = urls.len() > 1
                        && match load.fanout {
                            Fanout::OneReplica => false,
                            Fanout::Duplicates => duplicate,
                            Fanout::Everything => true,
                        };
                    let acknowledged = if to_every {
                        let sends = urls.iter().map(|url| {
                            let pinned = Some(url.clone());
                            deliver_until_acked(
                                http, targets, pinned, secrets, &event, load, started, shared, seed,
                            )
                        });
                        futures::future::join_all(sends)
                            .await
                            .into_iter()
                            .any(|ok| ok)
                    } else {
                        deliver_until_acked(
                            http, targets, None, secrets, &event, load, started, shared, seed,
                        )
                        .await
                    };
                    if acknowledged {
                        let mut set = shared.acknowledged.lock().expect("lock");
                        set.insert((event.provider.as_str().to_owned(), event.event_id.clone()));
                        acked.send_replace(set.len());
                    }
                }
            })
            .await;
    }
    report.requests = shared.requests.load(Ordering::SeqCst);
    report.answers = shared.answers.into_inner().expect("lock");
    report.acknowledged_as = shared.acknowledged_as.into_inner().expect("lock");
    report.acknowledged = shared.acknowledged.into_inner().expect("lock");
    report
}

struct Shared {
    requests: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
    acknowledged_as: Mutex<BTreeMap<String, u64>>,
    acknowledged: Mutex<HashSet<(String, String)>>,
}

/// Sends `event` until a 2xx (true) or until the run's patience is spent (false). `pinned`
/// sends every attempt to one replica; otherwise each attempt picks one at random, as a load
/// balancer would.
#[allow(clippy::too_many_arguments)]
async fn deliver_until_acked(
    http: &reqwest::Client,
    targets: &Targets,
    pinned: Option<String>,
    secrets: &Secrets,
    event: &ScenarioEvent,
    load: &Load,
    started: Instant,
    shared: &Shared,
    seed: u64,
) -> bool {
    let mut rng = StdRng::seed_from_u64(seed);
    let body = serde_json::to_vec(&event.payload).expect("JSON");
    let mut attempt = 0u32;
    loop {
        let base = pinned.clone().unwrap_or_else(|| {
            targets
                .all()
                .choose(&mut rng)
                .cloned()
                .expect("at least one target")
        });
        let request = signed(http, &base, secrets, event, &body);
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let (answer, status) = match request.send().await {
            Ok(response) => {
                let code = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let status = code
                    .is_success()
                    .then(|| body["status"].as_str().unwrap_or("no status").to_owned());
                (code.as_u16().to_string(), status)
            }
            Err(_) => ("connection error".to_owned(), None),
        };
        let ok = answer.starts_with('2');
        if let Some(status) = status {
            *shared
                .acknowledged_as
                .lock()
                .expect("lock")
                .entry(status)
                .or_default() += 1;
        }
        *shared
            .answers
            .lock()
            .expect("lock")
            .entry(answer)
            .or_default() += 1;
        if ok {
            return true;
        }
        if started.elapsed() > load.give_up_after {
            return false;
        }
        attempt += 1;
        // The providers back off for minutes to days; a test compresses that to 20 ms..1 s.
        let backoff =
            Duration::from_millis(20 * 2u64.pow(attempt.min(6))).min(Duration::from_secs(1));
        tokio::time::sleep(backoff + Duration::from_millis(rng.random_range(0..20))).await;
    }
}

/// A delivery of `event` signed as its provider signs it, at the current attempt.
fn signed(
    http: &reqwest::Client,
    base: &str,
    secrets: &Secrets,
    event: &ScenarioEvent,
    body: &[u8],
) -> reqwest::RequestBuilder {
    if event.provider == Provider::Stripe {
        let t = chrono::Utc::now().timestamp();
        let signature = billing_sync_projection::stripe_signature::sign(&secrets.stripe, t, body);
        http.post(format!("{base}/api/v1/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={t},v1={signature}"))
            .body(body.to_vec())
    } else {
        let signature = svix::webhooks::Webhook::new(&secrets.clerk)
            .expect("a whsec_ secret")
            .sign(&event.event_id, event.timestamp, body)
            .expect("sign");
        http.post(format!("{base}/api/v1/webhooks/clerk"))
            .header("content-type", "application/json")
            .header("svix-id", &event.event_id)
            .header("svix-timestamp", event.timestamp.to_string())
            .header("svix-signature", signature)
            .body(body.to_vec())
    }
}

/// Checks `report` against the database the server wrote to.
pub async fn verify(store: &Store, report: &Report) -> Verdict {
    let ledger: HashSet<(String, String)> = webhook_events::Entity::find()
        .select_only()
        .column(webhook_events::Column::Provider)
        .column(webhook_events::Column::EventId)
        .into_tuple::<(String, String)>()
        .all(store.connection())
        .await
        .expect("read the ledger")
        .into_iter()
        .collect();
    let mut missing: Vec<(String, String)> = report
        .acknowledged
        .iter()
        .filter(|key| !ledger.contains(*key))
        .cloned()
        .collect();
    missing.sort();
    let reference = migrated_store("sqlite::memory:").await;
    let mut mismatched = Vec::new();
    for (ns, events) in &report.organizations {
        for event in events {
            deliver(&reference, event).await;
        }
        if state_of(store, ns).await != state_of(&reference, ns).await {
            mismatched.push(ns.clone());
        }
    }
    let failed_in_ledger = webhook_events::Entity::find()
        .select_only()
        .column(webhook_events::Column::EventId)
        .filter(webhook_events::Column::Status.eq("failed"))
        .into_tuple::<String>()
        .all(store.connection())
        .await
        .expect("read the ledger");
    let acknowledged_unapplied = report
        .acknowledged_as
        .iter()
        .filter(|(status, _)| !matches!(status.as_str(), "processed" | "ignored" | "duplicate"))
        .map(|(status, count)| (status.clone(), *count))
        .collect();
    Verdict {
        present: report.acknowledged.len() - missing.len(),
        missing,
        mismatched,
        failed_in_ledger,
        acknowledged_unapplied,
    }
}

/// The summary table a suite prints at its end.
pub fn summary(suite: &str, report: &Report, verdict: &Verdict) -> String {
    let answers: Vec<String> = report
        .answers
        .iter()
        .map(|(answer, count)| format!("{answer}: {count}"))
        .collect();
    format!(
        "\n{:<34} {:>8} {:>10} {:>7} {:>12} {:>9} {:>5} {:>10}\n\
         {:<34} {:>8} {:>10} {:>7} {:>12} {:>9} {:>5} {:>10}\n\
         answers: {}\n\
         acknowledged as: {}; failed in the ledger: {}\n",
        "suite",
        "requests",
        "deliveries",
        "events",
        "acknowledged",
        "in ledger",
        "orgs",
        "mismatched",
        suite,
        report.requests,
        report.deliveries,
        report.events,
        report.acknowledged.len(),
        verdict.present,
        report.organizations.len(),
        verdict.mismatched.len(),
        answers.join(", "),
        report
            .acknowledged_as
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict.failed_in_ledger.len()
    )
}
