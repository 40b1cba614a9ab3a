//! billing-sync as a library: the subcommands behind the thin `main`, and the [`App`] they
//! serve. The end-to-end tests do not build an [`App`] themselves: they start the real binary
//! (`billing-sync serve` on `LISTEN_ADDR=127.0.0.1:0`) and read the bound address from its log.

mod api_bodies;
mod backfill;
mod connection_guard;
mod cors;

use connection_guard::ConnectionLimits;
pub mod config;
mod events;
mod observability;
mod open_files;
mod outbox;
mod output;
mod trusted_proxies;
pub use output::error_line;
mod startup;
mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use billing_sync_api::access::Access;
use billing_sync_api::credits::Credits;
use billing_sync_api::plans::Plans;
use billing_sync_api::portal::Portal;
use billing_sync_store::Store;
use secrecy::ExposeSecret;

use crate::config::{Command, CommonArgs, ConfigError, MigrateAction, OutboxAction};
pub use crate::startup::App;

/// Why a subcommand did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value is unusable (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else (exit status 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// `MAX_CONNECTIONS`, within the open-files limit (raised to its hard limit first): lowered
/// with a warning when the limit is below what it needs, refused when no connection would fit.
fn connections_within_open_files(wanted: usize) -> Result<usize, RunError> {
    let limit = match open_files::raise_to_hard_limit() {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open-files limit; MAX_CONNECTIONS kept");
            return Ok(wanted);
        }
    };
    match open_files::connections_within(wanted, limit) {
        Some(fits) if fits < wanted => {
            tracing::warn!(
                max_connections = wanted,
                lowered_to = fits,
                open_files_limit = limit,
                "MAX_CONNECTIONS is above what the open-files limit allows beside the {} \
                 descriptors kept for the database and the rest: lowered (raise LimitNOFILE, \
                 or `ulimit -n`, to keep it)",
                open_files::RESERVED
            );
            Ok(fits)
        }
        Some(fits) => Ok(fits),
        None => Err(ConfigError::new(
            "MAX_CONNECTIONS",
            format!(
                "the open-files limit ({limit}) leaves no descriptor for connections beside the \
                 {} kept for the database and the rest: raise it (LimitNOFILE, `ulimit -n`)",
                open_files::RESERVED
            ),
        )
        .into()),
    }
}

