//! Stripe's event projection on arbitrary JSON: a body becomes an event or is refused, and an
//! event becomes changes, is ignored or fails, never a panic. The first byte picks the event
//! type, so that every projection sees arbitrary objects.
#![no_main]

use billing_sync_projection::stripe::project;
use billing_sync_projection::{ClientReferenceKey, Plan, Projection, readings_agree, stripe_event};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 8] = [
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "checkout.session.completed",
    "invoice.paid",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    same_reading(body);
    // The same bytes as `data.object` of an event of the chosen type.
    if let Ok(object) = serde_json::from_slice::<serde_json::Value>(body) {
        let event_type = TYPES[usize::from(*first) % TYPES.len()];
        let envelope = serde_json::json!({"id": "evt_fuzz", "type": event_type,
            "created": 1_700_000_000, "data": {"object": object}});
        let bytes = serde_json::to_vec(&envelope).expect("serializable");
        same_reading(&bytes);
        let event = stripe_event(&bytes).expect("a well-formed envelope");
        if let Plan::Apply(changes) = project(&event, &projection()) {
            assert!(
                changes.len() <= 1,
                "a Stripe event changes at most one object"
            );
        }
    }
});

/// The projections' settings, with every way of linking a checkout's customer on (client
/// references verified with a fixed key).
fn projection() -> Projection {
    Projection {
        stripe_org_metadata_key: "organization_id".into(),
        client_reference_key: Some(ClientReferenceKey::new(&[7; 32]).expect("a 32-byte key")),
    }
}

/// The sparse reading of a body and its whole tree agree: both refuse it, or both read the same
/// event and project the same changes.
fn same_reading(body: &[u8]) {
    if let Err(difference) = readings_agree(body, &projection()) {
        panic!("{difference}");
    }
}
