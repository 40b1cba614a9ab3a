//! Command-line flags with environment fallbacks: each setting declared once, as the type the
//! program uses, parsed by clap with a parser of our own; the rules between settings in one
//! [`ServeArgs::validate`].
//!
//! A bad value is one line naming the environment variable ([`ConfigError::from_clap`]):
//! clap's own message repeats the value, which may be a secret (a password in
//! `DATABASE_URL`), and no parser here puts the value of a secret in its reason.

use crate::trusted_proxies::TrustedProxies;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use billing_sync_api::credits::keys::{ApiKeys, MIN_KEY_LENGTH};
use billing_sync_projection::ClientReferenceKey;
use billing_sync_store::ledger::EventStatus;
use billing_sync_webhooks::clerk::ClerkVerifier;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

/// billing-sync keeps a SaaS app's billing state true: it ingests Stripe and Clerk webhooks
/// into a database and serves the customer-portal redirect from that synced state.
#[derive(Debug, Parser)]
#[command(
    name = "billing-sync",
    version,
    after_help = "Every flag can also be set through the environment variable shown beside it.\n\
                  Quick start: `billing-sync serve` runs on an SQLite file in the working directory."
)]
pub struct Cli {
    /// Settings every subcommand shares.
    #[command(flatten)]
    pub common: CommonArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Database to sync into: `sqlite://path` (created when missing) or `postgres://user:password@host:port/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://billing-sync.db",
        hide_env_values = true,
        global = true,
        value_parser = database_url
    )]
    pub database_url: SecretString,

    /// Log format: `text` for people, `json` for one JSON object per line. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true, value_parser = log_format)]
    pub log_format: LogFormat,

    /// The log filter (`RUST_LOG`, e.g. `info,billing_sync=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true, hide = true, value_parser = log_filter)]
    pub rust_log: String,

    /// Metadata key that names the Clerk organization on Stripe customers, subscriptions and
    /// checkout sessions.
    #[arg(
        long,
        env = "STRIPE_ORG_METADATA_KEY",
        default_value = "organization_id",
        global = true
    )]
    pub stripe_org_metadata_key: String,

    /// Secret (at least 32 bytes, e.g. `openssl rand -hex 32`) signing the references a
    /// pricing table carries as `client-reference-id`: a completed checkout whose metadata
    /// names no organization links its customer to the organization a reference signed with it
    /// names (docs/architecture.md, "Linking a customer to its organization"). Unset: references link nothing.
    #[arg(long, env = "STRIPE_CLIENT_REFERENCE_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, global = true, value_parser = optional(client_reference_key))]
    pub stripe_client_reference_secret: Optional<ClientReferenceKey>,

    /// Retired: `true` (or the flag alone) trusted whatever `client_reference_id` a browser
    /// sent, and is refused with what replaces it; `false` is accepted so that old
    /// configurations still start.
    #[arg(long, env = "STRIPE_TRUST_CLIENT_REFERENCE_ID", default_value = "false", global = true,
          hide = true, value_parser = retired_client_reference_trust)]
    pub stripe_trust_client_reference_id: bool,

    /// Metadata key, on a Stripe price (else its product), saying how many credits one unit
    /// buys (docs/credits.md).
    #[arg(
        long,
        env = "STRIPE_CREDITS_METADATA_KEY",
        default_value = "credits",
        global = true
    )]
    pub stripe_credits_metadata_key: String,

    /// Threads running the service's work (the async runtime's workers). Default: half the
    /// cores this process may use, at least one ([`CommonArgs::runtime_threads`]).
    #[arg(long, env = "WORKER_THREADS", global = true, value_parser = positive::<usize>)]
    pub worker_threads: Option<usize>,
}

impl CommonArgs {
    /// The async runtime's worker threads: `WORKER_THREADS`, else half the cores.
    pub fn runtime_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            half_the_cores(std::thread::available_parallelism().map_or(1, usize::from))
        })
    }
}

/// The default of `WORKER_THREADS`. A request costs PostgreSQL about as much CPU as the service
/// (a consume ~40 µs each, a webhook event 60–80 against 85–100), and the small teams this is
/// for run both on one machine: threads beyond the cores PostgreSQL leaves only add wake-ups
/// and moves between cores. On 2 cores one thread beat two in every figure measured, credits
/// and ingestion alike (docs/proofs.md, "One runtime thread on two cores").
fn half_the_cores(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (webhooks, API, probes), applying pending migrations first.
    Serve(Box<ServeArgs>),
    /// Inspect or apply the database schema migrations.
    Migrate {
        /// `up` applies pending migrations; `status` lists them.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document of the HTTP API to standard output.
    Openapi,
    /// List every object from the Stripe or Clerk API and apply it (resumable).
    Backfill {
        /// `stripe` or `clerk`.
        #[command(subcommand)]
        source: BackfillSource,
    },
    /// Inspect the ledger of webhook events, or replay events after a fix.
    Events {
        /// `list` or `replay`.
        #[command(subcommand)]
        action: EventsAction,
    },
    /// What leaves the service: billing events and Clerk's organization metadata.
    Outbox {
        /// `republish`.
        #[command(subcommand)]
        action: OutboxAction,
    },
}

/// The `outbox` actions.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Mark every organization's billing as changed, so that a running `serve` publishes it
    /// again (a `billing.updated` where the state differs from the last published) and writes
    /// every organization's Clerk metadata: first setup, or after restoring a database.
    Republish,
}