/// Runs one subcommand to completion.
pub async fn run(command: Command, common: CommonArgs) -> Result<(), RunError> {
    match command {
        Command::Openapi => {
            output::out!("{}", openapi_json());
            Ok(())
        }
        Command::Serve(args) => {
            args.validate()?;
            telemetry::init(&common);
            // The address first: a port in use is said before a database is created or
            // migrated for a server that cannot start.
            let max_connections = connections_within_open_files(args.max_connections)?;
            let listener = startup::listen(args.listen_addr)
                .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
            let store = open_store(&common)
                .await?
                .with_low_balance_threshold(args.credits_low_balance_threshold.get().copied());
            if !args.no_migrate {
                store
                    .migrate_up()
                    .await
                    .context("applying database migrations")?;
                tracing::info!(database = store.target(), "database schema is up to date");
            }
            let stripe = startup::serve_stripe_client(&args)?;
            let ingestor = Arc::new(startup::build_ingestor(
                &args,
                &common,
                store.clone(),
                stripe.clone(),
            ));
            let operations = startup::build_operations(&args, &common, store.clone(), stripe)?;
            outbox::spawn(
                store.clone(),
                operations.1.clone(),
                operations.2.clone(),
                startup::outbox_destinations(&args)?,
            );
            let shutdown = startup::shutdown_signal().context("installing signal handlers")?;
            App::build(store, ingestor, operations)
                .connection_limits(ConnectionLimits {
                    idle: args.request_timeout_secs * 2,
                    write_timeout: args.request_timeout_secs,
                    head_timeout: args.request_header_timeout_secs,
                    max_head_bytes: args.max_request_header_bytes,
                    max_connections,
                    max_per_address: args.max_connections_per_address(max_connections),
                    trusted_proxies: args.trusted_proxies.clone(),
                })
                .cors_allowed_origins(cors::allowed_origins(
                    args.app_base_url.get().map(String::as_str),
                    &args.cors_allowed_origins,
                ))
                .serve(listener, shutdown)
                .await
                .context("serving HTTP")?;
            Ok(())
        }
        Command::Migrate { action } => {
            telemetry::init(&common);
            let store = match action {
                MigrateAction::Up => open_store(&common).await?,
                MigrateAction::Status => open_existing_store(&common).await?,
            };
            match action {
                MigrateAction::Up => {
                    store.migrate_up().await.context("applying migrations")?;
                    output::out!("database at {} is up to date", store.target());
                }
                MigrateAction::Status => {
                    for migration in store
                        .migration_status()
                        .await
                        .context("reading migration status")?
                    {
                        let state = if migration.applied {
                            "applied"
                        } else {
                            "pending"
                        };
                        output::out!("{state:8} {}", migration.name);
                    }
                }
            }
            store.close().await.context("closing the database")?;
            Ok(())
        }
        Command::Backfill { source } => {
            let (source, run) = backfill::source(source, &common)?;
            telemetry::init(&common);
            // A backfill migrates first (unless told not to), so it may create the database.
            let store = if run.no_migrate {
                open_migrated_store(&common).await?
            } else {
                open_store(&common).await?
            };
            let result = backfill::run(&store, &source, &run).await;
            store.close().await.context("closing the database")?;
            result
        }
        Command::Events { action } => {
            telemetry::init(&common);
            let store = open_migrated_store(&common).await?;
            let result = events::run(&store, &startup::projection(&common), action).await;
            store.close().await.context("closing the database")?;
            result
        }
        Command::Outbox {
            action: OutboxAction::Republish,
        } => {
            telemetry::init(&common);
            let store = open_migrated_store(&common).await?;
            let marked = store
                .republish_all()
                .await
                .context("marking the organizations")?;
            output::out!(
                "{marked} organizations marked: a running `billing-sync serve` publishes them and \
                 writes their Clerk metadata"
            );
            store.close().await.context("closing the database")?;
            Ok(())
        }
    }
}

/// The OpenAPI document of the HTTP API, exactly as served at `/api/v1/openapi.json`. The
/// document does not depend on the data: the service is built on a store with no database
/// behind it, and nothing is opened to print it.
pub fn openapi_json() -> String {
    let store = Store::disconnected();
    let access = Arc::new(Access::new(store.clone(), None));
    let portal = Arc::new(Portal::new(access.clone(), None));
    let plans = Arc::new(Plans::new(access.clone(), None));
    let credits = Arc::new(Credits::new(access, None, String::new()));
    billing_sync_api::openapi_document(&billing_sync_api::service(store, portal, plans, credits))
}

/// The database, created when it is an SQLite file that does not exist yet (`serve`, `migrate
/// up`).
async fn open_store(common: &CommonArgs) -> anyhow::Result<Store> {
    Ok(Store::connect(common.database_url.expose_secret()).await?)
}

/// The database, which must exist: the commands that only use one never create it.
async fn open_existing_store(common: &CommonArgs) -> anyhow::Result<Store> {
    Ok(Store::open_existing(common.database_url.expose_secret()).await?)
}

/// The database, which must exist and be migrated: a command that reads or writes the synced
/// state says what to run rather than failing on a missing table.
async fn open_migrated_store(common: &CommonArgs) -> anyhow::Result<Store> {
    let store = open_existing_store(common).await?;
    let migrations = store
        .migration_status()
        .await
        .context("reading migration status")?;
    let pending = migrations.iter().filter(|m| !m.applied).count();
    if pending > 0 {
        anyhow::bail!(
            "the database at {} is not migrated ({pending} of {} migrations pending): run \
             `billing-sync migrate up` (or `serve`, which migrates at start)",
            store.target(),
            migrations.len()
        );
    }
    Ok(store)
}
