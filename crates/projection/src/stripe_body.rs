//! A verified Stripe body read as the ledger's event: its envelope, and its object kept as
//! the object's projection reads it (the shapes of [`crate::stripe`]). Apart from
//! [`crate::event`], which holds the event types that the projections return, so that the two
//! modules do not call each other.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{NewEvent, NotAnEvent, Provider, has_nul, parse_json, within_nesting};
use crate::json::{integer, text};
use crate::state::RawJson;

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
    within_nesting(body)?;
    match stripe_event_from_envelope(body) {
        Some(event) => Ok(event),
        None => stripe_event_from_tree(body),
    }
}

/// Whether the two readings of `body` agree: [`stripe_event`] and [`stripe_event_from_tree`]
/// both refuse it alike, or both read the same envelope, keep the same text and project the
/// same changes with `projection`. The sparse reading's one check, which the fuzz target, the
/// committed samples' test and the shared fixtures' test each run on every body they have;
/// `Err` says how the readings differ.
pub fn readings_agree(body: &[u8], projection: &crate::Projection) -> Result<(), String> {
    match (stripe_event(body), stripe_event_from_tree(body)) {
        (Ok(sparse), Ok(whole)) => {
            let envelope = |event: &NewEvent| {
                (
                    event.event_id.clone(),
                    event.event_type.clone(),
                    event.event_created,
                    event.api_version.clone(),
                    event.livemode,
                )
            };
            if envelope(&sparse) != envelope(&whole) {
                return Err(format!(
                    "the envelopes differ: {:?} / {:?}",
                    envelope(&sparse),
                    envelope(&whole)
                ));
            }
            if sparse.payload_text != whole.payload_text {
                return Err("the bodies kept differ".into());
            }
            let (sparse, whole) = (projection.plan(&sparse), projection.plan(&whole));
            if sparse != whole {
                return Err(format!(
                    "the sparse reading projects {sparse:?}, the whole {whole:?}"
                ));
            }
            Ok(())
        }
        (Err(sparse), Err(whole)) if sparse == whole => Ok(()),
        (sparse, whole) => Err(format!("the readings disagree: {sparse:?} / {whole:?}")),
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
    // An id is compared as sent: one holding U+0000 would become another id once the tree's
    // U+0000 is replaced (U+FFFD), so it is refused. Stripe's ids never hold it; only a body
    // that holds `\u0000` somewhere is read again for its id.
    if has_nul(body)
        && serde_json::from_str::<StripeId>(&payload_text)
            .is_ok_and(|envelope| envelope.id.is_some_and(|id| id.contains('\0')))
    {
        return Err(NotAnEvent("the event `id` holds U+0000".into()));
    }
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

/// Only a Stripe event's `id`, unescaped as sent.
#[derive(serde::Deserialize)]
struct StripeId {
    #[serde(default)]
    id: Option<String>,
}

/// Only the text of a Stripe event's `data.object`.
#[derive(serde::Deserialize)]
struct StripeObjectText<'a> {
    #[serde(borrow, default)]
    data: Option<StripeEnvelopeData<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_with_object(object: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"evt_1","object":"event","type":"customer.updated","created":1,"data":{{"object":{object}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_body_nesting_deeper_than_the_limit_is_refused_whichever_reading_takes_it() {
        let deep = |levels: usize| {
            format!(
                r#"{{"id":"cus_1","object":"customer","deep":{}{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // The sparse reading skips the unread field as raw text, the tree would refuse it:
        // both refuse it, on its bytes.
        let refused = stripe_event(&event_with_object(&deep(200_000))).unwrap_err();
        assert!(refused.0.contains("deeper than 128"), "{refused}");
        assert!(stripe_event_from_tree(&event_with_object(&deep(200))).is_err());
        // Within the limit (the envelope and object take 3 levels), and brackets inside a
        // string count for nothing.
        assert!(stripe_event(&event_with_object(&deep(100))).is_ok());
        let bracketed = r#"{"id":"cus_1","object":"customer","name":"[[[[{{{{\"]]"}"#;
        assert!(
            stripe_event(&event_with_object(
                &bracketed.replace("[[[[", &"[".repeat(300))
            ))
            .is_ok()
        );
    }

    #[test]
    fn an_event_id_is_compared_as_sent_so_one_holding_nul_is_refused() {
        let body = |id: &str| {
            format!(
                r#"{{"id":"{id}","object":"event","type":"customer.updated","created":1,"data":{{"object":{{"id":"cus_1","object":"customer"}}}}}}"#
            )
            .into_bytes()
        };
        let refused = stripe_event(&body(r"evt_a\u0000b")).unwrap_err();
        assert!(refused.0.contains("U+0000"), "{refused}");
        // U+FFFD itself is an id like any other.
        assert_eq!(
            stripe_event(&body("evt_a\u{FFFD}b")).unwrap().event_id,
            "evt_a\u{FFFD}b"
        );
    }

    #[test]
    fn a_signed_client_reference_links_whichever_reading_takes_the_body() {
        let key = crate::ClientReferenceKey::new(&[9; 32]).expect("a key");
        let reference = key.sign("org_1", 2_000).expect("signed");
        let body = format!(
            r#"{{"id":"evt_1","object":"event","type":"checkout.session.completed","created":1,"data":{{"object":{{"id":"cs_1","object":"checkout.session","created":1000,"mode":"payment","customer":"cus_1","client_reference_id":"{reference}","metadata":{{}}}}}}}}"#
        )
        .into_bytes();
        let projection = crate::Projection {
            stripe_org_metadata_key: "organization_id".into(),
            client_reference_key: Some(key),
        };
        let sparse = projection.plan(&stripe_event(&body).expect("an event"));
        let tree = projection.plan(&stripe_event_from_tree(&body).expect("an event"));
        assert_eq!(sparse, tree);
        let crate::Plan::Apply(changes) = sparse else {
            panic!("a plan to apply: {sparse:?}")
        };
        assert!(
            matches!(&changes[..], [crate::Change::CustomerLink(link)] if link.organization_id == "org_1"),
            "{changes:?}"
        );
    }
}