/// The `events` actions.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Show ledger rows, newest first.
    List {
        /// Only rows with this status: `processed`, `ignored` or `failed`.
        #[arg(long, value_parser = event_status)]
        status: Option<EventStatus>,
        /// Only rows of this event type, e.g. `customer.updated`.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value = "50", value_parser = positive::<u64>)]
        limit: u64,
    },
    /// Delete `processed` and `ignored` ledger rows older than a bound (never `failed` ones).
    Prune {
        /// Age bound: a number with `d`, `h`, `m` or `s`, e.g. `90d`.
        #[arg(long, value_parser = age)]
        older_than: Duration,
        /// Rows deleted per statement.
        #[arg(long, default_value = "1000", value_parser = positive::<u64>)]
        batch: u64,
    },
    /// Apply recorded events again, with the same ordering rules as live delivery.
    Replay {
        /// The event id (`evt_…` for Stripe, the `svix-id` for Clerk).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        event_id: Option<String>,
        /// Replay every event whose status is `failed`, oldest first.
        #[arg(long)]
        failed: bool,
        /// How to call the Stripe API: with a key, a paid checkout session billing-sync did not
        /// create is read from its line items (see docs/credits.md).
        #[command(flatten)]
        api: StripeApiArgs,
    },
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port`.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080", value_parser = listen_addr)]
    pub listen_addr: SocketAddr,

    /// Do not apply pending migrations at start (for deployments that run `migrate up` as a job).
    #[arg(long)]
    pub no_migrate: bool,

    /// Stripe webhook signing secrets (`whsec_…`), comma-separated while rolling a secret.
    /// Without it the Stripe webhook route answers 503 and accepts nothing.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(webhook_secrets))]
    pub stripe_webhook_secret: Optional<Vec<SecretString>>,

    /// How far (seconds) a Stripe signature's timestamp may be from now, either way.
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_SECS", default_value = "300", value_parser = positive::<u64>)]
    pub stripe_webhook_tolerance_secs: u64,

    /// Clerk (Svix) webhook signing secrets (`whsec_…`, base64), comma-separated.
    /// Without it the Clerk webhook route answers 503 and accepts nothing.
    #[arg(long, env = "CLERK_WEBHOOK_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(clerk_verifier))]
    pub clerk_webhook_secret: Optional<ClerkVerifier>,

    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_BODY_LIMIT_BYTES", default_value = "1048576", value_parser = positive::<usize>)]
    pub webhook_body_limit_bytes: usize,

    /// Webhook body bytes held in memory at once, over all connections; a delivery that would
    /// pass it gets 503 `OVERLOADED` with `Retry-After` before its body is read.
    #[arg(long, env = "WEBHOOK_BODY_BYTES_IN_FLIGHT", default_value = "33554432", value_parser = positive::<usize>)]
    pub webhook_body_bytes_in_flight: usize,

    /// Seconds a client gets to send a whole webhook body (else 408 `BODY_TIMEOUT`), and that a
    /// silent connection is kept open.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value = "30", value_parser = seconds)]
    pub request_timeout_secs: Duration,

    /// Seconds a client gets to send a whole request head, from its first byte (else 408 and
    /// the connection is closed).
    #[arg(long, env = "REQUEST_HEADER_TIMEOUT_SECS", default_value = "10", value_parser = seconds)]
    pub request_header_timeout_secs: Duration,

    /// Largest request head (request line and headers) accepted, in bytes; a larger one gets
    /// 431 and the connection is closed.
    #[arg(long, env = "MAX_REQUEST_HEADER_BYTES", default_value = "16384", value_parser = positive::<usize>)]
    pub max_request_header_bytes: usize,

    /// Connections open at once; near it, the connections idle the longest between requests
    /// are closed to make room, and past it new connections wait in the kernel's backlog. At
    /// start the open-files limit is raised to its hard limit; when that is still too low for
    /// this many connections, they are lowered to fit, with a warning.
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "10000", value_parser = positive::<usize>)]
    pub max_connections: usize,

    /// Connections one client address may hold at once (a trusted proxy is not held to it);
    /// its next connection is closed at once. Default: a quarter of `MAX_CONNECTIONS`.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", value_parser = positive::<usize>)]
    pub max_connections_per_address: Option<usize>,

    /// The proxies or load balancers in front of billing-sync whose `X-Forwarded-For` names the
    /// client (comma-separated addresses or CIDR blocks, e.g. `10.0.0.0/8,fd00::/8`): the
    /// per-address shares of body bytes are then the client's, and the proxies are not held to
    /// `MAX_CONNECTIONS_PER_ADDRESS`. Empty (the default): the header is ignored.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: TrustedProxies,

    /// Clerk's JWKS URL (e.g. `https://<your-app>.clerk.accounts.dev/.well-known/jwks.json`),
    /// for verifying session tokens. Fetched on first use and cached.
    #[arg(long, env = "CLERK_JWKS_URL", default_value = "", hide_default_value = true,
          value_parser = optional(absolute_url))]
    pub clerk_jwks_url: Optional<String>,

    /// Clerk's PEM public key, for verifying session tokens without any network call
    /// (takes precedence over CLERK_JWKS_URL).
    #[arg(long, env = "CLERK_JWT_KEY", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(rsa_public_key))]
    pub clerk_jwt_key: Optional<jsonwebtoken::DecodingKey>,

    /// Session tokens must carry this `iss`. Unset with CLERK_JWKS_URL: the issuer that URL
    /// implies (Clerk's issuer is its Frontend API origin, which serves
    /// `/.well-known/jwks.json`).
    #[arg(long, env = "CLERK_ISSUER", default_value = "", hide_default_value = true,
          value_parser = optional(text))]
    pub clerk_issuer: Optional<String>,

    /// When set, session tokens' `azp` must be one of these origins (comma-separated).
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES", default_value = "", hide_default_value = true,
          value_parser = list)]
    pub clerk_authorized_parties: List,

    /// How to call the Stripe API.
    #[command(flatten)]
    pub stripe_api: StripeApiArgs,

    /// Base URL of the web app; the portal and checkout return to this + `/organization#/plans`.
    #[arg(long, env = "APP_BASE_URL", default_value = "", hide_default_value = true,
          value_parser = optional(absolute_url))]
    pub app_base_url: Optional<String>,

    /// Stripe Billing Portal configuration id (`bpc_…`) to use instead of the default one.
    #[arg(long, env = "STRIPE_PORTAL_CONFIGURATION", default_value = "", hide_default_value = true,
          value_parser = optional(text))]
    pub stripe_portal_configuration: Optional<String>,

    /// Origins (`https://app.example.com`, comma-separated, exact) whose pages may call the API
    /// from the browser, with credentials. Unset: no CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "", hide_default_value = true,
          value_parser = origins)]
    pub cors_allowed_origins: List,

    /// Clerk organization roles (`org:admin` or `admin`, comma-separated) allowed to open the
    /// portal and start a checkout; other members get 403 `FORBIDDEN`. Unset: any member.
    #[arg(long, env = "BILLING_ROLES", default_value = "", hide_default_value = true,
          value_parser = list)]
    pub billing_roles: List,

    /// Stripe sessions one user may create per minute: as many portal sessions, and as many
    /// checkout sessions (counted apart); more get 429 `TOO_MANY_REQUESTS` [default: 10].
    #[arg(long, env = "STRIPE_SESSIONS_PER_MINUTE", value_parser = positive::<u32>)]
    stripe_sessions_per_minute: Option<u32>,

    /// The former name of STRIPE_SESSIONS_PER_MINUTE, still read so that deployments that set
    /// it keep their limit.
    #[arg(long, env = "PORTAL_SESSIONS_PER_MINUTE", value_parser = positive::<u32>, hide = true)]
    portal_sessions_per_minute: Option<u32>,

    /// API keys (comma-separated, several while rotating; each at least 32 characters) that
    /// the app's backend sends as `Authorization: Bearer <key>` to spend and grant credits and
    /// read an organization's billing. Unset: those operations answer 500 (not configured).
    #[arg(long, env = "BILLING_API_KEYS", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(api_keys))]
    pub billing_api_keys: Optional<Arc<ApiKeys>>,

    /// The app's endpoint for billing events (`billing.updated`, `credits.balance_low`),
    /// POSTed signed the Standard Webhooks way with `APP_WEBHOOK_SECRET` (docs/billing-flows-out.md). Unset: events are kept for `GET /api/v1/events` only.
    #[arg(long, env = "APP_WEBHOOK_URL", default_value = "", hide_default_value = true,
          value_parser = optional(absolute_url))]
    pub app_webhook_url: Optional<String>,

    /// The `whsec_…` secret the app's webhook verifies billing events with (needed with
    /// `APP_WEBHOOK_URL`).
    #[arg(long, env = "APP_WEBHOOK_SECRET", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(app_webhook_secret))]
    pub app_webhook_secret: Optional<SecretString>,

    /// A Svix API token: billing events are handed to Svix (its cloud, or `SVIX_SERVER_URL`),
    /// which delivers them to the endpoints of the application `SVIX_APP_ID`. Instead of
    /// `APP_WEBHOOK_URL`, not with it.
    #[arg(long, env = "SVIX_AUTH_TOKEN", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(secret))]
    pub svix_auth_token: Optional<SecretString>,

    /// Base URL of a self-hosted svix-server (unset: Svix's cloud, by the token's region).
    #[arg(long, env = "SVIX_SERVER_URL", default_value = "", hide_default_value = true,
          value_parser = optional(absolute_url))]
    pub svix_server_url: Optional<String>,

    /// The Svix application (its uid) the events are sent to; created on the first event.
    #[arg(long, env = "SVIX_APP_ID", default_value = "billing-sync")]
    pub svix_app_id: String,

    /// Clerk secret key (`sk_…`): with it, `public_metadata.billing` of every organization is
    /// kept equal to its billing state through Clerk's Backend API. Unset: Clerk is not written.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(secret))]
    pub clerk_secret_key: Optional<SecretString>,

    /// Base URL of Clerk's Backend API.
    #[arg(long, env = "CLERK_API_BASE", default_value = "https://api.clerk.com",
          value_parser = absolute_url)]
    pub clerk_api_base: String,

    /// A credit balance below this sends `credits.balance_low` (again only after it was back at
    /// or above it). Unset: never.
    #[arg(long, env = "CREDITS_LOW_BALANCE_THRESHOLD", default_value = "",
          hide_default_value = true, value_parser = optional(integer))]
    pub credits_low_balance_threshold: Optional<i64>,

    /// `true` to project Stripe customers and subscriptions from their current state fetched
    /// from the Stripe API (needs STRIPE_SECRET_KEY) instead of the event payload.
    #[arg(long, env = "STRIPE_REFETCH_OBJECTS", default_value = "false", value_parser = boolean)]
    pub stripe_refetch_objects: bool,
}

