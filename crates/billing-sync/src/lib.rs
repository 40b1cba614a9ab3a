//! billing-sync as a library: the subcommands behind the thin `main`, and the [`App`] they
//! serve. The end-to-end tests do not build an [`App`] themselves: they start the real binary
//! (`billing-sync serve` on `LISTEN_ADDR=127.0.0.1:0`) and read the bound address from its log.

mod backfill;
mod client_deadline;
pub mod config;
mod events;
mod observability;
mod startup;
mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use billing_sync_projection::stripe_signature::StripeVerifier;
use billing_sync_store::Store;
use billing_sync_webhooks::clerk::ClerkVerifier;
use billing_sync_webhooks::{Ingestor, Projectors};
use std::time::Duration;

use billing_sync_api::access::Access;
use billing_sync_api::auth::{JwksCache, KeySource, SessionVerifier};
use billing_sync_api::plans::{CheckoutSettings, Plans, plans_page_url};
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
            let (portal, plans) = build_operations(&settings, &common, store.clone())?;
            let shutdown = startup::shutdown_signal().context("installing signal handlers")?;
            let listener = tokio::net::TcpListener::bind(settings.listen_addr)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
            App::build(store, ingestor, Arc::new(portal), Arc::new(plans))
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
    let access = Arc::new(Access::new(store.clone(), None));
    let portal = Arc::new(Portal::new(access.clone(), None));
    let plans = Arc::new(Plans::new(access, None));
    Ok(billing_sync_api::openapi_document(
        &billing_sync_api::service(store, portal, plans),
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

/// The operations on the synced state: the customer portal and the plans page, sharing one
/// way of admitting callers.
fn build_operations(
    settings: &ServeSettings,
    common: &CommonSettings,
    store: Store,
) -> anyhow::Result<(Portal, Plans)> {
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
    if verifier.is_none() {
        tracing::warn!(
            "neither CLERK_JWT_KEY nor CLERK_JWKS_URL is set: the portal, billing state and checkout answer 500 (not configured)"
        );
    }
    let access = Arc::new(Access::new(store, verifier).with_billing_roles(&settings.billing_roles));
    let (portal_stripe, checkout_stripe) = match (
        &settings.stripe_api.secret_key,
        &settings.app_base_url,
    ) {
        (Some(key), Some(base)) => {
            // One client, one pool of connections to Stripe, for both operations.
            let stripe = stripe_client(&settings.stripe_api, key)?;
            (
                Some((
                    stripe.clone(),
                    PortalSettings {
                        return_url: plans_page_url(base),
                        configuration: settings.stripe_portal_configuration.clone(),
                    },
                )),
                Some((
                    stripe,
                    CheckoutSettings::for_app(
                        base,
                        &common.stripe_org_metadata_key,
                        page_origins(base, &settings.cors_allowed_origins),
                    ),
                )),
            )
        }
        _ => {
            tracing::warn!(
                "STRIPE_SECRET_KEY or APP_BASE_URL is not set: the customer portal and checkout answer 500 (billing is not configured)"
            );
            (None, None)
        }
    };
    let per_minute = settings.portal_sessions_per_minute;
    Ok((
        Portal::new(access.clone(), portal_stripe).with_sessions_per_minute(per_minute),
        Plans::new(access, checkout_stripe).with_sessions_per_minute(per_minute),
    ))
}

/// The origins of the web app's pages: `APP_BASE_URL`'s and the CORS ones.
fn page_origins(app_base_url: &str, cors_allowed_origins: &[String]) -> Vec<String> {
    url::Url::parse(app_base_url)
        .map(|url| url.origin().ascii_serialization())
        .into_iter()
        .chain(cors_allowed_origins.iter().cloned())
        .collect()
}

async fn open_store(common: &CommonSettings) -> anyhow::Result<Store> {
    Ok(Store::connect(&common.database_url).await?)
}
