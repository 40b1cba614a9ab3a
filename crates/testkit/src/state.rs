//! Feeding scenario events through the projections into a store, and reading back the state
//! a namespace ended in.

use crate::scenarios::ScenarioEvent;
use billing_sync_projection::{NewEvent, Projection, Provider};
use billing_sync_store::Store;
use billing_sync_store::entities::{
    organization_memberships, organizations, stripe_customers, stripe_entitlement_summaries,
    stripe_prices, stripe_products, stripe_subscriptions, users, webhook_events,
};
use billing_sync_store::ledger::Recorded;
use billing_sync_store::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

/// The projections with the default metadata key.
pub fn projection() -> Projection {
    Projection {
        stripe_org_metadata_key: "organization_id".into(),
        client_reference_key: None,
    }
}

/// The ledger's view of a scenario event, as the server builds it after verification.
pub fn new_event(event: &ScenarioEvent) -> NewEvent {
    NewEvent {
        provider: event.provider,
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        api_version: event.payload["api_version"].as_str().map(str::to_owned),
        livemode: event.payload["livemode"].as_bool(),
        event_created: Some(event.timestamp),
        payload: event.payload.clone(),
        payload_text: serde_json::to_string(&event.payload).expect("JSON").into(),
        object_text: None,
    }
}

/// Records and applies `event` as the live pipeline does after verification.
pub async fn deliver(store: &Store, event: &ScenarioEvent) -> Recorded {
    let event = new_event(event);
    let plan = projection().plan(&event);
    store
        .record_and_apply(&event, &plan)
        .await
        .expect("record and apply")
}

/// The ledger row of `provider`'s event `event_id`, if recorded.
pub async fn ledger_row(
    store: &Store,
    provider: Provider,
    event_id: &str,
) -> Option<webhook_events::Model> {
    webhook_events::Entity::find()
        .filter(webhook_events::Column::Provider.eq(provider.as_str()))
        .filter(webhook_events::Column::EventId.eq(event_id))
        .one(store.connection())
        .await
        .expect("read the ledger")
}

/// A store on `url` with the schema applied.
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
    // Every synced entity has `id` and `synced_at`; the same read serves each table.
    macro_rules! read {
        ($entity:ident) => {
            for mut row in $entity::Entity::find()
                .filter($entity::Column::Id.contains(ns))
                .order_by_asc($entity::Column::Id)
                .all(db)
                .await
                .expect(stringify!($entity))
            {
                row.synced_at = epoch;
                rows.push(format!("{row:?}"));
            }
        };
    }
    read!(organizations);
    read!(users);
    read!(organization_memberships);
    read!(stripe_customers);
    read!(stripe_subscriptions);
    read!(stripe_products);
    read!(stripe_prices);
    read!(stripe_entitlement_summaries);
    rows.into_iter().map(|row| row.replace(ns, "NS")).collect()
}
