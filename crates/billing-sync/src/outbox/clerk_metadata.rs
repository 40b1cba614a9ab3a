//! Clerk's organization metadata: `public_metadata.billing` of each organization kept equal to
//! its published billing state, through the Backend API (`PATCH /v1/organizations/{id}/metadata`,
//! which deep-merges: only the `billing` key is written, the app's other keys stay). A session
//! token template can then carry it (`{{org.public_metadata.billing}}`), so an app checks a
//! plan or a feature with no call at all.

use billing_sync_store::Store;
use billing_sync_store::outbox::ClerkUpdate;
use billing_sync_store::outbox::OutboxWork;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{
    DELIVERY_TIMEOUT, LEASE, keep_working, lease_token, next_attempt, retry_after, unix_now,
};

/// Organizations leased at a time, written concurrently (Clerk allows 100 requests per 10 s
/// per secret key; its 429s are obeyed).
const BATCH: u64 = 8;

/// The statuses of a subscription that bills (as `active` counts them).
const BILLING_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

/// Clerk's Backend API, for organization metadata.
pub struct ClerkMetadata {
    api_base: String,
    secret_key: SecretString,
    http: reqwest::Client,
}

impl ClerkMetadata {
    /// Writes with `secret_key` to the Backend API at `api_base` (no trailing slash).
    pub fn new(api_base: &str, secret_key: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ClerkMetadata {
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key,
            http,
        })
    }

    /// Writes for as long as the process runs.
    pub async fn run(self, store: Store) {
        keep_working("clerk metadata", BATCH, || self.write_some(&store)).await;
    }

    async fn write_some(&self, store: &Store) -> anyhow::Result<usize> {
        let now = unix_now();
        if !store.outbox_has(OutboxWork::Clerk, now).await? {
            return Ok(0);
        }
        let lease = lease_token();
        let updates = store
            .lease_clerk_updates(&lease, now, now + LEASE.as_secs() as i64, BATCH)
            .await?;
        let writes = updates.iter().map(|update| async {
            let outcome = match self.write(update).await {
                Ok(()) => {
                    metrics::counter!("billing_sync_outbox_sent_total", "destination" => "clerk")
                        .increment(1);
                    Ok(())
                }
                Err((retry_after, error)) => {
                    metrics::counter!("billing_sync_outbox_failed_total", "destination" => "clerk")
                        .increment(1);
                    tracing::warn!(organization_id = %update.organization_id, attempts = update.attempts, error = %error, "clerk metadata: write failed; will retry");
                    Err((next_attempt(unix_now(), update.attempts, retry_after), error))
                }
            };
            if let Err(err) = store.settle_clerk_update(&lease, update, outcome).await {
                tracing::warn!(organization_id = %update.organization_id, error = %err, "clerk metadata: recording the outcome failed");
            }
        });
        futures::future::join_all(writes).await;
        Ok(updates.len())
    }

    async fn write(&self, update: &ClerkUpdate) -> Result<(), (Option<u64>, String)> {
        let state: Value = serde_json::from_str(&update.state)
            .map_err(|err| (None, format!("the published state does not read: {err}")))?;
        let body = json!({"public_metadata": {"billing": claim(&state, update.version)}});
        let url = format!(
            "{}/v1/organizations/{}/metadata",
            self.api_base, update.organization_id
        );
        let response = self
            .http
            .patch(url)
            .bearer_auth(self.secret_key.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|err| (None, format!("sending: {err}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status == reqwest::StatusCode::NOT_FOUND {
            // Deleted in Clerk: there is no metadata to keep. Counted as written.
            tracing::warn!(organization_id = %update.organization_id, "clerk metadata: the organization is not in Clerk; skipped");
            Ok(())
        } else {
            Err((retry_after(&response), format!("answered {status}")))
        }
    }
}

/// What `public_metadata.billing` holds: small, for a session token (Clerk advises keeping
/// what a token carries under ~1.2 KB). `active` and `features` (the entitlements' lookup keys,
/// sorted), the billing subscription's `plan` (product id), `status` and `period_end` (unix
/// seconds), and the `version` it was published at.
pub fn claim(state: &Value, version: i64) -> Value {
    let subscriptions = state["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The subscription that bills, else the most recently changed.
    let current = subscriptions
        .iter()
        .find(|s| BILLING_STATUSES.contains(&s["status"].as_str().unwrap_or_default()))
        .or(subscriptions.first());
    let period_end = current
        .and_then(|s| s["current_period_end"].as_str())
        .and_then(|end| chrono::DateTime::parse_from_rfc3339(end).ok())
        .map(|end| end.timestamp());
    json!({
        "active": state["active"].as_bool().unwrap_or(false),
        "features": state["entitlements"].clone(),
        "plan": current.and_then(|s| s["items"][0]["product_id"].as_str()),
        "status": current.and_then(|s| s["status"].as_str()),
        "period_end": period_end,
        "version": version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_names_the_billing_subscription_and_stays_small() {
        let state = json!({
            "organization_id": "org_1", "active": true, "entitlements": ["api", "sso"],
            "credits_balance": 5,
            "subscriptions": [
                {"id": "sub_old", "status": "canceled", "items": [{"product_id": "prod_free"}]},
                {"id": "sub_1", "status": "active", "current_period_end": "2026-12-31T00:00:00Z",
                 "items": [{"product_id": "prod_team", "price_id": "price_1"}]}]});
        let claim = claim(&state, 7);
        assert_eq!(
            claim,
            json!({"active": true, "features": ["api", "sso"], "plan": "prod_team",
                   "status": "active", "period_end": 1_798_675_200, "version": 7})
        );
        assert!(claim.to_string().len() < 300);
    }
}
