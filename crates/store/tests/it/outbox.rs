//! Publishing appends each organization's events once per version and never an older version
//! after a newer one, whatever is done again: a publication whose second step (the outbox row's
//! `published`, committed without waiting for the flush) a crash lost, a publisher that lost
//! its lease, a stale one that read an older version — on both backends.

use billing_sync_store::Store;
use billing_sync_store::outbox::{NewBillingEvent, Published, Unpublished};
use billing_sync_store::sea_orm::{ConnectionTrait, Statement};
use billing_sync_testkit::{TestDatabase, each_backend};

each_backend!(a_publication_done_again_appends_nothing_twice_and_nothing_older);

const NOW: i64 = 1_800_000_000;

async fn execute(store: &Store, sql: &str) {
    store
        .connection()
        .execute_raw(Statement::from_string(store.backend(), sql))
        .await
        .expect(sql);
}

/// Leases every unpublished organization for `lease`.
async fn lease(store: &Store, lease: &str) -> Vec<Unpublished> {
    store
        .lease_unpublished(lease, NOW, NOW + 60, 32)
        .await
        .expect("lease")
}

fn updated(id: &str) -> Vec<NewBillingEvent> {
    vec![NewBillingEvent {
        id: id.to_owned(),
        event_type: "billing.updated".to_owned(),
        data: format!("{{\"from\":\"{id}\"}}"),
    }]
}

async fn publish(store: &Store, lease: &str, leased: &Unpublished, events: &[NewBillingEvent]) {
    store
        .publish(
            lease,
            &[Published {
                leased,
                state: "{}",
                events,
            }],
            NOW,
        )
        .await
        .expect("publish");
}

/// The ids of the events appended, in commit order.
async fn appended(store: &Store) -> Vec<String> {
    store
        .billing_events_after(0, 100)
        .await
        .expect("the events")
        .into_iter()
        .map(|event| event.id)
        .collect()
}

async fn a_publication_done_again_appends_nothing_twice_and_nothing_older(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    execute(
        &store,
        "INSERT INTO billing_outbox (organization_id, changes) VALUES ('org_a', 3)",
    )
    .await;

    let first = lease(&store, "first").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].changes, 3);
    publish(&store, "first", &first[0], &updated("bse_first")).await;
    assert_eq!(appended(&store).await, ["bse_first"]);

    // The row's `published` lost in a crash: the organization is published again at the same
    // version, and appends nothing.
    execute(&store, "UPDATE billing_outbox SET published = 0").await;
    let again = lease(&store, "again").await;
    assert_eq!(again[0].changes, 3);
    publish(&store, "again", &again[0], &updated("bse_again")).await;
    assert_eq!(appended(&store).await, ["bse_first"]);
    assert!(lease(&store, "none").await.is_empty(), "published at 3");

    // A newer version is appended.
    execute(&store, "UPDATE billing_outbox SET changes = 5").await;
    let newer = lease(&store, "newer").await;
    publish(&store, "newer", &newer[0], &updated("bse_newer")).await;
    assert_eq!(appended(&store).await, ["bse_first", "bse_newer"]);

    // A publisher that read version 4 and whose lease lapsed and was taken over publishes
    // after the version 5: neither its lost lease nor its older version appends anything.
    execute(&store, "UPDATE billing_outbox SET changes = 6").await;
    let taken_over = lease(&store, "taken_over").await;
    let stale = Unpublished {
        changes: 4,
        ..taken_over[0].clone()
    };
    publish(&store, "lapsed", &stale, &updated("bse_lapsed")).await;
    execute(&store, "UPDATE billing_outbox SET lease = 'stale'").await;
    publish(&store, "stale", &stale, &updated("bse_stale")).await;
    assert_eq!(appended(&store).await, ["bse_first", "bse_newer"]);
}