impl ServeArgs {
    /// Connections one address may hold: its setting, else a quarter of all (at least one).
    pub fn max_connections_per_address(&self, max_connections: usize) -> usize {
        self.max_connections_per_address
            .unwrap_or(max_connections / 4)
            .clamp(1, max_connections)
    }

    /// The rules between settings, each checked here and nowhere else.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.webhook_body_bytes_in_flight < self.webhook_body_limit_bytes {
            return Err(ConfigError::new(
                "WEBHOOK_BODY_BYTES_IN_FLIGHT",
                format!(
                    "{} is less than WEBHOOK_BODY_LIMIT_BYTES ({}): a body of the largest \
                     accepted size would never fit",
                    self.webhook_body_bytes_in_flight, self.webhook_body_limit_bytes
                ),
            ));
        }
        self.clerk_issuer()?;
        self.stripe_sessions_per_minute()?;
        if self.app_webhook_url.get().is_some() != self.app_webhook_secret.get().is_some() {
            return Err(ConfigError::new(
                "APP_WEBHOOK_SECRET",
                "APP_WEBHOOK_URL and APP_WEBHOOK_SECRET go together: set both, or neither",
            ));
        }
        if self.app_webhook_url.get().is_some() && self.svix_auth_token.get().is_some() {
            return Err(ConfigError::new(
                "SVIX_AUTH_TOKEN",
                "billing events go to one destination: APP_WEBHOOK_URL or Svix, not both (add \
                 the app's endpoint in Svix instead)",
            ));
        }
        if self.stripe_refetch_objects && self.stripe_api.stripe_secret_key.get().is_none() {
            return Err(ConfigError::new(
                "STRIPE_REFETCH_OBJECTS",
                "`true` needs STRIPE_SECRET_KEY to call the Stripe API",
            ));
        }
        Ok(())
    }
}

