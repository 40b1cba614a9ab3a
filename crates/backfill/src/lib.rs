//! Backfill and reconciliation from the Stripe and Clerk APIs.
//!
//! Webhooks only tell what changed after they were configured, and a lost endpoint leaves gaps.
//! A backfill lists every object of a provider and applies each through the same guarded
//! projections as the webhooks, so it can run while live deliveries arrive: a listed state is
//! ordered as of the moment its page was fetched (Stripe) or by its own `updated_at` (Clerk),
//! and never replaces a newer state.
//!
//! Each page is committed together with a checkpoint; an interrupted pass resumes after the
//! last committed page. Deletions are not listed by either API, so a backfill cannot discover
//! them: those come from webhooks (and `events replay`).

pub mod clerk_api;
mod progress;
mod source;

use billing_sync_store::Store;
use billing_sync_store::backfill::{Checkpoint, Tally};

pub use crate::clerk_api::{ClerkClient, ClerkError};
use crate::progress::Progress;
pub use crate::source::{ClerkResource, Resource, Source, StripeResource};

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Stripe could not be listed (after retries).
    #[error("listing from Stripe failed: {0}")]
    Stripe(#[from] billing_sync_stripe_api::StripeError),
    /// Clerk could not be listed (after retries).
    #[error("listing from Clerk failed: {0}")]
    Clerk(#[from] ClerkError),
    /// The database failed.
    #[error("writing to the database failed: {0}")]
    Store(#[from] billing_sync_store::StoreError),
    /// The source said there is more, but named as the next page's cursor one it had already
    /// given in this pass: following it would list the same pages forever.
    #[error(
        "{resource}: the source says there is more after `{cursor}` but its cursor does not advance; stopping"
    )]
    CursorStuck {
        /// `stripe/customers`, …
        resource: String,
        /// The cursor given again.
        cursor: String,
    },
    /// A stored checkpoint does not fit the source.
    #[error("the stored checkpoint `{0}` is not a cursor of this source")]
    BadCheckpoint(String),
    /// A resource asked of the other provider's source: a mistake of the caller's.
    #[error("{0} is not listed from this source")]
    NotListedHere(&'static str),
}

impl BackfillError {
    /// What to do about it: fix what the source refused first (a key it does not accept), then
    /// run the pass again, which resumes after the last committed page; or, for a checkpoint
    /// that is not the source's, start over.
    pub fn next_step(&self) -> String {
        use billing_sync_stripe_api::StripeError;
        const RESUME: &str = "run it again to resume after the last committed page";
        let fix = match self {
            BackfillError::Stripe(StripeError::Api { status: 401, .. }) => Some(
                "check STRIPE_SECRET_KEY (a secret `sk_` or restricted `rk_` key of this Stripe \
                 account and mode)",
            ),
            BackfillError::Stripe(StripeError::Api { status: 403, .. }) => Some(
                "give STRIPE_SECRET_KEY read access to what is listed (a restricted key needs it)",
            ),
            BackfillError::Clerk(ClerkError::Api {
                status: 401 | 403, ..
            }) => Some("check CLERK_SECRET_KEY (the `sk_` key of this Clerk instance)"),
            BackfillError::BadCheckpoint(_) => {
                return "run it with --restart to list from the beginning".to_owned();
            }
            _ => None,
        };
        match fix {
            Some(fix) => format!("{fix}, then {RESUME}"),
            None => RESUME.to_owned(),
        }
    }
}

/// How to run a pass.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Objects per page (Stripe allows up to 100, Clerk up to 500).
    pub page_size: u64,
    /// Ignore checkpoints of an interrupted pass and start from the beginning.
    pub restart: bool,
}

/// The result of one resource's pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSummary {
    /// `stripe/customers`, …
    pub resource: String,
    /// The counts of the whole pass, including pages before a resumption.
    pub tally: Tally,
    /// Whether the pass resumed an interrupted one.
    pub resumed: bool,
}

/// Lists every resource of `source` and applies it to `store`, resuming interrupted passes.
/// Returns what each resource's pass did; stops at the first resource that cannot be listed
/// (its checkpoint stays for the next run).
pub async fn run(
    store: &Store,
    source: &Source,
    options: Options,
) -> Result<Vec<ResourceSummary>, BackfillError> {
    let mut summaries = Vec::new();
    for &resource in source.resources() {
        let name = format!("{}/{}", source.provider(), resource.name());
        summaries.push(run_resource(store, source, resource, &name, options).await?);
    }
    Ok(summaries)
}

async fn run_resource(
    store: &Store,
    source: &Source,
    resource: Resource,
    name: &str,
    options: Options,
) -> Result<ResourceSummary, BackfillError> {
    if options.restart {
        store.forget_backfill_checkpoint(name).await?;
    }
    let stored = store.backfill_checkpoint(name).await?;
    let resumed = stored.is_some();
    let mut checkpoint = stored.unwrap_or_else(|| Checkpoint {
        cursor: String::new(),
        tally: Tally::default(),
        started_at: chrono::Utc::now(),
    });
    if resumed {
        tracing::info!(
            resource = name,
            cursor = checkpoint.cursor,
            seen = checkpoint.tally.seen,
            "resuming an interrupted backfill"
        );
    }
    let progress = Progress::start(name, &checkpoint.tally);
    let mut cursors_seen = std::collections::HashSet::from([checkpoint.cursor.clone()]);
    loop {
        let cursor = Some(checkpoint.cursor.as_str()).filter(|c| !c.is_empty());
        let page = source
            .page(store, resource, cursor, options.page_size)
            .await?;
        if let Some(next) = &page.next
            && !cursors_seen.insert(next.clone())
        {
            return Err(BackfillError::CursorStuck {
                resource: name.to_owned(),
                cursor: next.clone(),
            });
        }
        let listed: Vec<_> = page
            .objects
            .into_iter()
            .map(|object| {
                let id = object
                    .get("id")
                    .and_then(|id| id.as_str())
                    .unwrap_or("?")
                    .to_owned();
                source
                    .project(resource, object, page.fetched_at)
                    .inspect_err(|reason| {
                        tracing::warn!(resource = name, id, reason, "cannot read a listed object");
                    })
            })
            .collect();
        let counted = store
            .apply_backfill_page(name, &listed, page.next.as_deref(), &checkpoint)
            .await?;
        checkpoint.tally = checkpoint.tally.plus(counted);
        progress.page(&checkpoint.tally, page.total);
        match page.next {
            Some(next) => checkpoint.cursor = next,
            None => break,
        }
    }
    progress.finish();
    Ok(ResourceSummary {
        resource: name.to_owned(),
        tally: checkpoint.tally,
        resumed,
    })
}

/// The summary table printed at the end of a run.
pub fn summary_table(summaries: &[ResourceSummary]) -> String {
    let mut table = format!(
        "{:<32} {:>8} {:>8} {:>8} {:>9} {:>7}\n",
        "resource", "listed", "created", "updated", "unchanged", "failed"
    );
    for summary in summaries {
        let t = &summary.tally;
        let resumed = if summary.resumed { " (resumed)" } else { "" };
        table.push_str(&format!(
            "{:<32} {:>8} {:>8} {:>8} {:>9} {:>7}\n",
            format!("{}{resumed}", summary.resource),
            t.seen,
            t.created,
            t.updated,
            t.unchanged,
            t.failed
        ));
    }
    table
}
