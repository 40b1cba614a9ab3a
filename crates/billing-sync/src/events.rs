//! `billing-sync events`: list the ledger, replay events after a fix.

use anyhow::Context;
use billing_sync_store::Store;
use billing_sync_store::ledger::{EventFilter, EventStatus};
use billing_sync_webhooks::{Projectors, pipeline};

use crate::RunError;
use crate::config::{ConfigError, EventsAction};

pub(crate) async fn run(
    store: &Store,
    projectors: &Projectors,
    action: EventsAction,
) -> Result<(), RunError> {
    match action {
        EventsAction::List {
            status,
            event_type,
            limit,
        } => {
            let status = status
                .map(|text| {
                    EventStatus::parse(&text).ok_or(ConfigError {
                        variable: "--status",
                        problem: format!("`{text}` is not one of processed, ignored, failed"),
                    })
                })
                .transpose()?;
            let rows = store
                .list_events(&EventFilter {
                    status,
                    event_type,
                    limit: limit.max(1),
                })
                .await
                .context("listing the ledger")?;
            println!(
                "{:<8} {:<8} {:<34} {:<40} {:<10} {:<26} error",
                "id", "provider", "event_id", "type", "status", "received_at"
            );
            for row in rows {
                println!(
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
            let age = crate::config::parse_age(&older_than).ok_or(ConfigError {
                variable: "--older-than",
                problem: format!("`{older_than}` is not an age such as 90d, 12h, 30m or 3600s"),
            })?;
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(age).map_err(|_| ConfigError {
                    variable: "--older-than",
                    problem: "too large".into(),
                })?;
            let deleted = store
                .prune_events(before, batch.max(1))
                .await
                .context("pruning the ledger")?;
            println!(
                "pruned {deleted} processed or ignored ledger row(s) received before {}",
                before.to_rfc3339()
            );
            Ok(())
        }
        EventsAction::Replay { event_id, failed } => {
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
                let status = pipeline::replay(store, projectors, row)
                    .await
                    .with_context(|| format!("replaying {}", row.event_id))?;
                if status == EventStatus::Failed {
                    still_failed += 1;
                }
                println!("{} {} -> {}", row.event_id, row.event_type, status.as_str());
            }
            println!(
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