impl ServeArgs {
    /// Stripe sessions of each kind one user may create per minute: `STRIPE_SESSIONS_PER_MINUTE`,
    /// else its former name `PORTAL_SESSIONS_PER_MINUTE`, else the default. Both set to different
    /// values is refused: which one the operator meant cannot be known.
    pub fn stripe_sessions_per_minute(&self) -> Result<u32, ConfigError> {
        match (
            self.stripe_sessions_per_minute,
            self.portal_sessions_per_minute,
        ) {
            (Some(current), Some(former)) if current != former => Err(ConfigError::new(
                "STRIPE_SESSIONS_PER_MINUTE",
                format!(
                    "{current} differs from PORTAL_SESSIONS_PER_MINUTE ({former}), its former \
                     name: set only STRIPE_SESSIONS_PER_MINUTE"
                ),
            )),
            (current, former) => Ok(current
                .or(former)
                .unwrap_or(billing_sync_api::portal::DEFAULT_SESSIONS_PER_MINUTE)),
        }
    }

    /// The `iss` session tokens must carry: `CLERK_ISSUER`, else, with `CLERK_JWKS_URL` (and no
    /// `CLERK_JWT_KEY`), the origin of that URL, which is Clerk's Frontend API and the issuer of
    /// its tokens. A JWKS URL that is not a Frontend API's `/.well-known/jwks.json` (Clerk's
    /// Backend API serves one too) implies no issuer, so `CLERK_ISSUER` is then required:
    /// tokens of any issuer whose keys that URL serves would otherwise pass.
    pub fn clerk_issuer(&self) -> Result<Option<String>, ConfigError> {
        if let Some(issuer) = self.clerk_issuer.get() {
            return Ok(Some(issuer.clone()));
        }
        let (None, Some(jwks_url)) = (self.clerk_jwt_key.get(), self.clerk_jwks_url.get()) else {
            return Ok(None);
        };
        let implied = url::Url::parse(jwks_url)
            .ok()
            .filter(|url| url.path() == "/.well-known/jwks.json")
            .map(|url| url.origin().ascii_serialization());
        implied.map(Some).ok_or_else(|| {
            ConfigError::new(
                "CLERK_ISSUER",
                "is required when CLERK_JWKS_URL is not a Frontend API's /.well-known/jwks.json \
                 (the issuer cannot be told from that URL)",
            )
        })
    }
}

