//! Feeding scenario events through the projections into a store, and reading back the state
//! a namespace ended in.

#![allow(dead_code)]

use billing_sync_store::Store;
use billing_sync_store::entities::{
    organization_memberships, organizations, stripe_customers, stripe_subscriptions, users,
};
use billing_sync_store::ledger::{NewEvent, Recorded};
use billing_sync_store::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use billing_sync_testkit::scenarios::ScenarioEvent;
use billing_sync_webhooks::Projectors;
use billing_sync_webhooks::clerk::CLERK;
use billing_sync_webhooks::stripe::STRIPE;

pub fn projectors() -> Projectors {
    Projectors {
        stripe_org_metadata_key: "organization_id".into(),
    }
}

pub fn new_event(event: &ScenarioEvent) -> NewEvent {
    let provider = if event.provider == "stripe" {
        STRIPE
    } else {
        CLERK
    };
    NewEvent {
        provider,
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        api_version: event.payload["api_version"].as_str().map(str::to_owned),
        livemode: event.payload["livemode"].as_bool(),
        event_created: Some(event.timestamp),
        payload: event.payload.clone(),
    }
}

/// Records and applies `event` as the live pipeline does after verification.
pub async fn deliver(store: &Store, event: &ScenarioEvent) -> Recorded {
    let event = new_event(event);
    let plan = projectors().plan(&event);
    store
        .record_and_apply(&event, &plan)
        .await
        .expect("record and apply")
}

pub async fn migrated_store(url: &str) -> Store {
    let store = Store::connect(url).await.expect("connect");
    store.migrate_up().await.expect("migrate");
    store
}

/// Every synced row of namespace `ns`, with `synced_at` (when we wrote it, not what) blanked
/// and the namespace replaced, so that two namespaces' states compare equal when they are.
pub async fn state_of(store: &Store, ns: &str) -> Vec<String> {
    let db = store.connection();
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut rows = Vec::new();
    for mut row in organizations::Entity::find()
        .filter(organizations::Column::Id.contains(ns))
        .order_by_asc(organizations::Column::Id)
        .all(db)
        .await
        .expect("organizations")
    {
        row.synced_at = epoch;
        rows.push(format!("{row:?}"));
    }
    for mut row in users::Entity::find()
        .filter(users::Column::Id.contains(ns))
        .order_by_asc(users::Column::Id)
        .all(db)
        .await
        .expect("users")
    {
        row.synced_at = epoch;
        rows.push(format!("{row:?}"));
    }
    for mut row in organization_memberships::Entity::find()
        .filter(organization_memberships::Column::Id.contains(ns))
        .order_by_asc(organization_memberships::Column::Id)
        .all(db)
        .await
        .expect("memberships")
    {
        row.synced_at = epoch;
        rows.push(format!("{row:?}"));
    }
    for mut row in stripe_customers::Entity::find()
        .filter(stripe_customers::Column::Id.contains(ns))
        .order_by_asc(stripe_customers::Column::Id)
        .all(db)
        .await
        .expect("customers")
    {
        row.synced_at = epoch;
        rows.push(format!("{row:?}"));
    }
    for mut row in stripe_subscriptions::Entity::find()
        .filter(stripe_subscriptions::Column::Id.contains(ns))
        .order_by_asc(stripe_subscriptions::Column::Id)
        .all(db)
        .await
        .expect("subscriptions")
    {
        row.synced_at = epoch;
        rows.push(format!("{row:?}"));
    }
    rows.into_iter().map(|row| row.replace(ns, "NS")).collect()
}
