//! A batch of events goes to PostgreSQL as one message with its values written in as literals
//! (`billing_sync_store::ledger`). Whatever text a signed event carries — quotes, backslashes,
//! control characters, SQL of its own, any Unicode — must come back from the database exactly
//! as it went in, and must never be read as SQL. Random text through the public recording path,
//! read back from the ledger and a projected row, on both backends.

use std::sync::Arc;

use billing_sync_projection::{
    Change, CustomerState, NewEvent, Plan, Provider, Rank, RawJson, SyncedRow, Version,
};
use billing_sync_store::Store;
use billing_sync_store::entities::stripe_customers;
use billing_sync_store::ledger::{EventStatus, Recorded};
use billing_sync_store::sea_orm::EntityTrait;
use billing_sync_testkit::state::ledger_row;
use billing_sync_testkit::{TestDatabase, each_backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

each_backend!(any_text_an_event_carries_comes_back_as_it_went_in);

const CASES: u64 = 100;

/// Pieces that a literal writer could get wrong, and plain text around them.
const PIECES: [&str; 22] = [
    "'",
    "''",
    "\\",
    "\\'",
    "\"",
    "E'",
    "$1",
    "$$",
    "$tag$",
    ";",
    "--",
    "/*",
    "*/",
    "'); DROP TABLE webhook_events; --",
    "\u{1}",
    "\t",
    "\n",
    "\r",
    "\u{7f}",
    "é",
    "😀",
    "\u{2028}",
];

fn random_text(rng: &mut StdRng) -> String {
    (0..rng.random_range(0..12))
        .map(|_| match rng.random_range(0..3) {
            0 => "plain".to_owned(),
            1 => char::from_u32(rng.random_range(1..0x2FFFF))
                .filter(|c| *c != '\0')
                .map_or_else(|| "x".to_owned(), String::from),
            _ => PIECES[rng.random_range(0..PIECES.len())].to_owned(),
        })
        .collect()
}

async fn any_text_an_event_carries_comes_back_as_it_went_in(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..CASES {
        let batch: Vec<(NewEvent, Plan)> = (0..rng.random_range(1..4))
            .map(|n| {
                let event_id = format!("evt_{case}_{n}_{}", random_text(&mut rng));
                let customer_id = format!("cus_{case}_{n}_{}", random_text(&mut rng));
                let name = random_text(&mut rng);
                let object =
                    json!({"id": customer_id, "name": name, "note": random_text(&mut rng)});
                let payload = json!({"id": event_id, "type": "customer.updated",
                                     "data": {"object": object}});
                let payload_text: Arc<str> = serde_json::to_string(&payload).expect("JSON").into();
                let event = NewEvent {
                    provider: Provider::Stripe,
                    event_id: event_id.clone(),
                    event_type: random_text(&mut rng),
                    api_version: Some(random_text(&mut rng)),
                    livemode: Some(false),
                    event_created: Some(1_700_000_000),
                    payload,
                    payload_text,
                    object_text: None,
                };
                let change = Change::Customer(CustomerState {
                    row: SyncedRow {
                        id: customer_id,
                        raw: RawJson::of(&object),
                        version: Version {
                            key: 1,
                            rank: Rank::Update,
                        },
                        deleted_at: None,
                    },
                    organization_id: Some(random_text(&mut rng)),
                    email: Some(random_text(&mut rng)),
                    name: Some(name),
                    livemode: false,
                });
                (event, Plan::Apply(vec![change]))
            })
            .collect();
        let recorded = store.record_batch(&batch).await.expect("recorded");
        assert!(
            recorded
                .iter()
                .all(|r| *r == Recorded::New(EventStatus::Processed)),
            "case {case}: {recorded:?}"
        );
        for (event, plan) in &batch {
            let row = ledger_row(&store, Provider::Stripe, &event.event_id)
                .await
                .unwrap_or_else(|| panic!("case {case}: no ledger row for {:?}", event.event_id));
            assert_eq!(row.event_type, event.event_type, "case {case}");
            assert_eq!(row.api_version, event.api_version, "case {case}");
            assert_eq!(row.payload.as_str(), &*event.payload_text, "case {case}");
            let Plan::Apply(changes) = plan else {
                unreachable!()
            };
            let Change::Customer(state) = &changes[0] else {
                unreachable!()
            };
            let customer = stripe_customers::Entity::find_by_id(state.row.id.clone())
                .one(store.connection())
                .await
                .expect("query")
                .unwrap_or_else(|| panic!("case {case}: no customer {:?}", state.row.id));
            assert_eq!(customer.name, state.name, "case {case}");
            assert_eq!(customer.email, state.email, "case {case}");
            assert_eq!(
                customer.organization_id, state.organization_id,
                "case {case}"
            );
            assert_eq!(
                customer.raw.as_deref(),
                Some(state.row.raw.as_str()),
                "case {case}"
            );
        }
    }
}