/// How to call the Stripe API (for `serve` and `backfill stripe`).
#[derive(Debug, Args)]
pub struct StripeApiArgs {
    /// Stripe secret API key (`sk_…` or `rk_…`), for creating portal sessions and listing.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true, default_value = "",
          hide_default_value = true, value_parser = optional(stripe_secret_key))]
    pub stripe_secret_key: Optional<SecretString>,

    /// Base URL of the Stripe API.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        value_parser = absolute_url
    )]
    pub stripe_api_base: String,

    /// Total time allowed for one Stripe API call, in milliseconds.
    #[arg(long, env = "STRIPE_TIMEOUT_MS", default_value = "10000", value_parser = milliseconds)]
    pub stripe_timeout_ms: Duration,
}

/// The `backfill` sources.
#[derive(Debug, Subcommand)]
pub enum BackfillSource {
    /// List every Stripe customer and subscription (`status=all`) and apply them.
    Stripe {
        /// How to call the Stripe API.
        #[command(flatten)]
        api: StripeApiArgs,
        /// Paging and resumption.
        #[command(flatten)]
        run: BackfillRunArgs,
    },
    /// List every Clerk organization, user and organization membership and apply them.
    Clerk {
        /// Clerk secret key (`sk_…`) for the Backend API.
        #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, default_value = "",
              hide_default_value = true, value_parser = optional(secret))]
        clerk_secret_key: Optional<SecretString>,
        /// Base URL of Clerk's Backend API.
        #[arg(long, env = "CLERK_API_BASE", default_value = "https://api.clerk.com",
              value_parser = absolute_url)]
        clerk_api_base: String,
        /// Paging and resumption.
        #[command(flatten)]
        run: BackfillRunArgs,
    },
}

/// Flags every backfill shares.
#[derive(Debug, Args)]
pub struct BackfillRunArgs {
    /// Objects per page (Stripe allows at most 100, Clerk 500).
    #[arg(long, default_value = "100", value_parser = positive::<u64>)]
    pub page_size: u64,
    /// Ignore the checkpoint of an interrupted run and list from the beginning.
    #[arg(long)]
    pub restart: bool,
    /// Do not apply pending migrations first.
    #[arg(long)]
    pub no_migrate: bool,
}

/// The `migrate` actions.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// List migrations and whether each is applied.
    Status,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A comma-separated setting, one value to clap (a `Vec` spelled this way is not taken as a
/// repeated flag); blank entries are left out, so blank is empty.
pub type List = Vec<String>;

/// A setting that may be left unset: absent, or blank (`VAR=` in an environment file, or
/// Compose's `${VAR:-}`).
#[derive(Clone, Debug)]
pub struct Optional<T>(Option<T>);

impl<T> Optional<T> {
    /// The value, when set.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

/// A configuration value that cannot be used; `Display` is the one line an operator reads.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable (or flag) at fault.
    pub variable: String,
    /// What is wrong with it, without echoing a secret.
    pub problem: String,
}

impl ConfigError {
    /// `variable` cannot be used because of `problem`.
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.into(),
            problem: problem.into(),
        }
    }

    /// The one-line error of a value one of our parsers refused, naming the environment
    /// variable (the flag when it has none); `None` for other command-line errors (usage,
    /// `--help`), which clap reports itself.
    pub fn from_clap(err: &clap::Error) -> Option<ConfigError> {
        if err.kind() != ErrorKind::ValueValidation {
            return None;
        }
        let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
            return None;
        };
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        let variable = env_of(&Cli::command(), flag.trim_start_matches("--"))
            .unwrap_or_else(|| flag.to_owned());
        let problem = std::error::Error::source(err).map_or_else(
            || "is not a valid value".to_owned(),
            |reason| reason.to_string(),
        );
        Some(ConfigError { variable, problem })
    }
}

