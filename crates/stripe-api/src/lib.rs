//! The calls billing-sync makes to the Stripe API: creating Billing Portal and Checkout sessions,
//! listing and retrieving current objects. Timeouts, bounded retries (under one `Idempotency-Key` for
//! writes), and errors that name Stripe's `request-id`, never the key.

use std::time::Duration;

use billing_sync_upstream::RetryPolicy;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The Stripe API version requests are pinned to (that of the payloads we project).
pub const STRIPE_VERSION: &str = "2026-07-29.dahlia";

/// Why no portal session could be created.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached, or did not answer in time.
    #[error("Stripe did not answer: {0}")]
    Transport(String),
    /// Stripe answered with an error.
    #[error("Stripe answered {status} ({code}): {message} (request-id {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe's `error.code` or `error.type`.
        code: String,
        /// Stripe's `error.message`: what it says went wrong (a key it refuses is shown masked
        /// by Stripe itself).
        message: String,
        /// Stripe's `request-id` header, for support.
        request_id: String,
    },
    /// Stripe's answer to a retrieval was not a JSON object.
    #[error("Stripe's answer is not an object (request-id {request_id})")]
    BadObject {
        /// Stripe's `request-id` header.
        request_id: String,
    },
    /// Stripe's answer was not a session with an absolute https `url`.
    #[error("Stripe's answer is not a session with an https url (request-id {request_id})")]
    BadSession {
        /// Stripe's `request-id` header.
        request_id: String,
    },
}

/// Whether `id` is written in the alphabet of Stripe's object ids (`cus_…`, `sub_…`, `cs_…`:
/// ASCII letters, digits and `_`), and so can name an object in a request's path. An id in a
/// delivered event that is not cannot be looked up: `.` or `..` would move up the path even
/// percent-encoded.
pub fn is_object_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where and how to call Stripe. A clone shares the connection pool.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: reqwest::Url,
    secret_key: SecretString,
}

/// One page of a Stripe list: `{object: "list", data, has_more}`.
#[derive(Debug, Deserialize)]
pub struct ListPage {
    /// The objects, in Stripe's order (newest first).
    pub data: Vec<serde_json::Value>,
    /// Whether another page follows (ask for it with `starting_after` = the last id).
    pub has_more: bool,
}

