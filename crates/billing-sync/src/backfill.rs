//! `billing-sync backfill stripe|clerk`: list every object from the provider's API and apply
//! it through the webhook projections, then print a summary.

use std::time::Duration;

use anyhow::Context;
use billing_sync_backfill::{ClerkClient, Options, Source};
use billing_sync_store::Store;

use crate::RunError;
use crate::config::{BackfillRunArgs, BackfillSource, CommonArgs, ConfigError};

/// A Clerk list call gets this long per attempt.
const CLERK_TIMEOUT: Duration = Duration::from_secs(30);

/// The source to list from, validated, and the run's flags.
pub(crate) fn source(
    source: BackfillSource,
    common: &CommonArgs,
) -> Result<(Source, BackfillRunArgs), RunError> {
    let (source, run) = match source {
        BackfillSource::Stripe { api, run } => {
            let key = api.stripe_secret_key.get().ok_or(ConfigError::new(
                "STRIPE_SECRET_KEY",
                "is required to list from the Stripe API",
            ))?;
            let client = crate::startup::stripe_client(&api, key)?;
            let source = Source::Stripe {
                client,
                org_metadata_key: common.stripe_org_metadata_key.clone(),
            };
            (source, run)
        }
        BackfillSource::Clerk {
            clerk_secret_key,
            clerk_api_base,
            run,
        } => {
            let key = clerk_secret_key.get().ok_or(ConfigError::new(
                "CLERK_SECRET_KEY",
                "is required to call Clerk's Backend API",
            ))?;
            let client = ClerkClient::new(&clerk_api_base, key.clone(), CLERK_TIMEOUT)
                .context("building the Clerk client")?;
            (Source::Clerk(client), run)
        }
    };
    Ok((source, run))
}

/// Runs the backfill and prints its summary; fails when an object could not be read.
pub(crate) async fn run(
    store: &Store,
    source: &Source,
    run: &BackfillRunArgs,
) -> Result<(), RunError> {
    if !run.no_migrate {
        store
            .migrate_up()
            .await
            .context("applying database migrations")?;
    }
    let options = Options {
        page_size: run.page_size,
        restart: run.restart,
    };
    let summaries = match billing_sync_backfill::run(store, source, options).await {
        Ok(summaries) => summaries,
        Err(err) => {
            let next_step = err.next_step();
            return Err(anyhow::Error::new(err)
                .context(format!("backfill stopped; {next_step}"))
                .into());
        }
    };
    let table = billing_sync_backfill::summary_table(&summaries);
    crate::output::out!("{}", table.trim_end_matches('\n'));
    let failed: u64 = summaries.iter().map(|s| s.tally.failed).sum();
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} listed objects could not be read (named in the warnings above); \
             the rest are applied"
        )
        .into());
    }
    Ok(())
}
