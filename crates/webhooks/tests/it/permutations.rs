//! The ordering property: whatever the delivery order, and with any duplicates, the synced state
//! ends exactly where in-order delivery puts it. Seeded, so a failure is reproducible.

use billing_sync_store::ledger::Recorded;
use billing_sync_testkit::scenarios::{
    ScenarioEvent, catalog_lifecycle, clerk_lifecycle, stripe_lifecycle,
};
use billing_sync_testkit::state::{deliver, migrated_store, state_of};
use billing_sync_testkit::{TestDatabase, each_backend};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Each case is one shuffled, duplicated delivery of a whole scenario.
const CASES: usize = 200;

each_backend!(
    stripe_events_in_any_order_with_duplicates_end_in_the_in_order_state,
    clerk_events_in_any_order_with_duplicates_end_in_the_in_order_state,
    catalog_and_entitlement_events_in_any_order_with_duplicates_end_in_the_in_order_state,
);

async fn catalog_and_entitlement_events_in_any_order_with_duplicates_end_in_the_in_order_state(
    db: TestDatabase,
) {
    check_permutations(db, catalog_lifecycle, 0x5EED_CA7A).await;
}

async fn stripe_events_in_any_order_with_duplicates_end_in_the_in_order_state(db: TestDatabase) {
    check_permutations(db, stripe_lifecycle, 0x5EED_5781).await;
}

async fn clerk_events_in_any_order_with_duplicates_end_in_the_in_order_state(db: TestDatabase) {
    check_permutations(db, clerk_lifecycle, 0x5EED_C1E4).await;
}

async fn check_permutations(db: TestDatabase, scenario: fn(&str) -> Vec<ScenarioEvent>, seed: u64) {
    let store = migrated_store(&db.url).await;
    let reference_ns = "inorderx";
    for event in scenario(reference_ns) {
        deliver(&store, &event).await;
    }
    let expected = state_of(&store, reference_ns).await;
    assert!(
        expected.len() >= 2,
        "the scenario projects rows: {expected:?}"
    );

    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..CASES {
        let ns = format!("p{case:04}x");
        let events = scenario(&ns);
        let mut deliveries = events.clone();
        deliveries.shuffle(&mut rng);
        for _ in 0..rng.random_range(0..=4) {
            let duplicate = events[rng.random_range(0..events.len())].clone();
            let at = rng.random_range(0..=deliveries.len());
            deliveries.insert(at, duplicate);
        }
        let mut first_deliveries = 0;
        for event in &deliveries {
            if deliver(&store, event).await != Recorded::Duplicate {
                first_deliveries += 1;
            }
        }
        assert_eq!(
            first_deliveries,
            events.len(),
            "each event is recorded once"
        );
        let actual = state_of(&store, &ns).await;
        let order: Vec<&str> = deliveries.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            actual, expected,
            "seed {seed:#x}, case {case}: delivery order {order:?} ended elsewhere than in-order delivery"
        );
    }
}