/// The environment variable of the flag `--long`, searching every subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The parser of an [`Optional`] setting: blank is unset, anything else goes to `parse`.
fn optional<T: Clone + Send + Sync + 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Optional<T>, String> + Clone + Send + Sync + 'static {
    move |value: &str| match value.trim() {
        "" => Ok(Optional(None)),
        value => parse(value).map(|parsed| Optional(Some(parsed))),
    }
}

fn database_url(value: &str) -> Result<SecretString, String> {
    // The reason names the scheme or the part at fault, never the URL (it may hold a password).
    billing_sync_store::Store::validate_url(value).map_err(|err| err.reason())?;
    Ok(SecretString::from(value))
}

fn log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not one of `text`, `json`")),
    }
}

fn log_filter(value: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(value)
        .map_err(|err| format!("not a tracing filter ({err}), e.g. `info,billing_sync=debug`"))?;
    // A bare word is a target at every level: a misspelt level (`inof`) parses, and logs
    // nothing but that target's, which has none.
    for directive in value.split(',').map(str::trim) {
        if let Some(level) = misspelt_level(directive) {
            return Err(format!(
                "`{directive}` reads as a target's name, not a level: did you mean `{level}`?"
            ));
        }
    }
    Ok(value.to_owned())
}

/// The level a bare directive (no `=`, `::` or span filter) that is not a level itself is one
/// or two letters away from.
fn misspelt_level(directive: &str) -> Option<&'static str> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let word = directive.to_ascii_lowercase();
    if word.is_empty() || word.contains(['=', ':', '[']) || LEVELS.contains(&word.as_str()) {
        return None;
    }
    LEVELS
        .into_iter()
        .find(|level| edit_distance(&word, level) <= 2)
}

/// Levenshtein distance, for words of a few letters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn event_status(value: &str) -> Result<EventStatus, String> {
    EventStatus::parse(value)
        .ok_or_else(|| format!("`{value}` is not one of processed, ignored, failed"))
}

/// `host:port`: an address, or a name the system resolves (`localhost:8080`), its first IPv4
/// address preferred.
fn listen_addr(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = value.parse() {
        return Ok(address);
    }
    let expected = "expected host:port such as 127.0.0.1:8080 or localhost:8080";
    let addresses: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|err| format!("`{value}` is not a socket address ({err}); {expected}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("`{value}` resolves to no address; {expected}"))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(value: &str) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(number) if number > T::default() => Ok(number),
        _ => Err(format!("`{value}` is not a positive whole number")),
    }
}

fn seconds(value: &str) -> Result<Duration, String> {
    positive(value).map(Duration::from_secs)
}

fn milliseconds(value: &str) -> Result<Duration, String> {
    positive(value).map(Duration::from_millis)
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(format!("`{other}` is not `true` or `false`")),
    }
}

fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value))
}

/// A Stripe secret (`sk_…`) or restricted (`rk_…`) key; never echoed.
fn stripe_secret_key(value: &str) -> Result<SecretString, String> {
    if value.starts_with("sk_") || value.starts_with("rk_") {
        return Ok(SecretString::from(value));
    }
    Err(if value.starts_with("pk_") {
        "is a publishable key (pk_…), which cannot create sessions: use the secret key \
         (sk_…) or a restricted key (rk_…) from the Stripe Dashboard's API keys"
            .to_owned()
    } else {
        "is not a Stripe secret key (sk_…) or restricted key (rk_…)".to_owned()
    })
}

