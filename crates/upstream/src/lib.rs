//! Calling third-party HTTP APIs (Stripe, Clerk): one retry loop for every call, with
//! exponential backoff and jitter, `Retry-After` and `Stripe-Should-Retry` honoured, and a
//! latency histogram labelled by operation and outcome.

use std::time::Duration;

/// How persistently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// The longest delay, whatever the backoff or `Retry-After` says.
    pub max_delay: Duration,
    /// Whether a timed-out attempt is retried (safe for reads; a write may have landed).
    pub retry_timeouts: bool,
}

impl RetryPolicy {
    /// For calls a person is waiting on (a portal redirect): two quick retries, no retry
    /// after a timeout.
    pub const INTERACTIVE: RetryPolicy = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        retry_timeouts: false,
    };

    /// For reads in a batch job (a backfill): rides out rate limiting and short outages,
    /// about two minutes in all before giving up.
    pub const PATIENT: RetryPolicy = RetryPolicy {
        max_retries: 8,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
        retry_timeouts: true,
    };

    /// The delay before retry number `retry` (1-based), before jitter.
    fn backoff(&self, retry: u32) -> Duration {
        self.base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay)
    }
}

/// Sends the request `build` makes, retrying connection errors (and timeouts when the policy
/// allows), 409, 429 and 5xx answers, unless the answer says `Stripe-Should-Retry: false`.
/// A `Retry-After` of whole seconds lengthens the wait. Each attempt is recorded in the
/// histogram `metric` with the labels `operation` and `outcome` (`ok`, the status,
/// `timeout` or `connection_error`).
pub async fn send(
    policy: RetryPolicy,
    metric: &'static str,
    operation: &'static str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut retry = 0;
    loop {
        let started = std::time::Instant::now();
        let result = build().send().await;
        let outcome = match &result {
            Ok(response) if response.status().is_success() => "ok".to_owned(),
            Ok(response) => response.status().as_u16().to_string(),
            Err(err) if err.is_timeout() => "timeout".to_owned(),
            Err(_) => "connection_error".to_owned(),
        };
        metrics::histogram!(metric, "operation" => operation, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let (retryable, retry_after) = match &result {
            Err(err) if err.is_timeout() => (policy.retry_timeouts, None),
            // A broken connection mid-request is retried only where a repeat is harmless.
            Err(err) => (
                err.is_connect() || (policy.retry_timeouts && err.is_request()),
                None,
            ),
            Ok(response) => (is_retryable(response), retry_after(response)),
        };
        if !retryable || retry >= policy.max_retries {
            return result;
        }
        retry += 1;
        let delay = policy
            .backoff(retry)
            .max(retry_after.unwrap_or_default())
            .min(policy.max_delay)
            + Duration::from_millis(rand::random_range(0..50));
        let (url, cause) = match &result {
            Ok(response) => (
                Some(response.url()),
                format!("answered {}", response.status()),
            ),
            Err(err) => (err.url(), causes(err)),
        };
        tracing::warn!(
            operation,
            url = url.map(without_query).unwrap_or_default(),
            cause,
            retry,
            of = policy.max_retries,
            delay_ms = delay.as_millis() as u64,
            "retrying an upstream API call"
        );
        tokio::time::sleep(delay).await;
    }
}

/// `err` and each error under it, outermost first: reqwest's own message ("error sending
/// request") says nothing of why; the OS's under it does ("Connection refused").
fn causes(err: &reqwest::Error) -> String {
    // reqwest's message names the URL with its query; the log names it once, without.
    let message = err.to_string();
    let mut text = match message.split_once(" for url (") {
        Some((before, _)) => before.to_owned(),
        None => message,
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A URL as logged: without its query, which may carry what a log should not.
fn without_query(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

fn is_retryable(response: &reqwest::Response) -> bool {
    let status = response.status().as_u16();
    let should_retry = response
        .headers()
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok());
    should_retry != Some("false") && (status == 409 || status == 429 || status >= 500)
}

/// `Retry-After` in whole seconds (the form Clerk and most APIs send).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::PATIENT;
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(2), Duration::from_secs(1));
        assert_eq!(policy.backoff(4), Duration::from_secs(4));
        assert_eq!(policy.backoff(8), Duration::from_secs(30));
        assert_eq!(policy.backoff(40), Duration::from_secs(30));
    }
}
