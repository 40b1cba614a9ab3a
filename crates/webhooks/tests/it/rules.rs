//! The rules of the synced state that the permutation property does not single out: terminal
//! states stay terminal, replay obeys live ordering, and tombstones end memberships.

use billing_sync_projection::{Plan, Provider};
use billing_sync_store::entities::{stripe_customers, webhook_events};
use billing_sync_store::ledger::{EventStatus, Recorded};
use billing_sync_store::sea_orm::EntityTrait;
use billing_sync_testkit::scenarios::{ClerkIds, ScenarioEvent, clerk_lifecycle};
use billing_sync_testkit::state::{deliver, ledger_row, migrated_store, new_event, projection};
use billing_sync_testkit::{TestDatabase, each_backend};
use serde_json::json;

each_backend!(
    a_deleted_customer_is_never_resurrected_by_a_later_update,
    replaying_a_failed_event_applies_it_and_counts_the_attempt,
    replay_obeys_the_ordering_of_live_delivery,
    an_active_membership_ends_with_its_own_or_its_organization_or_user_tombstone,
    several_memberships_are_all_listed_and_deleted_ones_are_not,
    pruning_keeps_failed_and_recent_rows_and_ordering_stays_safe,
);

fn customer_event(id: &str, event_type: &str, created: i64, email: &str) -> ScenarioEvent {
    ScenarioEvent {
        provider: Provider::Stripe,
        event_id: format!("evt_{id}_{created}_{event_type}"),
        event_type: event_type.into(),
        timestamp: created,
        payload: json!({"id": format!("evt_{id}_{created}"), "object": "event", "created": created,
            "type": event_type, "livemode": false,
            "data": {"object": {"id": id, "object": "customer", "email": email,
                                "metadata": {"organization_id": "org_1"}}}}),
    }
}

/// Records a `customer.updated` of `id` at 10 as `failed`, as if the projection had refused it.
async fn record_failed(
    store: &billing_sync_store::Store,
    id: &str,
    email: &str,
) -> (billing_sync_projection::NewEvent, Recorded) {
    let event = new_event(&customer_event(id, "customer.updated", 10, email));
    let recorded = store
        .record_and_apply(&event, &Plan::Fail("simulated".into()))
        .await
        .expect("record");
    (event, recorded)
}

/// The organizations `user` is an active member of.
async fn active_organizations(store: &billing_sync_store::Store, user: &str) -> Vec<String> {
    store
        .active_memberships(user)
        .await
        .expect("query")
        .into_iter()
        .map(|m| m.organization_id)
        .collect()
}

async fn customer_row(store: &billing_sync_store::Store, id: &str) -> stripe_customers::Model {
    stripe_customers::Entity::find_by_id(id.to_owned())
        .one(store.connection())
        .await
        .expect("query")
        .expect("customer row")
}

async fn a_deleted_customer_is_never_resurrected_by_a_later_update(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    deliver(
        &store,
        &customer_event("cus_1", "customer.deleted", 10, "gone@example.com"),
    )
    .await;
    deliver(
        &store,
        &customer_event("cus_1", "customer.updated", 20, "back@example.com"),
    )
    .await;
    let row = customer_row(&store, "cus_1").await;
    assert!(row.deleted_at.is_some());
    assert_eq!(row.email.as_deref(), Some("gone@example.com"));
    assert_eq!(row.ordering_key, 10);
}

async fn replaying_a_failed_event_applies_it_and_counts_the_attempt(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    // As if an older build could not project it.
    let (event, recorded) = record_failed(&store, "cus_2", "a@example.com").await;
    assert_eq!(recorded, Recorded::New(EventStatus::Failed));
    assert!(
        stripe_customers::Entity::find_by_id("cus_2".to_owned())
            .one(store.connection())
            .await
            .expect("query")
            .is_none(),
        "a failed event changes nothing"
    );

    let row = ledger_row(&store, Provider::Stripe, &event.event_id)
        .await
        .expect("row");
    let status = billing_sync_webhooks::replay(&store, &projection(), None, &row)
        .await
        .expect("replay");
    assert_eq!(status, EventStatus::Processed);
    assert_eq!(
        customer_row(&store, "cus_2").await.email.as_deref(),
        Some("a@example.com")
    );
    let row: webhook_events::Model = ledger_row(&store, Provider::Stripe, &event.event_id)
        .await
        .expect("row");
    assert_eq!(row.status, "processed");
    assert_eq!(row.error, None);
    assert_eq!(row.attempts, 2);
}

async fn replay_obeys_the_ordering_of_live_delivery(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    deliver(
        &store,
        &customer_event("cus_3", "customer.updated", 20, "new@example.com"),
    )
    .await;
    let (old, _) = record_failed(&store, "cus_3", "old@example.com").await;
    let row = ledger_row(&store, Provider::Stripe, &old.event_id)
        .await
        .expect("row");
    billing_sync_webhooks::replay(&store, &projection(), None, &row)
        .await
        .expect("replay");
    assert_eq!(
        customer_row(&store, "cus_3").await.email.as_deref(),
        Some("new@example.com")
    );
}

