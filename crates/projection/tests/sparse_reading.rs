//! Stripe bodies are read sparsely (the envelope and the fields the projections read, see
//! `src/sparse.rs`); this holds that reading to the whole tree's on the sample objects committed
//! beside this file (`samples/`, written for these tests in the shape Stripe sends them: whole
//! objects, 0.7–4 KB), each inside an event of every type that carries it, as sent and
//! re-serialised compactly. The shared fixtures get the same check in the workspace's
//! integration tests when they are present; this one needs nothing outside the repository.

use std::path::PathBuf;

use billing_sync_projection::stripe::{Carried, projected_event_types};
use billing_sync_projection::{Plan, Projection, readings_agree, stripe_event};
use serde_json::{Value, json};

/// The sample object of `carried`'s kind. The match is exhaustive: a new kind of object fails
/// to compile here until it has a sample.
fn sample(carried: Carried) -> Value {
    let name = match carried {
        Carried::Customer => "customer",
        Carried::CheckoutSession => "checkout_session",
        Carried::Subscription => "subscription",
        Carried::Product => "product",
        Carried::Price => "price",
        Carried::EntitlementSummary => "entitlement_summary",
        Carried::Invoice => "invoice",
        Carried::Charge => "charge",
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/samples/{name}.json"));
    let text = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// An event of `event_type` carrying `object`, pretty (as Stripe sends it) and compact.
fn bodies(event_type: &str, object: &Value) -> [Vec<u8>; 2] {
    let event = json!({
        "id": "evt_SampleEvent01", "object": "event", "api_version": "2026-07-29.dahlia",
        "created": 1_764_960_000, "livemode": false, "pending_webhooks": 1,
        "request": {"id": "req_SampleRequest01", "idempotency_key": null},
        "type": event_type, "data": {"object": object, "previous_attributes": {"status": "x"}}
    });
    [
        serde_json::to_vec_pretty(&event).expect("JSON"),
        serde_json::to_vec(&event).expect("JSON"),
    ]
}

#[test]
fn every_projected_event_type_projects_the_same_read_sparsely_as_whole_on_the_samples() {
    let projection = Projection {
        stripe_org_metadata_key: "organization_id".into(),
        client_reference_key: None,
    };
    let mut checked = 0;
    for event_type in projected_event_types() {
        let carried = Carried::by(event_type).expect("a projected type carries an object");
        let object = sample(carried);
        for body in bodies(event_type, &object) {
            readings_agree(&body, &projection).unwrap_or_else(|difference| {
                panic!("{event_type}: {difference}");
            });
            let sparse = stripe_event(&body).expect("an event");
            assert!(
                sparse.object_text.is_some(),
                "{event_type}: not read sparsely"
            );
            let plan = projection.plan(&sparse);
            // A sample that projected to nothing, or failed, would check nothing of the fields
            // its projection reads.
            assert!(
                matches!(&plan, Plan::Apply(changes) if !changes.is_empty()),
                "{event_type}: the sample projects to {plan:?}"
            );
            // The raw object kept is the object as sent, whichever way it was read.
            let kept: Value =
                serde_json::from_str(sparse.object_text.as_ref().expect("checked above").as_str())
                    .expect("the kept object is JSON");
            assert_eq!(kept, object, "{event_type}: the kept object");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * projected_event_types().count());
}
