//! billing-sync as a library: the subcommands behind the thin `main`, and the [`App`] that tests
//! start on a listener of their own.

mod backfill;
mod client_deadline;
pub mod config;
mod events;
mod observability;
mod startup;
mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use billing_sync_store::Store;
use billing_sync_webhooks::clerk::ClerkVerifier;
use billing_sync_webhooks::stripe::StripeVerifier;
use billing_sync_webhooks::{Ingestor, Projectors};
use std::time::Duration;

use billing_sync_api::auth::{JwksCache, KeySource, SessionVerifier};
use billing_sync_api::portal::{Portal, PortalSettings};
use billing_sync_stripe_api::StripeClient;
use secrecy::ExposeSecret;

use crate::config::{
    ClerkKeys, Command, CommonSettings, ConfigError, MigrateAction, ServeSettings,
    StripeApiSettings,
};
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
            println!("{}", openapi_json().await?);
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
            let ingestor = Arc::new(build_ingestor(&settings, &common, store.clone())?);
            let portal = Arc::new(build_portal(&settings, store.clone())?);
            let shutdown = startup::shutdown_signal().context("installing signal handlers")?;
            let listener = tokio::net::TcpListener::bind(settings.listen_addr)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
            App::build(store, ingestor, portal)
                .idle_timeout(settings.request_timeout)
                .cors_allowed_origins(settings.cors_allowed_origins.clone())
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
        Command::Backfill { source } => {
            let (source, run) = backfill::source(source, &common)?;
            telemetry::init(&common);
            let store = open_store(&common).await?;
            let result = backfill::run(&store, &source, &run).await;
            store.close().await.context("closing the database")?;
            result
        }
        Command::Events { action } => {
            telemetry::init(&common);
            let store = open_store(&common).await?;
            let result = events::run(&store, &projectors(&common), action).await;
            store.close().await.context("closing the database")?;
            result
        }
    }
}

/// The OpenAPI document of the HTTP API, exactly as served at `/api/v1/openapi.json`.
pub async fn openapi_json() -> anyhow::Result<String> {
    // The document does not depend on the data; an in-memory store stands in so that
    // generating it needs no database.
    let store = Store::connect("sqlite::memory:")
        .await
        .context("opening an in-memory database")?;
    let portal = Arc::new(Portal::new(store.clone(), None, None));
    Ok(billing_sync_api::openapi_document(
        &billing_sync_api::service(store, portal),
    ))
}

fn projectors(common: &CommonSettings) -> Projectors {
    Projectors {
        stripe_org_metadata_key: common.stripe_org_metadata_key.clone(),
    }
}

fn build_ingestor(
    settings: &ServeSettings,
    common: &CommonSettings,
    store: Store,
) -> anyhow::Result<Ingestor> {
    let stripe = settings.stripe_webhook_secrets.as_ref().map(|secrets| {
        StripeVerifier::new(secrets.clone(), settings.stripe_webhook_tolerance_secs)
    });
    let clerk = settings
        .clerk_webhook_secrets
        .as_ref()
        .map(|secrets| ClerkVerifier::new(secrets.iter().map(|s| s.expose_secret())))
        .transpose()
        .context("CLERK_WEBHOOK_SECRET")?;
    if stripe.is_none() {
        tracing::warn!(
            "STRIPE_WEBHOOK_SECRET is not set: the Stripe webhook route accepts nothing"
        );
    }
    if clerk.is_none() {
        tracing::warn!("CLERK_WEBHOOK_SECRET is not set: the Clerk webhook route accepts nothing");
    }
    let ingestor = Ingestor::new(
        store,
        projectors(common),
        stripe,
        clerk,
        settings.webhook_body_limit,
    )
    .with_body_timeout(settings.request_timeout)
    .with_body_bytes_in_flight(settings.webhook_body_bytes_in_flight);
    match (
        &settings.stripe_api.secret_key,
        settings.stripe_refetch_objects,
    ) {
        (Some(key), true) => {
            Ok(ingestor.with_stripe_refetch(stripe_client(&settings.stripe_api, key)?))
        }
        _ => Ok(ingestor),
    }
}

fn stripe_client(
    settings: &StripeApiSettings,
    key: &secrecy::SecretString,
) -> anyhow::Result<StripeClient> {
    StripeClient::new(
        &settings.api_base,
        key.clone(),
        Duration::from_secs(3).min(settings.timeout),
        settings.timeout,
    )
    .context("building the Stripe client")
}

fn build_portal(settings: &ServeSettings, store: Store) -> anyhow::Result<Portal> {
    let verifier = match &settings.clerk_keys {
        Some(ClerkKeys::Pem(pem)) => Some(KeySource::Pem(Box::new(
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
                .context("CLERK_JWT_KEY")?,
        ))),
        Some(ClerkKeys::Jwks(url)) => {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the JWKS client")?;
            Some(KeySource::Jwks(JwksCache::new(url.clone(), client)))
        }
        None => None,
    }
    .map(|keys| {
        SessionVerifier::new(
            keys,
            settings.clerk_issuer.clone(),
            settings.clerk_authorized_parties.clone(),
        )
    });
    let stripe = match (&settings.stripe_api.secret_key, &settings.portal_return_url) {
        (Some(key), Some(return_url)) => Some((
            stripe_client(&settings.stripe_api, key)?,
            PortalSettings {
                return_url: return_url.clone(),
                configuration: settings.stripe_portal_configuration.clone(),
            },
        )),
        _ => None,
    };
    if verifier.is_none() {
        tracing::warn!(
            "neither CLERK_JWT_KEY nor CLERK_JWKS_URL is set: the customer portal answers 500 (not configured)"
        );
    }
    if stripe.is_none() {
        tracing::warn!(
            "STRIPE_SECRET_KEY or APP_BASE_URL is not set: the customer portal answers 500 (billing is not configured)"
        );
    }
    Ok(Portal::new(store, verifier, stripe)
        .with_sessions_per_minute(settings.portal_sessions_per_minute))
}

async fn open_store(common: &CommonSettings) -> anyhow::Result<Store> {
    Ok(Store::connect(&common.database_url).await?)
}
