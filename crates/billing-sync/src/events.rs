//! `billing-sync events`: list the ledger, replay events after a fix.

use anyhow::Context;
use billing_sync_projection::Projection;
use billing_sync_store::Store;
use billing_sync_store::ledger::{EventFilter, EventStatus};

use crate::RunError;
use crate::config::{ConfigError, EventsAction};

pub(crate) async fn run(
    store: &Store,
    projection: &Projection,
    action: EventsAction,
) -> Result<(), RunError> {
    match action {
        EventsAction::List {
            status,
            event_type,
            limit,
        } => {
            let rows = store
                .list_events(&EventFilter {
                    status,
                    event_type,
                    limit,
                })
                .await
                .context("listing the ledger")?;
            crate::output::out!(
                "{:<8} {:<8} {:<34} {:<40} {:<10} {:<26} error",
                "id",
                "provider",
                "event_id",
                "type",
                "status",
                "received_at"
            );
            for row in rows {
                crate::output::out!(
                    "{:<8} {:<8} {:<34} {:<40} {:<10} {:<26} {}",
                    row.id,
                    row.provider,
                    row.event_id,
                    row.event_type,
                    row.status,
                    row.received_at.to_rfc3339(),
                    row.error.unwrap_or_default()
                );
            }
            Ok(())
        }
        EventsAction::Prune { older_than, batch } => {
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(older_than)
                    .map_err(|_| ConfigError::new("--older-than", "too large"))?;
            let deleted = store
                .prune_events(before, batch)
                .await
                .context("pruning the ledger")?;
            crate::output::out!(
                "pruned {deleted} processed or ignored ledger row(s) received before {}",
                before.to_rfc3339()
            );
            Ok(())
        }
        EventsAction::Replay {
            event_id,
            failed,
            api,
        } => {
            // With a key, a checkout whose purchase is only in its line items can be read.
            let line_items = api
                .stripe_secret_key
                .get()
                .map(|key| crate::startup::stripe_client(&api, key))
                .transpose()?;
            let rows = if failed {
                store
                    .list_events(&EventFilter {
                        status: Some(EventStatus::Failed),
                        ..EventFilter::default()
                    })
                    .await
                    .context("listing failed events")?
            } else {
                let event_id = event_id.unwrap_or_default();
                let rows = store
                    .find_events_by_id(&event_id)
                    .await
                    .context("finding the event")?;
                if rows.is_empty() {
                    return Err(anyhow::anyhow!("no event `{event_id}` in the ledger").into());
                }
                rows
            };
            let mut still_failed = 0;
            for row in &rows {
                let status =
                    billing_sync_webhooks::replay(store, projection, line_items.as_ref(), row)
                        .await
                        .with_context(|| format!("replaying {}", row.event_id))?;
                if status == EventStatus::Failed {
                    still_failed += 1;
                }
                crate::output::out!("{} {} -> {}", row.event_id, row.event_type, status.as_str());
            }
            crate::output::out!(
                "replayed {} event(s), {still_failed} still failed",
                rows.len()
            );
            if still_failed > 0 {
                return Err(anyhow::anyhow!("{still_failed} event(s) still failed").into());
            }
            Ok(())
        }
    }
}