impl ListPage {
    /// The `starting_after` of the next page: the last object's id, when another page follows.
    pub fn next_cursor(&self) -> Option<String> {
        if !self.has_more {
            return None;
        }
        self.data
            .last()
            .and_then(|object| object.get("id"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    }
}

/// A Billing Portal or Checkout session: only its `url` is used.
#[derive(Deserialize)]
struct Session {
    url: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl StripeClient {
    /// A client for `api_base` (e.g. `https://api.stripe.com`; an http(s) URL, as the
    /// settings check) with these timeouts.
    pub fn new(
        api_base: reqwest::Url,
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
            api_base,
            secret_key,
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
        let url = self.endpoint(&["billing_portal", "sessions"]);
        let result = self
            .send(RetryPolicy::INTERACTIVE, "create_portal_session", || {
                self.authorized(self.http.post(url.clone()))
                    .header("Idempotency-Key", &idempotency_key)
                    .form(&form)
            })
            .await;
        session_url(parse(result).await?)
    }

    /// A Checkout Session made of `form` (Stripe's form-encoded parameters, e.g.
    /// `line_items[0][price]`), created under `idempotency_key` so that a repeated request within
    /// Stripe's idempotency window returns the same session; its `url`.
    pub async fn create_checkout_session(
        &self,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let url = self.endpoint(&["checkout", "sessions"]);
        let result = self
            .send(RetryPolicy::INTERACTIVE, "create_checkout_session", || {
                self.authorized(self.http.post(url.clone()))
                    .header("Idempotency-Key", idempotency_key)
                    .form(form)
            })
            .await;
        session_url(parse(result).await?)
    }

    /// The current state of the object `id` of `resource` (`customers`, `subscriptions`), as
    /// Stripe's JSON. A deleted customer comes back as `{id, object, deleted: true}`.
    pub async fn retrieve(
        &self,
        resource: &str,
        id: &str,
    ) -> Result<serde_json::Value, StripeError> {
        let url = self.endpoint(&[resource, id]);
        let result = self
            .send(RetryPolicy::INTERACTIVE, "retrieve", || {
                self.authorized(self.http.get(url.clone()))
            })
            .await;
        let (request_id, body) = parse(result).await?;
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(object) if object.is_object() => Ok(object),
            _ => Err(StripeError::BadObject { request_id }),
        }
    }

    /// `{api_base}/v1/` and `segments`, each percent-encoded as one path segment (`/`, `?`,
    /// `#`). A segment that is all dots would still move up the path: an id from a delivered
    /// event must pass [`is_object_id`] first.
    fn endpoint(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.api_base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        url
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .bearer_auth(self.secret_key.expose_secret())
            .header("Stripe-Version", STRIPE_VERSION)
    }

    /// Sends the request `build` makes under `policy`, recording its latency.
    async fn send(
        &self,
        policy: RetryPolicy,
        operation: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        billing_sync_upstream::send(policy, "billing_sync_stripe_api_seconds", operation, build)
            .await
    }

    /// One page of the list endpoint at `path` (`["customers"]`, `["checkout", "sessions",
    /// id, "line_items"]`; each segment percent-encoded) with `query` (e.g. `limit`,
    /// `starting_after`, `status`), retried patiently through rate limiting.
    pub async fn list_page(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<ListPage, StripeError> {
        self.list_page_under(RetryPolicy::PATIENT, path, query)
            .await
    }

    /// [`Self::list_page`] retried under `policy`: [`RetryPolicy::INTERACTIVE`] where a
    /// caller is waiting (a live webhook delivery).
    pub async fn list_page_under(
        &self,
        policy: RetryPolicy,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<ListPage, StripeError> {
        let url = self.endpoint(path);
        let result = self
            .send(policy, "list", || {
                self.authorized(self.http.get(url.clone())).query(query)
            })
            .await;
        let (request_id, body) = parse(result).await?;
        serde_json::from_slice(&body).map_err(|_| StripeError::BadObject { request_id })
    }
}

/// The `request-id` and body of a successful answer, or the error it stands for.
async fn parse(
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(String, Vec<u8>), StripeError> {
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
        .map_err(|err| StripeError::Transport(err.without_url().to_string()))?
        .to_vec();
    if !status.is_success() {
        let detail = serde_json::from_slice::<ErrorEnvelope>(&body)
            .ok()
            .and_then(|e| e.error);
        let (code, message) = detail.map_or((None, None), |d| (d.code.or(d.kind), d.message));
        return Err(StripeError::Api {
            status: status.as_u16(),
            code: code.unwrap_or_else(|| "unknown".into()),
            message: message.unwrap_or_else(|| "no message".into()),
            request_id,
        });
    }
    Ok((request_id, body))
}

/// The absolute https `url` of a session Stripe answered with.
fn session_url((request_id, body): (String, Vec<u8>)) -> Result<String, StripeError> {
    let session: Session = serde_json::from_slice(&body).map_err(|_| StripeError::BadSession {
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

#[cfg(test)]
mod endpoint_tests {
    use super::StripeClient;
    use secrecy::SecretString;
    use std::time::Duration;

    /// An id from a delivered event is one path segment, whatever it holds.
    #[test]
    fn an_object_id_stays_one_path_segment() {
        let client = StripeClient::new(
            "https://api.stripe.com".parse().expect("URL"),
            SecretString::from("sk_test_x".to_owned()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("client");
        for (id, path) in [
            ("cus_123", "/v1/customers/cus_123"),
            (
                "cus_1/../../v1/charges",
                "/v1/customers/cus_1%2F..%2F..%2Fv1%2Fcharges",
            ),
            ("cus_1?expand[]=x#y", "/v1/customers/cus_1%3Fexpand[]=x%23y"),
        ] {
            let url = client.endpoint(&["customers", id]);
            assert_eq!(url.path(), path, "{id}");
            assert_eq!(url.query(), None, "{id}");
            assert_eq!(url.host_str(), Some("api.stripe.com"));
        }
    }

    #[test]
    fn only_stripes_id_alphabet_is_an_object_id() {
        for id in ["cus_123", "sub_1MowQVLkdIwHu7ixeRlqHVzs", "cs_test_a1B2"] {
            assert!(super::is_object_id(id), "{id}");
        }
        // A dot segment would move up the path even when percent-encoded.
        for id in ["", ".", "..", "cus_1/x", "cus 1", "cus_1?x", "cüs_1"] {
            assert!(!super::is_object_id(id), "{id}");
        }
    }
}
