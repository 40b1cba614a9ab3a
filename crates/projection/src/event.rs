//! What a provider's verified body is to the ledger: an event with its identity, date and
//! payload, and the plan its projection makes of it.

use serde_json::Value;

use crate::json::{integer, text};
use crate::state::Change;

/// Who sent an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Stripe, directly.
    Stripe,
    /// Clerk, through Svix.
    Clerk,
}

impl Provider {
    /// The ledger's `provider` column value: the one place the names are written.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::Clerk => "clerk",
        }
    }

    /// The provider a `provider` column value names, if any.
    pub fn from_column(value: &str) -> Option<Provider> {
        [Provider::Stripe, Provider::Clerk]
            .into_iter()
            .find(|provider| provider.as_str() == value)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified event, as the ledger records it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Who sent it.
    pub provider: Provider,
    /// The source's id of the event.
    pub event_id: String,
    /// The source's event type.
    pub event_type: String,
    /// Stripe's `api_version`.
    pub api_version: Option<String>,
    /// Stripe's `livemode`.
    pub livemode: Option<bool>,
    /// When the source says it happened (unix seconds).
    pub event_created: Option<i64>,
    /// The event as received.
    pub payload: Value,
    /// `payload`'s JSON text exactly as received, when `payload` was parsed from it unchanged:
    /// the ledger stores this text rather than serialising `payload` again. `None` otherwise.
    pub payload_text: Option<std::sync::Arc<str>>,
}

/// What to do with a recorded event, decided by its projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Apply these changes.
    Apply(Vec<Change>),
    /// A type we do not project: record it as `ignored`.
    Ignore,
    /// A shape we cannot project: record it as `failed` with this reason, to be replayed.
    Fail(String),
}

/// A verified body that is not an event we can read (answered 400: the provider's retries
/// would carry the same bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnEvent(pub String);

/// A verified Stripe body as the ledger's event: it must be a JSON object with a string `id`,
/// a string `type` and an integer `created`.
pub fn stripe_event(body: &[u8]) -> Result<NewEvent, NotAnEvent> {
    let (payload, payload_text) = parse_json(body)?;
    Ok(NewEvent {
        provider: Provider::Stripe,
        event_id: text(&payload, "id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| NotAnEvent("no string `id`".into()))?,
        event_type: text(&payload, "type").ok_or_else(|| NotAnEvent("no string `type`".into()))?,
        api_version: text(&payload, "api_version"),
        livemode: payload.get("livemode").and_then(Value::as_bool),
        event_created: Some(
            integer(&payload, "created")
                .ok_or_else(|| NotAnEvent("no integer `created`".into()))?,
        ),
        payload,
        payload_text,
    })
}

/// A verified Clerk body as the ledger's event, identified by its Svix message id and dated by
/// its `svix-timestamp`: it must be a JSON object with a string `type`.
pub fn clerk_event(
    body: &[u8],
    message_id: String,
    timestamp: i64,
) -> Result<NewEvent, NotAnEvent> {
    let (payload, payload_text) = parse_json(body)?;
    Ok(NewEvent {
        provider: Provider::Clerk,
        event_id: message_id,
        event_type: text(&payload, "type").ok_or_else(|| NotAnEvent("no string `type`".into()))?,
        api_version: None,
        livemode: None,
        event_created: Some(timestamp),
        payload,
        payload_text,
    })
}

/// The body as a JSON object, and its text when that is what the ledger may store as is (not
/// when U+0000 had to be replaced).
fn parse_json(body: &[u8]) -> Result<(Value, Option<std::sync::Arc<str>>), NotAnEvent> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|err| NotAnEvent(format!("not JSON: {err}")))?;
    if !value.is_object() {
        return Err(NotAnEvent("not a JSON object".into()));
    }
    // JSON can carry U+0000 only as the escape `\u0000`: look for it before walking the tree.
    if body.windows(6).any(|window| window == b"\\u0000") {
        replace_nul(&mut value);
        return Ok((value, None));
    }
    let text = std::str::from_utf8(body).ok().map(std::sync::Arc::from);
    Ok((value, text))
}

/// What U+0000 becomes in every string (and key) of a payload: PostgreSQL cannot store U+0000
/// in `jsonb` or `text`, and a signed event must be recorded, not refused forever. SQLite
/// could store it, but both backends record and project the same thing.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => {
            *text = text.replace('\0', &NUL_REPLACEMENT.to_string());
        }
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            if map.keys().any(|key| key.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(key, value)| (key.replace('\0', &NUL_REPLACEMENT.to_string()), value))
                    .collect();
            }
            map.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}