async fn an_active_membership_ends_with_its_own_or_its_organization_or_user_tombstone(
    db: TestDatabase,
) {
    let store = migrated_store(&db.url).await;
    let ids = ClerkIds::new("m1");
    for event in clerk_lifecycle("m1") {
        deliver(&store, &event).await;
    }
    let admin = store
        .active_membership(&ids.admin, &ids.organization)
        .await
        .expect("query")
        .expect("the admin is an active member");
    assert_eq!(admin.role.as_deref(), Some("org:admin"));
    assert!(
        store
            .active_membership(&ids.member, &ids.organization)
            .await
            .expect("query")
            .is_none(),
        "the member's membership was deleted"
    );

    // Deleting the user ends the admin's membership for every reader.
    let user_deleted = ScenarioEvent {
        provider: Provider::Clerk,
        event_id: "msg_user_deleted".into(),
        event_type: "user.deleted".into(),
        timestamp: 1_716_883_300,
        payload: json!({"type": "user.deleted", "object": "event",
                        "data": {"id": ids.admin, "object": "user", "deleted": true}}),
    };
    deliver(&store, &user_deleted).await;
    assert!(
        store
            .active_membership(&ids.admin, &ids.organization)
            .await
            .expect("query")
            .is_none()
    );
    assert!(
        store
            .active_memberships(&ids.admin)
            .await
            .expect("query")
            .is_empty()
    );
}

async fn several_memberships_are_all_listed_and_deleted_ones_are_not(db: TestDatabase) {
    let store = migrated_store(&db.url).await;
    let first = ClerkIds::new("a");
    for event in clerk_lifecycle("a") {
        deliver(&store, &event).await;
    }
    // The same admin in a second organization, which is then deleted.
    let org = json!({"id": "org_second", "name": "Second", "updated_at": 1_716_883_200_000_i64});
    let membership = |n: &str, event_type: &str, ts: i64, data: serde_json::Value| ScenarioEvent {
        provider: Provider::Clerk,
        event_id: format!("msg_second_{n}"),
        event_type: event_type.into(),
        timestamp: ts,
        payload: json!({"type": event_type, "object": "event", "data": data}),
    };
    deliver(
        &store,
        &membership(
            "1",
            "organizationMembership.created",
            1_716_883_210,
            json!({
        "id": "orgmem_second", "role": "org:member", "organization": org,
        "public_user_data": {"user_id": first.admin}, "updated_at": 1_716_883_210_000_i64}),
        ),
    )
    .await;
    let orgs = active_organizations(&store, &first.admin).await;
    assert_eq!(
        orgs,
        vec![first.organization.clone(), "org_second".to_owned()]
    );

    deliver(
        &store,
        &membership(
            "2",
            "organization.deleted",
            1_716_883_400,
            json!({"id": "org_second", "deleted": true}),
        ),
    )
    .await;
    let orgs = active_organizations(&store, &first.admin).await;
    assert_eq!(orgs, vec![first.organization]);
}

async fn pruning_keeps_failed_and_recent_rows_and_ordering_stays_safe(db: TestDatabase) {
    use billing_sync_store::sea_orm::sea_query::Expr;
    use billing_sync_store::sea_orm::{ColumnTrait, QueryFilter};
    let store = migrated_store(&db.url).await;
    let older = customer_event("cus_p", "customer.updated", 10, "a@example.com");
    let newer = customer_event("cus_p", "customer.updated", 20, "b@example.com");
    deliver(&store, &older).await;
    deliver(&store, &newer).await;
    let ignored = ScenarioEvent {
        provider: Provider::Stripe,
        event_id: "evt_invoice_p".into(),
        event_type: "invoice.paid".into(),
        timestamp: 15,
        payload: json!({"id": "evt_invoice_p", "type": "invoice.paid", "created": 15,
                        "data": {"object": {"id": "in_p"}}}),
    };
    deliver(&store, &ignored).await;
    let (failed, _) = record_failed(&store, "cus_q", "q@example.com").await;
    // Everything so far was received 100 days ago.
    let long_ago = chrono::Utc::now() - chrono::Duration::days(100);
    webhook_events::Entity::update_many()
        .col_expr(webhook_events::Column::ReceivedAt, Expr::val(long_ago))
        .filter(webhook_events::Column::Id.gt(0))
        .exec(store.connection())
        .await
        .expect("age the ledger");
    let recent = customer_event("cus_r", "customer.updated", 30, "r@example.com");
    deliver(&store, &recent).await;

    let bound = chrono::Utc::now() - chrono::Duration::days(90);
    let deleted = store.prune_events(bound, 1).await.expect("prune");
    assert_eq!(
        deleted, 3,
        "two processed and one ignored row, one per batch"
    );
    let left: Vec<String> = store
        .list_events(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|row| row.event_id)
        .collect();
    assert_eq!(left, vec![failed.event_id.clone(), recent.event_id.clone()]);

    // The pruned older event delivered again is recorded anew but cannot regress the state.
    assert_eq!(
        deliver(&store, &older).await,
        Recorded::New(EventStatus::Processed)
    );
    assert_eq!(
        customer_row(&store, "cus_p").await.email.as_deref(),
        Some("b@example.com")
    );
}
