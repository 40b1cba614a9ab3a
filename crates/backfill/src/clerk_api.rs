//! The reads a backfill makes from Clerk's Backend API: list pages of organizations, users and
//! organization memberships with `limit`/`offset`.

use std::time::Duration;

use billing_sync_upstream::RetryPolicy;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// Why a page could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ClerkError {
    /// Clerk could not be reached, or did not answer in time.
    #[error("Clerk did not answer: {0}")]
    Transport(String),
    /// Clerk answered with an error.
    #[error("Clerk answered {status} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The first `errors[].code`.
        code: String,
    },
    /// The answer was not a list.
    #[error("Clerk's answer to {0} is not a list")]
    BadPage(String),
}

/// One page of a Clerk list.
#[derive(Debug)]
pub struct ClerkPage {
    /// The objects.
    pub data: Vec<Value>,
    /// The number of objects in the whole list, when Clerk says (`/v1/users` answers a bare
    /// array and does not).
    pub total_count: Option<u64>,
}

/// Clerk's two list shapes: `{data, total_count}` and a bare array.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListBody {
    Paginated {
        data: Vec<Value>,
        total_count: Option<u64>,
    },
    Array(Vec<Value>),
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
}

/// A client of Clerk's Backend API.
pub struct ClerkClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: SecretString,
}

impl ClerkClient {
    /// A client for `api_base` (e.g. `https://api.clerk.com`) with a per-call timeout.
    pub fn new(
        api_base: &str,
        secret_key: SecretString,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()?;
        Ok(ClerkClient {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key,
        })
    }

    /// `GET /v1/{resource}?limit=…&offset=…&order_by=+created_at`, oldest first so that
    /// objects created during the listing land on later pages instead of shifting earlier ones.
    pub async fn list_page(
        &self,
        resource: &str,
        limit: u64,
        offset: u64,
    ) -> Result<ClerkPage, ClerkError> {
        let url = format!("{}/v1/{resource}", self.api_base);
        let (limit, offset) = (limit.to_string(), offset.to_string());
        let query = [
            ("limit", limit.as_str()),
            ("offset", offset.as_str()),
            ("order_by", "+created_at"),
        ];
        let response = billing_sync_upstream::send(
            RetryPolicy::PATIENT,
            "billing_sync_clerk_api_seconds",
            "list",
            || {
                self.http
                    .get(&url)
                    .bearer_auth(self.secret_key.expose_secret())
                    .query(&query)
            },
        )
        .await
        .map_err(|err| ClerkError::Transport(err.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| ClerkError::Transport(err.without_url().to_string()))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|body| body.errors.into_iter().next())
                .and_then(|error| error.code)
                .unwrap_or_else(|| "unknown".into());
            return Err(ClerkError::Api {
                status: status.as_u16(),
                code,
            });
        }
        match serde_json::from_slice::<ListBody>(&body) {
            Ok(ListBody::Paginated { data, total_count }) => Ok(ClerkPage { data, total_count }),
            Ok(ListBody::Array(data)) => Ok(ClerkPage {
                data,
                total_count: None,
            }),
            Err(_) => Err(ClerkError::BadPage(resource.to_owned())),
        }
    }
}
