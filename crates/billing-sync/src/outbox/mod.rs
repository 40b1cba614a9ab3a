//! What leaves the service after commit: the publisher turns the outbox rows that ingestion
//! and the credit ledger bump (in the transaction of the change) into published states and
//! billing events ([`publisher`]); senders deliver the events to their destination
//! ([`event_sender`]: the app's webhook, [`app_webhook`], or Svix, [`svix_api`]) and the states
//! to Clerk's organization metadata ([`clerk_metadata`]).
//! Every replica runs them; leases in the database share the work (see
//! `billing_sync_store::outbox`).

pub mod app_webhook;
pub mod clerk_metadata;
pub mod event_sender;
pub mod publisher;
pub mod svix_api;

use std::sync::Arc;
use std::time::Duration;

use billing_sync_api::credits::Credits;
use billing_sync_api::plans::Plans;
use billing_sync_store::Store;

/// How long a lease lasts: longer than any one delivery may take ([`DELIVERY_TIMEOUT`]), so
/// that a lease lapses only when its holder is gone.
pub const LEASE: Duration = Duration::from_secs(60);

/// The longest a delivery to the app or to Clerk may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle loop looks for work: the delay from a commit to its delivery while
/// receivers are healthy is about this.
pub const POLL: Duration = Duration::from_millis(200);

/// How long a delivery that failed `attempts` times waits before the next: 5 s, then three
/// times longer each time, at most six hours; it is never given up (the event stays pending,
/// counted by the metrics, until the receiver takes it).
pub fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    Duration::from_secs(5u64.saturating_mul(3u64.saturating_pow(exponent)))
        .min(Duration::from_secs(6 * 3600))
}

/// How long a loop whose last batch was not full waits before the next: work is trickling
/// in, and waiting lets more of it (more organizations, and more changes of each) share the
/// next batch's lease, statement and delivery rather than each taking its own. Measured with
/// `./scripts/bench --bench outbox` (docs/proofs.md).
pub const GATHER: Duration = Duration::from_millis(100);

/// Runs `step` for as long as the process runs: again at once after it did a full `batch` of
/// work (it returns how much), after [`GATHER`] when it did less, after [`POLL`] when there
/// was none, after a second when it failed (the failure logged as `worker`'s; what it had
/// leased lapses and is done again).
pub(crate) async fn keep_working<F, Fut>(worker: &str, batch: u64, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    loop {
        match step().await {
            Ok(0) => tokio::time::sleep(POLL).await,
            Ok(done) if (done as u64) < batch => tokio::time::sleep(GATHER).await,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(worker, error = %err, "outbox: {worker} failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A lease token: who holds a row.
pub(crate) fn lease_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Where published billing goes, from `serve`'s settings.
pub struct Destinations {
    /// Where the billing events go: the app's webhook (`APP_WEBHOOK_URL`,
    /// `APP_WEBHOOK_SECRET`) or Svix (`SVIX_AUTH_TOKEN`); none, the feed only.
    pub events: Option<event_sender::EventDestination>,
    /// Clerk's Backend API (`CLERK_SECRET_KEY`, `CLERK_API_BASE`).
    pub clerk: Option<clerk_metadata::ClerkMetadata>,
    /// `CREDITS_LOW_BALANCE_THRESHOLD`: none, no `credits.balance_low`.
    pub low_balance_threshold: Option<i64>,
    /// Whether the feed has readers: `BILLING_API_KEYS` is set.
    pub feed: bool,
}

impl Destinations {
    /// Whether anyone can receive what is published. With nobody (no destination, no API key
    /// to read the feed with), nothing is published: the outbox rows still record every
    /// change, and a later start with a destination or a key publishes them.
    pub fn any(&self) -> bool {
        self.events.is_some() || self.clerk.is_some() || self.feed
    }
}

/// Starts the publisher, the senders configured and the backlog's metrics, for as long as the
/// process runs. Stopping loses nothing: what was not recorded as done is done again by the
/// next one to lease it (receivers deduplicate on the event id).
pub fn spawn(store: Store, plans: Arc<Plans>, credits: Arc<Credits>, destinations: Destinations) {
    if !destinations.any() {
        tracing::info!(
            "no billing destination (APP_WEBHOOK_URL, SVIX_AUTH_TOKEN, CLERK_SECRET_KEY) and no \
             BILLING_API_KEYS for the events feed: billing changes are recorded, not published"
        );
        return;
    }
    let publisher = publisher::Publisher {
        store: store.clone(),
        plans,
        credits,
        low_balance_threshold: destinations.low_balance_threshold,
    };
    tokio::spawn(publisher.run());
    let label = destinations
        .events
        .as_ref()
        .map_or("none", event_sender::EventDestination::label);
    if let Some(events) = destinations.events {
        tokio::spawn(events.run(store.clone()));
    }
    if let Some(clerk) = destinations.clerk {
        tokio::spawn(clerk.run(store.clone()));
    }
    tokio::spawn(report_backlog(store, label));
}

/// Publishes the outbox's backlog as gauges every few seconds; the events' destination is
/// named `events` (`app_webhook`, `svix`, or `none`: kept for the feed).
async fn report_backlog(store: Store, events: &'static str) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        match store.outbox_backlog(unix_now()).await {
            Ok(backlog) => {
                metrics::gauge!("billing_sync_outbox_unpublished").set(backlog.unpublished as f64);
                metrics::gauge!("billing_sync_outbox_pending", "destination" => events)
                    .set(backlog.webhook_pending as f64);
                metrics::gauge!("billing_sync_outbox_oldest_pending_seconds", "destination" => events)
                    .set(backlog.webhook_oldest_age as f64);
                metrics::gauge!("billing_sync_outbox_pending", "destination" => "clerk")
                    .set(backlog.clerk_pending as f64);
            }
            Err(err) => tracing::warn!(error = %err, "outbox: reading the backlog failed"),
        }
    }
}

/// When to try again after a failure at `now` (unix seconds, truncated): after the
/// receiver's `Retry-After` (seconds) when it said one (429, 503), else the backoff. A second
/// is added to `Retry-After`, as `now` may be up to a second behind the moment it answered.
pub(crate) fn next_attempt(now: i64, attempts: i64, retry_after: Option<u64>) -> i64 {
    let wait = match retry_after {
        Some(asked) => asked.saturating_add(1),
        None => backoff(attempts).as_secs(),
    };
    now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX))
}

/// The seconds of a `Retry-After` header (the delay form; a date is read as none).
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_comes_within_ten_seconds_and_later_ones_at_most_six_hours_apart() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(15));
        assert_eq!(backoff(100), Duration::from_secs(6 * 3600));
        // A day of attempts is a dozen or so: never given up.
        let day: u64 = (1..=12).map(|n| backoff(n).as_secs()).sum();
        assert!(day > 24 * 3600, "{day}");
    }

    #[test]
    fn retry_after_is_obeyed_over_the_backoff() {
        assert_eq!(next_attempt(100, 1, Some(30)), 131);
        assert_eq!(next_attempt(100, 1, None), 105);
        assert_eq!(next_attempt(100, 1, Some(0)), 101);
    }
}
