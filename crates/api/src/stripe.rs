//! The one Stripe API call the portal needs: `POST /v1/billing_portal/sessions`, with timeouts,
//! bounded retries under one `Idempotency-Key`, and errors that name Stripe's `request-id`,
//! never the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The Stripe API version requests are pinned to (that of the payloads we project).
pub const STRIPE_VERSION: &str = "2026-07-29.dahlia";
/// Retries after the first attempt.
const MAX_RETRIES: u32 = 2;

/// Why no portal session could be created.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached, or did not answer in time.
    #[error("Stripe did not answer: {0}")]
    Transport(String),
    /// Stripe answered with an error.
    #[error("Stripe answered {status} ({code}) request-id {request_id}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe's `error.code` or `error.type`.
        code: String,
        /// Stripe's `request-id` header, for support.
        request_id: String,
    },
    /// Stripe's answer was not a session with an absolute https `url`.
    #[error("Stripe's answer is not a portal session with an https url (request-id {request_id})")]
    BadSession {
        /// Stripe's `request-id` header.
        request_id: String,
    },
}

/// Where and how to call Stripe.
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: SecretString,
    backoff: Duration,
}

#[derive(Deserialize)]
struct PortalSession {
    url: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl StripeClient {
    /// A client for `api_base` (e.g. `https://api.stripe.com`) with these timeouts.
    pub fn new(
        api_base: &str,
        secret_key: SecretString,
        connect_timeout: Duration,
        total_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(StripeClient {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key,
            backoff: Duration::from_millis(100),
        })
    }

    /// A fresh Billing Portal session for `customer`; its `url`.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
        configuration: Option<&str>,
    ) -> Result<String, StripeError> {
        let mut form = vec![("customer", customer), ("return_url", return_url)];
        if let Some(configuration) = configuration {
            form.push(("configuration", configuration));
        }
        // One key for every attempt: a retry after a lost answer cannot create a second session.
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let url = format!("{}/v1/billing_portal/sessions", self.api_base);
        let mut attempt = 0;
        loop {
            let result = self
                .http
                .post(&url)
                .bearer_auth(self.secret_key.expose_secret())
                .header("Stripe-Version", STRIPE_VERSION)
                .header("Idempotency-Key", &idempotency_key)
                .form(&form)
                .send()
                .await;
            let retryable = match &result {
                // A timed-out request may have reached Stripe; the caller is waiting, so give up.
                Err(err) => err.is_connect() && !err.is_timeout(),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let should_retry = response
                        .headers()
                        .get("stripe-should-retry")
                        .and_then(|v| v.to_str().ok());
                    should_retry != Some("false")
                        && (status == 409 || status == 429 || status >= 500)
                }
            };
            if retryable && attempt < MAX_RETRIES {
                attempt += 1;
                let delay = self.backoff * 2u32.pow(attempt - 1)
                    + Duration::from_millis(rand::random_range(0..50));
                tracing::warn!(attempt, "retrying Stripe billing portal session");
                tokio::time::sleep(delay).await;
                continue;
            }
            return parse(result).await;
        }
    }
}

async fn parse(result: Result<reqwest::Response, reqwest::Error>) -> Result<String, StripeError> {
    let response = result.map_err(|err| StripeError::Transport(err.without_url().to_string()))?;
    let status = response.status();
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let body = response
        .bytes()
        .await
        .map_err(|err| StripeError::Transport(err.without_url().to_string()))?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<ErrorEnvelope>(&body)
            .ok()
            .and_then(|e| e.error);
        let code = detail
            .and_then(|d| d.code.or(d.kind))
            .unwrap_or_else(|| "unknown".into());
        return Err(StripeError::Api {
            status: status.as_u16(),
            code,
            request_id,
        });
    }
    let session: PortalSession =
        serde_json::from_slice(&body).map_err(|_| StripeError::BadSession {
            request_id: request_id.clone(),
        })?;
    match session.url {
        Some(url) if is_absolute_https(&url) => Ok(url),
        _ => Err(StripeError::BadSession { request_id }),
    }
}

fn is_absolute_https(url: &str) -> bool {
    url.strip_prefix("https://")
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::is_absolute_https;

    #[test]
    fn only_absolute_https_urls_are_redirect_targets() {
        assert!(is_absolute_https(
            "https://billing.stripe.com/p/session/test_abc"
        ));
        for url in [
            "http://billing.stripe.com/x",
            "https:///x",
            "/p/session",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!is_absolute_https(url), "{url}");
        }
    }
}
