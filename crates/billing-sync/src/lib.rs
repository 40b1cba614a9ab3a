//! billing-sync as a library: the subcommands behind the thin `main`, and the [`App`] that tests
//! start on a listener of their own.

pub mod config;
mod startup;
mod telemetry;

use anyhow::Context;
use billing_sync_store::Store;

use crate::config::{Command, CommonSettings, ConfigError, MigrateAction, ServeSettings};
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

/// Runs one subcommand to completion.
pub async fn run(command: Command, common: CommonSettings) -> Result<(), RunError> {
    match command {
        Command::Openapi => {
            // The document does not depend on the data; an in-memory store stands in so that
            // generating it needs no database.
            let store = Store::connect("sqlite::memory:")
                .await
                .context("opening an in-memory database")?;
            println!("{}", App::build(store).openapi_json());
            Ok(())
        }
        Command::Serve(args) => {
            let settings = ServeSettings::from_args(&args)?;
            telemetry::init(&common);
            let store = open_store(&common).await?;
            if settings.migrate {
                store
                    .migrate_up()
                    .await
                    .context("applying database migrations")?;
                tracing::info!(database = store.target(), "database schema is up to date");
            }
            let shutdown = startup::shutdown_signal().context("installing signal handlers")?;
            let listener = tokio::net::TcpListener::bind(settings.listen_addr)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
            App::build(store)
                .serve(listener, shutdown)
                .await
                .context("serving HTTP")?;
            Ok(())
        }
        Command::Migrate { action } => {
            telemetry::init(&common);
            let store = open_store(&common).await?;
            match action {
                MigrateAction::Up => {
                    store.migrate_up().await.context("applying migrations")?;
                    println!("database at {} is up to date", store.target());
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
                        println!("{state:8} {}", migration.name);
                    }
                }
            }
            store.close().await.context("closing the database")?;
            Ok(())
        }
    }
}

async fn open_store(common: &CommonSettings) -> anyhow::Result<Store> {
    Ok(Store::connect(&common.database_url).await?)
}
