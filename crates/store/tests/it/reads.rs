//! The billing state's one statement reads what the portal's access check and the
//! subscriptions' list read on their own, on both backends: the same access, the same
//! subscriptions in the same order, none of another organization's.

use billing_sync_projection::{
    Change, CustomerState, Rank, RawJson, SubscriptionState, SyncedRow, Version,
};
use billing_sync_store::Store;
use billing_sync_store::changeset::{ChangeSet, apply_set};
use billing_sync_testkit::{TestDatabase, each_backend};
use chrono::{TimeZone, Utc};
use serde_json::json;

each_backend!(the_billing_state_reads_in_one_statement_what_the_two_reads_read);

fn row(id: &str, key: i64) -> SyncedRow {
    SyncedRow {
        id: id.into(),
        raw: RawJson::of(&json!({"id": id})),
        version: Version {
            key,
            rank: Rank::Update,
        },
        deleted_at: None,
    }
}

fn subscription(id: &str, key: i64, organization: &str, status: &str) -> Change {
    Change::Subscription(SubscriptionState {
        row: row(id, key),
        customer_id: format!("cus_{organization}"),
        organization_id: Some(organization.into()),
        status: status.into(),
        cancel_at_period_end: key % 2 == 0,
        cancel_at: None,
        canceled_at: None,
        ended_at: None,
        trial_end: Utc.timestamp_opt(1_800_000_000 + key, 0).single(),
        current_period_start: None,
        current_period_end: Utc.timestamp_opt(1_900_000_000 + key, 0).single(),
        items: json!([{"id": format!("si_{id}"), "price_id": "price_1", "product_id": "prod_1",
                       "quantity": key}]),
        livemode: false,
    })
}

async fn the_billing_state_reads_in_one_statement_what_the_two_reads_read(db: TestDatabase) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    let changes = [
        Change::Customer(CustomerState {
            row: row("cus_org_paying", 1),
            organization_id: Some("org_paying".into()),
            email: None,
            name: None,
            livemode: false,
        }),
        // Written out of order: the list is ordered by the subscriptions' own ordering.
        subscription("sub_oldest", 1, "org_paying", "canceled"),
        subscription("sub_newest", 3, "org_paying", "active"),
        subscription("sub_middle", 2, "org_paying", "past_due"),
        subscription("sub_other", 4, "org_other", "active"),
    ];
    apply_set(store.connection(), &ChangeSet::of(&changes))
        .await
        .expect("apply");
    let issued_at = Utc::now();
    for (organization, expected) in [
        ("org_paying", vec!["sub_newest", "sub_middle", "sub_oldest"]),
        // The free plan: no customer, no subscription, one row all the same.
        ("org_free", vec![]),
    ] {
        let (access, subscriptions) = store
            .organization_state("user_1", organization, issued_at)
            .await
            .expect("the billing state");
        assert_eq!(
            access,
            store
                .portal_access("user_1", organization, issued_at)
                .await
                .expect("the access")
        );
        assert_eq!(
            subscriptions,
            store
                .organization_subscriptions(organization)
                .await
                .expect("the subscriptions")
        );
        let ids: Vec<&str> = subscriptions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, expected, "{organization}");
    }
    let (access, _) = store
        .organization_state("user_1", "org_paying", issued_at)
        .await
        .expect("the billing state");
    assert_eq!(access.customer_id.as_deref(), Some("cus_org_paying"));
}
