//! Clerk's event projection on arbitrary JSON, as `stripe_projection` does for Stripe.
#![no_main]

use billing_sync_projection::clerk::project;
use billing_sync_projection::clerk_event;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 10] = [
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "user.created",
    "user.updated",
    "user.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
    "session.created",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    if let Ok(event) = clerk_event(body, "msg_fuzz".into(), 1_700_000_000) {
        let _ = project(&event);
    }
    if let Ok(data) = serde_json::from_slice::<serde_json::Value>(body) {
        let event_type = TYPES[usize::from(*first) % TYPES.len()];
        let envelope = serde_json::json!({"type": event_type, "object": "event", "data": data});
        let bytes = serde_json::to_vec(&envelope).expect("serializable");
        let event = clerk_event(&bytes, "msg_fuzz".into(), 1_700_000_000).expect("well formed");
        let _ = project(&event);
    }
});