fn integer(value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// A `whsec_…` secret the svix crate can sign with; the reason never echoes it.
fn app_webhook_secret(value: &str) -> Result<SecretString, String> {
    match svix::webhooks::Webhook::new(value) {
        Ok(_) => Ok(SecretString::from(value)),
        Err(_) => Err("not a whsec_… secret (base64 after the prefix)".to_owned()),
    }
}

fn client_reference_key(value: &str) -> Result<ClientReferenceKey, String> {
    ClientReferenceKey::new(value.as_bytes()).map_err(|err| err.to_string())
}

fn retired_client_reference_trust(value: &str) -> Result<bool, String> {
    match boolean(value)? {
        false => Ok(false),
        true => Err("this setting is retired: it linked customers to whatever organization a                      browser named. Set STRIPE_CLIENT_REFERENCE_SECRET instead and give the                      pricing table the reference GET /api/v1/operations/payment/client-reference                      answers (docs/architecture.md, \"Linking a customer to its organization\")"
            .to_owned()),
    }
}

/// A comma-separated list; blank entries are left out.
fn list(value: &str) -> Result<List, String> {
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect())
}

fn absolute_url(value: &str) -> Result<String, String> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("`{value}` is not an absolute http(s) URL")),
    }
}

/// A comma-separated list of `whsec_…` secrets; the reason names the entry, never its text.
fn webhook_secrets(value: &str) -> Result<Vec<SecretString>, String> {
    value
        .split(',')
        .map(str::trim)
        .enumerate()
        .map(|(index, entry)| {
            if entry.starts_with("whsec_") && entry.len() > "whsec_".len() {
                Ok(SecretString::from(entry))
            } else {
                Err(format!("entry {} is not a whsec_… secret", index + 1))
            }
        })
        .collect()
}

fn api_keys(value: &str) -> Result<Arc<ApiKeys>, String> {
    let keys: Vec<&str> = value.split(',').map(str::trim).collect();
    for (index, key) in keys.iter().enumerate() {
        if key.chars().count() < MIN_KEY_LENGTH {
            return Err(format!(
                "key {} is shorter than {MIN_KEY_LENGTH} characters",
                index + 1
            ));
        }
    }
    Ok(Arc::new(ApiKeys::new(&keys)))
}

fn clerk_verifier(value: &str) -> Result<ClerkVerifier, String> {
    let secrets = webhook_secrets(value)?;
    ClerkVerifier::new(secrets.iter().map(|secret| secret.expose_secret()))
        .map_err(|err| err.to_string())
}

fn rsa_public_key(value: &str) -> Result<jsonwebtoken::DecodingKey, String> {
    // Environment files often carry the PEM on one line with literal `\n`.
    let pem = value.replace("\\n", "\n");
    jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| "not an RSA public key in PEM format".to_owned())
}

/// `CORS_ALLOWED_ORIGINS`: each entry a bare origin, `scheme://host[:port]`, as browsers send
/// it in `Origin` (no path, no trailing slash: it would never match).
fn origins(value: &str) -> Result<List, String> {
    list(value)?
        .into_iter()
        .map(|entry| {
            let bare = url::Url::parse(&entry).ok().is_some_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && url.origin().ascii_serialization() == entry
            });
            if bare {
                Ok(entry)
            } else {
                Err(format!(
                    "`{entry}` is not an origin; expected scheme://host[:port] with no path, \
                     e.g. https://app.example.com"
                ))
            }
        })
        .collect()
}

/// An age such as `90d`, `12h`, `30m` or `3600s`.
fn age(value: &str) -> Result<Duration, String> {
    parse_age(value)
        .ok_or_else(|| format!("`{value}` is not an age such as 90d, 12h, 30m or 3600s"))
}

