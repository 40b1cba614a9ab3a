//! Stand-ins for what billing-sync sends to, real HTTP servers on 127.0.0.1: the app's webhook
//! endpoint (any path, Standard Webhooks headers recorded as sent) and Clerk's Backend API
//! organization metadata (`PATCH /v1/organizations/{id}/metadata`, deep-merged as Clerk does),
//! and Svix's API for messages (`POST /api/v1/app/{app_id}/msg`).
//! Both answer from a script first (status, `Retry-After`), then 200.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use poem::web::{Data, Path};
use poem::{EndpointExt, Response, Route, handler, patch, post};
use serde_json::{Value, json};

/// One scripted answer: a status and the `Retry-After` seconds to send with it.
pub type Scripted = (u16, Option<u64>);

/// A request a receiver got, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its headers, names in lower case.
    pub headers: HashMap<String, String>,
    /// Its body.
    pub body: Vec<u8>,
    /// The status the stand-in answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The header `name` (lower case), empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Scripted>>,
    received: Mutex<Vec<Received>>,
    /// Clerk's organizations' `public_metadata`.
    metadata: Mutex<HashMap<String, Value>>,
}

impl Receiver {
    /// Records the request and answers the next scripted status (200 when the script is spent).
    fn take(&self, request: &poem::Request, body: Vec<u8>) -> Scripted {
        let answer = self
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or((200, None));
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        self.received.lock().expect("lock").push(Received {
            at: Instant::now(),
            headers,
            body,
            status: answer.0,
        });
        answer
    }
}

fn answer((status, retry_after): Scripted, body: Value) -> Response {
    let mut response = Response::builder()
        .status(poem::http::StatusCode::from_u16(status).expect("status"))
        .content_type("application/json");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body(body.to_string())
}

#[handler]
async fn app_webhook(
    request: &poem::Request,
    body: Vec<u8>,
    state: Data<&Arc<Receiver>>,
) -> Response {
    let scripted = state.take(request, body);
    answer(scripted, json!({}))
}

/// Merges `patch` into `target` as Clerk's metadata endpoints do: objects key by key, anything
/// else replaced, a null removing the key.
fn deep_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    deep_merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[handler]
async fn clerk_metadata(
    request: &poem::Request,
    Path(organization): Path<String>,
    body: Vec<u8>,
    state: Data<&Arc<Receiver>>,
) -> Response {
    let scripted = state.take(request, body.clone());
    if scripted.0 != 200 {
        return answer(
            scripted,
            json!({"errors": [{"code": "too_many_requests", "message": "slow down"}]}),
        );
    }
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut metadata = state.metadata.lock().expect("lock");
    let stored = metadata
        .entry(organization.clone())
        .or_insert_with(|| json!({}));
    deep_merge(stored, &patch["public_metadata"]);
    answer(
        scripted,
        json!({"object": "organization", "id": organization, "public_metadata": stored}),
    )
}

#[handler]
async fn svix_message(
    request: &poem::Request,
    Path(app_id): Path<String>,
    body: Vec<u8>,
    state: Data<&Arc<Receiver>>,
) -> Response {
    let scripted = state.take(request, body.clone());
    if scripted.0 != 200 {
        return answer(
            scripted,
            json!({"code": "server_error", "detail": "scripted"}),
        );
    }
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event_id = message["eventId"].as_str().unwrap_or_default().to_owned();
    let mut seen = state.metadata.lock().expect("lock");
    if seen
        .insert(format!("{app_id}/{event_id}"), message.clone())
        .is_some()
    {
        return answer(
            (409, None),
            json!({"code": "conflict", "detail": "eventId exists"}),
        );
    }
    answer(
        (202, None),
        json!({"id": format!("msg_{event_id}"), "eventId": event_id,
               "eventType": message["eventType"], "payload": message["payload"],
               "timestamp": "2026-12-05T00:00:00Z"}),
    )
}

/// A receiver: the app's webhook endpoint, Clerk's metadata endpoint, or Svix's messages.
pub struct ReceiverStandIn {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<Receiver>,
}

impl ReceiverStandIn {
    /// The app's webhook endpoint: POST anywhere.
    pub async fn app() -> ReceiverStandIn {
        Self::start(|route| route.at("/*path", post(app_webhook))).await
    }

    /// Clerk's Backend API, for organization metadata.
    pub async fn clerk() -> ReceiverStandIn {
        Self::start(|route| route.at("/v1/organizations/:id/metadata", patch(clerk_metadata))).await
    }

    /// Svix's API, for messages (`POST /api/v1/app/{app_id}/msg`): 202 with the message,
    /// 409 for an `eventId` it has already.
    pub async fn svix() -> ReceiverStandIn {
        Self::start(|route| route.at("/api/v1/app/:app_id/msg", post(svix_message))).await
    }

    /// A receiver serving the routes `routes` adds, with a state of its own.
    async fn start(routes: impl FnOnce(Route) -> Route) -> ReceiverStandIn {
        let state = Arc::new(Receiver::default());
        let base_url = super::standins::serve(routes(Route::new()).data(state.clone())).await;
        ReceiverStandIn { base_url, state }
    }

    /// The next requests are answered these, one each.
    pub fn script(&self, answers: &[Scripted]) {
        self.state.script.lock().expect("lock").extend(answers);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Clerk's `public_metadata` of `organization`.
    pub fn metadata(&self, organization: &str) -> Value {
        self.state
            .metadata
            .lock()
            .expect("lock")
            .get(organization)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Sets Clerk's `public_metadata` of `organization`, as the app's own code would.
    pub fn set_metadata(&self, organization: &str, metadata: Value) {
        self.state
            .metadata
            .lock()
            .expect("lock")
            .insert(organization.to_owned(), metadata);
    }
}
