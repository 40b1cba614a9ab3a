//! What a provider's verified body is to the ledger: an event with its identity, date and
//! payload, and the plan its projection makes of it.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::json::{integer, text};
use crate::state::{Change, RawJson};

/// Who sent an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Stripe, directly.
    Stripe,
    /// Clerk, through Svix.
    Clerk,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 2] = [Provider::Stripe, Provider::Clerk];

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
    /// The event as the projections read it: the whole event, or only the fields the
    /// projections read (see [`stripe_event`]); U+0000 in its strings replaced by
    /// [`NUL_REPLACEMENT`].
    pub payload: Value,
    /// The event's JSON text exactly as received: what the ledger stores, byte for byte.
    pub payload_text: Arc<str>,
    /// Stripe's `data.object` exactly as received: the `raw` column of the object's row (else,
    /// for an object not delivered as text, `raw` is serialised from `payload`).
    pub object_text: Option<RawJson>,
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

impl Plan {
    /// The changes to apply: none unless the plan is to apply them.
    pub fn changes(&self) -> &[Change] {
        match self {
            Plan::Apply(changes) => changes,
            Plan::Ignore | Plan::Fail(_) => &[],
        }
    }
}

/// A verified body that is not an event we can read (answered 400: the provider's retries
/// would carry the same bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnEvent(pub String);

/// A verified Stripe body as the ledger's event: it must be a JSON object with a string `id`,
/// a string `type` and an integer `created`.
///
/// Read without building the body's whole tree when it can be: the envelope's fields and the
/// text of `data.object` come from one pass over the body, and the object is then parsed
/// keeping only the fields its projection reads (`payload` holds just those, `object_text` the
/// object as delivered, for the `raw` column). Anything that pass does not take as it is (a
/// `\u0000`, a field of another type, a repeated envelope field, not JSON) is read through the
/// whole tree instead ([`stripe_event_from_tree`]), which also words every refusal; both
/// project the same.
pub fn stripe_event(body: &[u8]) -> Result<NewEvent, NotAnEvent> {
    match stripe_event_from_envelope(body) {
        Some(event) => Ok(event),
        None => stripe_event_from_tree(body),
    }
}

/// The envelope fields of a Stripe event, borrowed from the body.
#[derive(serde::Deserialize)]
struct StripeEnvelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    event_type: Cow<'a, str>,
    created: i64,
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(borrow, default)]
    data: Option<StripeEnvelopeData<'a>>,
}

#[derive(serde::Deserialize)]
struct StripeEnvelopeData<'a> {
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

/// [`stripe_event`]'s one pass, or `None` when the body needs the whole tree.
fn stripe_event_from_envelope(body: &[u8]) -> Option<NewEvent> {
    if has_nul(body) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let envelope: StripeEnvelope<'_> = serde_json::from_str(text).ok()?;
    if envelope.id.is_empty() {
        return None;
    }
    let object = envelope.data.as_ref().and_then(|data| data.object);
    let (payload, object_text) = match (object, crate::stripe::shape_of(&envelope.event_type)) {
        (Some(object), Some(shape)) => (
            serde_json::json!({"data": {"object": crate::sparse::parse(object.get(), shape).ok()?}}),
            Some(RawJson::from_parsed_text(object.get())),
        ),
        // A type no projection reads (ignored), or no object to read (the projection fails
        // for want of `data.object`): nothing to keep.
        _ => (Value::Object(serde_json::Map::new()), None),
    };
    Some(NewEvent {
        provider: Provider::Stripe,
        event_id: envelope.id.into_owned(),
        event_type: envelope.event_type.into_owned(),
        api_version: envelope.api_version.map(Cow::into_owned),
        livemode: envelope.livemode,
        event_created: Some(envelope.created),
        payload,
        payload_text: Arc::from(text),
        object_text,
    })
}

/// A verified Stripe body read through its whole JSON tree: the reference reading, used when
/// [`stripe_event`]'s one pass cannot take the body as it is.
pub fn stripe_event_from_tree(body: &[u8]) -> Result<NewEvent, NotAnEvent> {
    let (payload, payload_text) = parse_json(body)?;
    // The object's text as delivered, for `raw`: the tree would round integers beyond 64 bits
    // and drop what it replaced.
    let object_text = serde_json::from_str::<StripeObjectText<'_>>(&payload_text)
        .ok()
        .and_then(|envelope| envelope.data?.object)
        .filter(|object| object.get().starts_with('{'))
        .map(|object| RawJson::from_parsed_text(object.get()));
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
        object_text,
    })
}

/// Only the text of a Stripe event's `data.object`.
#[derive(serde::Deserialize)]
struct StripeObjectText<'a> {
    #[serde(borrow, default)]
    data: Option<StripeEnvelopeData<'a>>,
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
        object_text: None,
    })
}

/// The body as a JSON object (U+0000 replaced), and its text as received.
fn parse_json(body: &[u8]) -> Result<(Value, Arc<str>), NotAnEvent> {
    let text = std::str::from_utf8(body).map_err(|err| NotAnEvent(format!("not UTF-8: {err}")))?;
    let mut value: Value =
        serde_json::from_str(text).map_err(|err| NotAnEvent(format!("not JSON: {err}")))?;
    if !value.is_object() {
        return Err(NotAnEvent("not a JSON object".into()));
    }
    if has_nul(body) {
        replace_nul(&mut value);
    }
    Ok((value, Arc::from(text)))
}

/// Whether the body carries U+0000, which JSON can carry only as the escape `\u0000`.
fn has_nul(body: &[u8]) -> bool {
    body.windows(6).any(|window| window == b"\\u0000")
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