fn parse_age(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "d" => number.checked_mul(86_400)?,
        "h" => number.checked_mul(3_600)?,
        "m" => number.checked_mul(60)?,
        "s" => number,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_takes_half_the_cores_and_never_none() {
        assert_eq!(half_the_cores(1), 1);
        assert_eq!(half_the_cores(2), 1);
        assert_eq!(half_the_cores(3), 1);
        assert_eq!(half_the_cores(8), 4);
    }

    #[test]
    fn a_misspelt_level_is_told_and_a_target_or_a_level_is_not() {
        assert_eq!(misspelt_level("inof"), Some("info"));
        assert_eq!(misspelt_level("DEBGU"), Some("debug"));
        assert_eq!(misspelt_level("wanr"), Some("warn"));
        for fine in [
            "info",
            "billing_sync",
            "billing_sync=debug",
            "hyper::proto",
            "sqlx",
        ] {
            assert_eq!(misspelt_level(fine), None, "{fine}");
        }
        assert!(log_filter("warn,inof").is_err());
        assert!(log_filter("info,billing_sync=debug").is_ok());
    }

    #[test]
    fn a_listen_address_may_name_its_host() {
        assert_eq!(
            listen_addr("127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().expect("an address"))
        );
        assert_eq!(listen_addr("localhost:8080").map(|a| a.port()), Ok(8080));
        assert!(
            listen_addr("localhost:8080").is_ok_and(|a| a.ip().is_loopback()),
            "localhost is a loopback address"
        );
        assert!(listen_addr("localhost").is_err(), "no port");
    }

    #[test]
    fn only_a_secret_or_restricted_key_calls_stripe() {
        assert!(stripe_secret_key("sk_test_x").is_ok());
        assert!(stripe_secret_key("rk_live_x").is_ok());
        let publishable = stripe_secret_key("pk_test_s3cret").expect_err("refused");
        assert!(publishable.contains("publishable") && !publishable.contains("s3cret"));
        assert!(stripe_secret_key("whsec_x").is_err());
    }

    /// The one-line error of `args`, as `main` prints it.
    fn refusal(args: &[&str]) -> ConfigError {
        let err = Cli::try_parse_from(std::iter::once("billing-sync").chain(args.iter().copied()))
            .expect_err("refused");
        ConfigError::from_clap(&err).expect("a value error")
    }

    #[test]
    fn a_bad_listen_addr_names_the_variable() {
        let err = refusal(&["serve", "--listen-addr", "localhost"]);
        assert_eq!(err.variable, "LISTEN_ADDR");
        assert!(
            err.to_string().starts_with("invalid LISTEN_ADDR: "),
            "{err}"
        );
    }

    #[test]
    fn a_bad_database_url_never_echoes_the_password() {
        let err = refusal(&[
            "--database-url",
            "mysql://root:hunter2@db/x",
            "migrate",
            "status",
        ]);
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_webhook_secret_without_its_prefix_is_rejected_without_echoing_it() {
        let err = refusal(&[
            "serve",
            "--stripe-webhook-secret",
            "whsec_good,plain-s3cret",
        ]);
        assert_eq!(err.variable, "STRIPE_WEBHOOK_SECRET");
        assert!(err.problem.contains("entry 2"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn trusting_any_client_reference_is_refused_with_what_replaces_it() {
        // The flag alone means `true`, as the variable set to `true` does.
        let err = refusal(&["serve", "--stripe-trust-client-reference-id"]);
        assert_eq!(err.variable, "STRIPE_TRUST_CLIENT_REFERENCE_ID");
        assert!(
            err.problem.contains("STRIPE_CLIENT_REFERENCE_SECRET"),
            "{err}"
        );
        let short = refusal(&["serve", "--stripe-client-reference-secret", "s3cret"]);
        assert_eq!(short.variable, "STRIPE_CLIENT_REFERENCE_SECRET");
        assert!(!short.to_string().contains("s3cret"), "{short}");
        Cli::try_parse_from(["billing-sync", "serve"])
            .expect("the retired setting's default (`false`) still parses");
    }

    #[test]
    fn a_flag_without_a_variable_is_named_by_the_flag() {
        let err = refusal(&["events", "prune", "--older-than", "90"]);
        assert_eq!(err.variable, "--older-than");
    }

    #[test]
    fn blank_optional_settings_are_unset() {
        let cli = Cli::try_parse_from([
            "billing-sync",
            "serve",
            "--app-base-url",
            " ",
            "--stripe-webhook-secret",
            "",
            "--billing-roles",
            ", ,",
        ])
        .expect("blank values parse");
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert!(args.app_base_url.get().is_none());
        assert!(args.stripe_webhook_secret.get().is_none());
        assert!(args.billing_roles.is_empty());
    }

    #[test]
    fn the_sessions_limit_is_read_under_its_name_or_its_former_one() {
        let limit = |flags: &[&str]| {
            let cli = Cli::try_parse_from(["billing-sync", "serve"].iter().chain(flags))
                .expect("the flags parse");
            let Command::Serve(args) = cli.command else {
                panic!("serve expected")
            };
            args.stripe_sessions_per_minute()
        };
        assert_eq!(limit(&[]), Ok(10));
        assert_eq!(limit(&["--stripe-sessions-per-minute", "3"]), Ok(3));
        assert_eq!(limit(&["--portal-sessions-per-minute", "4"]), Ok(4));
        let both = |current, former| {
            limit(&[
                "--stripe-sessions-per-minute",
                current,
                "--portal-sessions-per-minute",
                former,
            ])
        };
        assert_eq!(both("5", "5"), Ok(5));
        let err = both("3", "4").expect_err("two different limits");
        assert_eq!(err.variable, "STRIPE_SESSIONS_PER_MINUTE");
        assert!(err.problem.contains("PORTAL_SESSIONS_PER_MINUTE"), "{err}");
    }

    #[test]
    fn ages_take_a_unit() {
        assert_eq!(parse_age("90d"), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_age("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_age("45s"), Some(Duration::from_secs(45)));
        for bad in ["90", "d", "", "-1d", "1w", "1.5d"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_log_format_is_rejected() {
        let err = refusal(&["--log-format", "xml", "migrate", "status"]);
        assert_eq!(err.variable, "LOG_FORMAT");
    }
}
