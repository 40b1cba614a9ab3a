//! What a provider's verified body is to the ledger: an event with its identity, date and
//! payload, and the plan its projection makes of it.

use std::sync::Arc;

use serde_json::Value;

use crate::json::text;
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
    /// projections read (see [`crate::stripe_event`]); U+0000 in its strings replaced by
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

/// The deepest nesting of arrays and objects a body may have: the depth serde_json parses a
/// tree to, and far beyond any provider's events (Stripe's nest about 8 levels).
pub const MAX_NESTING: usize = 128;

/// Refuses a body whose arrays and objects nest deeper than [`MAX_NESTING`], counted on its
/// bytes (outside strings), so that no reading of it — whole, sparse or skipped as raw text —
/// takes one that the whole tree could not be.
pub(crate) fn within_nesting(body: &[u8]) -> Result<(), NotAnEvent> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(NotAnEvent(format!(
                        "nests deeper than {MAX_NESTING} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The body as a JSON object (U+0000 replaced), and its text as received.
pub(crate) fn parse_json(body: &[u8]) -> Result<(Value, Arc<str>), NotAnEvent> {
    within_nesting(body)?;
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
pub(crate) fn has_nul(body: &[u8]) -> bool {
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
