//! Command-line flags with environment fallbacks, validated once at startup.
//!
//! Every value is taken as text and checked here rather than by clap, so that a bad value is
//! reported as one line naming the environment variable, and a secret (a password in
//! `DATABASE_URL`) is never echoed back.

use std::fmt;
use std::net::SocketAddr;

use billing_sync_webhooks::clerk::ClerkVerifier;
use clap::{Args, Parser, Subcommand};
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
    /// Database to sync into: `sqlite://path` (created when missing) or `postgres://user:password@host:port/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://billing-sync.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Log format: `text` for people, `json` for one JSON object per line. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,

    /// Metadata key that names the Clerk organization on Stripe customers, subscriptions and
    /// checkout sessions.
    #[arg(
        long,
        env = "STRIPE_ORG_METADATA_KEY",
        default_value = "organization_id",
        global = true
    )]
    pub stripe_org_metadata_key: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
}

/// The `events` actions.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Show ledger rows, newest first.
    List {
        /// Only rows with this status: `processed`, `ignored` or `failed`.
        #[arg(long)]
        status: Option<String>,
        /// Only rows of this event type, e.g. `customer.updated`.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Delete `processed` and `ignored` ledger rows older than a bound (never `failed` ones).
    Prune {
        /// Age bound: a number with `d`, `h`, `m` or `s`, e.g. `90d`.
        #[arg(long)]
        older_than: String,
        /// Rows deleted per statement.
        #[arg(long, default_value_t = 1000)]
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
    },
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port`.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,

    /// Do not apply pending migrations at start (for deployments that run `migrate up` as a job).
    #[arg(long)]
    pub no_migrate: bool,

    /// Stripe webhook signing secrets (`whsec_…`), comma-separated while rolling a secret.
    /// Without it the Stripe webhook route answers 503 and accepts nothing.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// How far (seconds) a Stripe signature's timestamp may be from now, either way.
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_SECS", default_value = "300")]
    pub stripe_webhook_tolerance_secs: String,

    /// Clerk (Svix) webhook signing secrets (`whsec_…`, base64), comma-separated.
    /// Without it the Clerk webhook route answers 503 and accepts nothing.
    #[arg(long, env = "CLERK_WEBHOOK_SECRET", hide_env_values = true)]
    pub clerk_webhook_secret: Option<String>,

    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_BODY_LIMIT_BYTES", default_value = "1048576")]
    pub webhook_body_limit_bytes: String,

    /// Webhook body bytes held in memory at once, over all connections; a delivery that would
    /// pass it gets 503 `OVERLOADED` with `Retry-After` before its body is read.
    #[arg(long, env = "WEBHOOK_BODY_BYTES_IN_FLIGHT", default_value = "33554432")]
    pub webhook_body_bytes_in_flight: String,

    /// Seconds a client gets to send a whole webhook body (else 408 `BODY_TIMEOUT`), and that a
    /// silent connection is kept open.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value = "30")]
    pub request_timeout_secs: String,

    /// Clerk's JWKS URL (e.g. `https://<your-app>.clerk.accounts.dev/.well-known/jwks.json`),
    /// for verifying session tokens. Fetched on first use and cached.
    #[arg(long, env = "CLERK_JWKS_URL")]
    pub clerk_jwks_url: Option<String>,

    /// Clerk's PEM public key, for verifying session tokens without any network call
    /// (takes precedence over CLERK_JWKS_URL).
    #[arg(long, env = "CLERK_JWT_KEY", hide_env_values = true)]
    pub clerk_jwt_key: Option<String>,

    /// When set, session tokens must carry this `iss`.
    #[arg(long, env = "CLERK_ISSUER")]
    pub clerk_issuer: Option<String>,

    /// When set, session tokens' `azp` must be one of these origins (comma-separated).
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES")]
    pub clerk_authorized_parties: Option<String>,

    /// How to call the Stripe API.
    #[command(flatten)]
    pub stripe_api: StripeApiArgs,

    /// Base URL of the web app; the portal and checkout return to this + `/organization#/plans`.
    #[arg(long, env = "APP_BASE_URL")]
    pub app_base_url: Option<String>,

    /// Stripe Billing Portal configuration id (`bpc_…`) to use instead of the default one.
    #[arg(long, env = "STRIPE_PORTAL_CONFIGURATION")]
    pub stripe_portal_configuration: Option<String>,

    /// Origins (`https://app.example.com`, comma-separated, exact) whose pages may call the API
    /// from the browser, with credentials. Unset: no CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS")]
    pub cors_allowed_origins: Option<String>,

    /// Clerk organization roles (`org:admin` or `admin`, comma-separated) allowed to open the
    /// portal and start a checkout; other members get 403 `FORBIDDEN`. Unset: any member.
    #[arg(long, env = "BILLING_ROLES")]
    pub billing_roles: Option<String>,

    /// Portal sessions one user may create per minute, and as many checkout sessions; more get
    /// 429 `TOO_MANY_REQUESTS`.
    #[arg(long, env = "PORTAL_SESSIONS_PER_MINUTE", default_value = "10")]
    pub portal_sessions_per_minute: String,

    /// `true` to project Stripe customers and subscriptions from their current state fetched
    /// from the Stripe API (needs STRIPE_SECRET_KEY) instead of the event payload.
    #[arg(long, env = "STRIPE_REFETCH_OBJECTS", default_value = "false")]
    pub stripe_refetch_objects: String,
}

/// How to call the Stripe API (for `serve` and `backfill stripe`).
#[derive(Debug, Args)]
pub struct StripeApiArgs {
    /// Stripe secret API key (`sk_…` or `rk_…`), for creating portal sessions and listing.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Base URL of the Stripe API.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// Total time allowed for one Stripe API call, in milliseconds.
    #[arg(long, env = "STRIPE_TIMEOUT_MS", default_value = "10000")]
    pub stripe_timeout_ms: String,
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
        #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true)]
        clerk_secret_key: Option<String>,
        /// Base URL of Clerk's Backend API.
        #[arg(long, env = "CLERK_API_BASE", default_value = "https://api.clerk.com")]
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
    #[arg(long, default_value_t = 100)]
    pub page_size: u64,
    /// Ignore the checkpoint of an interrupted run and list from the beginning.
    #[arg(long)]
    pub restart: bool,
    /// Do not apply pending migrations first.
    #[arg(long)]
    pub no_migrate: bool,
}

/// The validated settings of the Stripe API client.
#[derive(Debug)]
pub struct StripeApiSettings {
    /// The API key, when configured.
    pub secret_key: Option<SecretString>,
    /// `STRIPE_API_BASE`, without a trailing slash.
    pub api_base: String,
    /// `STRIPE_TIMEOUT_MS`.
    pub timeout: std::time::Duration,
}

impl StripeApiSettings {
    /// Validates the Stripe API flags.
    pub fn from_args(args: &StripeApiArgs) -> Result<Self, ConfigError> {
        Ok(StripeApiSettings {
            secret_key: non_empty(args.stripe_secret_key.as_ref())
                .map(|key| SecretString::from(key.to_owned())),
            api_base: absolute_url("STRIPE_API_BASE", &args.stripe_api_base)?,
            timeout: std::time::Duration::from_millis(positive_number(
                "STRIPE_TIMEOUT_MS",
                &args.stripe_timeout_ms,
            )?),
        })
    }
}

/// The validated settings of `backfill clerk`.
#[derive(Debug)]
pub struct ClerkApiSettings {
    /// `CLERK_SECRET_KEY`.
    pub secret_key: SecretString,
    /// `CLERK_API_BASE`, without a trailing slash.
    pub api_base: String,
}

impl ClerkApiSettings {
    /// Validates the Clerk Backend API flags; the key is required.
    pub fn from_args(secret_key: Option<&String>, api_base: &str) -> Result<Self, ConfigError> {
        let secret_key = non_empty(secret_key).ok_or_else(|| ConfigError {
            variable: "CLERK_SECRET_KEY",
            problem: "is required to call Clerk's Backend API".into(),
        })?;
        Ok(ClerkApiSettings {
            secret_key: SecretString::from(secret_key.to_owned()),
            api_base: absolute_url("CLERK_API_BASE", api_base)?,
        })
    }
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

/// A configuration value that cannot be used; `Display` is the one line an operator reads.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable (or flag) at fault.
    pub variable: &'static str,
    /// What is wrong with it, without echoing a secret.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Settings every subcommand shares.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// The database URL, checked to be usable (its text may hold a password: never print it).
    pub database_url: String,
    /// The log format.
    pub log_format: LogFormat,
    /// The log filter from `RUST_LOG` (default `info`).
    pub log_filter: String,
    /// The metadata key naming an organization on Stripe objects.
    pub stripe_org_metadata_key: String,
}

/// The validated settings of `serve`.
#[derive(Debug)]
pub struct ServeSettings {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// Whether to apply pending migrations at start.
    pub migrate: bool,
    /// The Stripe secrets, when configured.
    pub stripe_webhook_secrets: Option<Vec<SecretString>>,
    /// Stripe's timestamp tolerance.
    pub stripe_webhook_tolerance_secs: u64,
    /// The Clerk secrets, when configured.
    pub clerk_webhook_secrets: Option<Vec<SecretString>>,
    /// The webhook body limit.
    pub webhook_body_limit: usize,
    /// `WEBHOOK_BODY_BYTES_IN_FLIGHT`: at least the body limit.
    pub webhook_body_bytes_in_flight: usize,
    /// `REQUEST_TIMEOUT_SECS`: the body deadline and the idle-connection timeout.
    pub request_timeout: std::time::Duration,
    /// How session tokens are verified, when configured.
    pub clerk_keys: Option<ClerkKeys>,
    /// `CLERK_ISSUER`.
    pub clerk_issuer: Option<String>,
    /// `CLERK_AUTHORIZED_PARTIES`.
    pub clerk_authorized_parties: Vec<String>,
    /// How to call the Stripe API.
    pub stripe_api: StripeApiSettings,
    /// `APP_BASE_URL`, without a trailing slash, when configured.
    pub app_base_url: Option<String>,
    /// `BILLING_ROLES`; empty: any member manages billing.
    pub billing_roles: Vec<String>,
    /// `STRIPE_PORTAL_CONFIGURATION`.
    pub stripe_portal_configuration: Option<String>,
    /// `PORTAL_SESSIONS_PER_MINUTE`.
    pub portal_sessions_per_minute: u32,
    /// `CORS_ALLOWED_ORIGINS`, each a bare origin.
    pub cors_allowed_origins: Vec<String>,
    /// `STRIPE_REFETCH_OBJECTS`.
    pub stripe_refetch_objects: bool,
}

/// Where Clerk session-token keys come from.
#[derive(Debug)]
pub enum ClerkKeys {
    /// A PEM public key.
    Pem(SecretString),
    /// A JWKS URL.
    Jwks(String),
}

fn absolute_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError {
            variable,
            problem: format!("`{value}` is not an absolute http(s) URL"),
        }),
    }
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Splits a comma-separated list of secrets; `None` when unset or blank.
fn secret_list(
    variable: &'static str,
    value: Option<&str>,
) -> Result<Option<Vec<SecretString>>, ConfigError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let mut secrets = Vec::new();
    for (index, entry) in value.split(',').enumerate() {
        let entry = entry.trim();
        if !entry.starts_with("whsec_") || entry.len() <= "whsec_".len() {
            return Err(ConfigError {
                variable,
                problem: format!("entry {} is not a whsec_… secret", index + 1),
            });
        }
        secrets.push(SecretString::from(entry));
    }
    Ok(Some(secrets))
}

fn positive_number<T: std::str::FromStr + PartialOrd + Default>(
    variable: &'static str,
    value: &str,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(number) if number > T::default() => Ok(number),
        _ => Err(ConfigError {
            variable,
            problem: format!("`{value}` is not a positive whole number"),
        }),
    }
}

impl CommonSettings {
    /// Validates the flags every subcommand shares, and `RUST_LOG`.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        billing_sync_store::Store::validate_url(&cli.database_url).map_err(|err| ConfigError {
            variable: "DATABASE_URL",
            problem: err.reason(),
        })?;
        let log_format = match cli.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError {
                    variable: "LOG_FORMAT",
                    problem: format!("`{other}` is not one of `text`, `json`"),
                });
            }
        };
        let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        EnvFilter::builder()
            .parse(&log_filter)
            .map_err(|err| ConfigError {
                variable: "RUST_LOG",
                problem: format!("not a tracing filter ({err}), e.g. `info,billing_sync=debug`"),
            })?;
        Ok(CommonSettings {
            database_url: cli.database_url.clone(),
            log_format,
            log_filter,
            stripe_org_metadata_key: cli.stripe_org_metadata_key.clone(),
        })
    }
}

impl ServeSettings {
    /// Validates the flags of `serve`.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let listen_addr = args.listen_addr.parse().map_err(|_| ConfigError {
            variable: "LISTEN_ADDR",
            problem: format!(
                "`{}` is not a socket address; expected host:port such as 127.0.0.1:8080",
                args.listen_addr
            ),
        })?;
        let webhook_body_limit =
            positive_number("WEBHOOK_BODY_LIMIT_BYTES", &args.webhook_body_limit_bytes)?;
        let webhook_body_bytes_in_flight: usize = positive_number(
            "WEBHOOK_BODY_BYTES_IN_FLIGHT",
            &args.webhook_body_bytes_in_flight,
        )?;
        if webhook_body_bytes_in_flight < webhook_body_limit {
            return Err(ConfigError {
                variable: "WEBHOOK_BODY_BYTES_IN_FLIGHT",
                problem: format!(
                    "{webhook_body_bytes_in_flight} is less than WEBHOOK_BODY_LIMIT_BYTES \
                     ({webhook_body_limit}): a body of the largest accepted size would never fit"
                ),
            });
        }
        let clerk_webhook_secrets =
            secret_list("CLERK_WEBHOOK_SECRET", args.clerk_webhook_secret.as_deref())?;
        if let Some(secrets) = &clerk_webhook_secrets {
            ClerkVerifier::new(secrets.iter().map(|s| s.expose_secret())).map_err(|err| {
                ConfigError {
                    variable: "CLERK_WEBHOOK_SECRET",
                    problem: err.to_string(),
                }
            })?;
        }
        let clerk_keys = match (
            non_empty(args.clerk_jwt_key.as_ref()),
            non_empty(args.clerk_jwks_url.as_ref()),
        ) {
            (Some(pem), _) => {
                // Environment files often carry the PEM on one line with literal `\n`.
                let pem = pem.replace("\\n", "\n");
                jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                    ConfigError {
                        variable: "CLERK_JWT_KEY",
                        problem: "not an RSA public key in PEM format".into(),
                    }
                })?;
                Some(ClerkKeys::Pem(SecretString::from(pem)))
            }
            (None, Some(url)) => Some(ClerkKeys::Jwks(absolute_url("CLERK_JWKS_URL", url)?)),
            (None, None) => None,
        };
        let app_base_url = non_empty(args.app_base_url.as_ref())
            .map(|base| absolute_url("APP_BASE_URL", base))
            .transpose()?;
        let stripe_refetch_objects = match args.stripe_refetch_objects.trim() {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            other => {
                return Err(ConfigError {
                    variable: "STRIPE_REFETCH_OBJECTS",
                    problem: format!("`{other}` is not `true` or `false`"),
                });
            }
        };
        let stripe_api = StripeApiSettings::from_args(&args.stripe_api)?;
        if stripe_refetch_objects && stripe_api.secret_key.is_none() {
            return Err(ConfigError {
                variable: "STRIPE_REFETCH_OBJECTS",
                problem: "`true` needs STRIPE_SECRET_KEY to call the Stripe API".into(),
            });
        }
        Ok(ServeSettings {
            stripe_refetch_objects,
            clerk_keys,
            clerk_issuer: non_empty(args.clerk_issuer.as_ref()).map(str::to_owned),
            clerk_authorized_parties: non_empty(args.clerk_authorized_parties.as_ref())
                .map(|list| {
                    list.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            stripe_api,
            app_base_url,
            billing_roles: non_empty(args.billing_roles.as_ref())
                .map(|list| {
                    list.split(',')
                        .map(|role| role.trim().to_owned())
                        .filter(|role| !role.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            cors_allowed_origins: origins(args.cors_allowed_origins.as_deref())?,
            portal_sessions_per_minute: positive_number(
                "PORTAL_SESSIONS_PER_MINUTE",
                &args.portal_sessions_per_minute,
            )?,
            stripe_portal_configuration: non_empty(args.stripe_portal_configuration.as_ref())
                .map(str::to_owned),
            listen_addr,
            migrate: !args.no_migrate,
            stripe_webhook_secrets: secret_list(
                "STRIPE_WEBHOOK_SECRET",
                args.stripe_webhook_secret.as_deref(),
            )?,
            stripe_webhook_tolerance_secs: positive_number(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                &args.stripe_webhook_tolerance_secs,
            )?,
            clerk_webhook_secrets,
            webhook_body_limit,
            webhook_body_bytes_in_flight,
            request_timeout: std::time::Duration::from_secs(positive_number(
                "REQUEST_TIMEOUT_SECS",
                &args.request_timeout_secs,
            )?),
        })
    }
}

/// `CORS_ALLOWED_ORIGINS`: each entry a bare origin, `scheme://host[:port]`, as browsers send
/// it in `Origin` (no path, no trailing slash: it would never match).
fn origins(list: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .map(|entry| {
            let bare = url::Url::parse(entry).ok().filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && url.origin().ascii_serialization() == entry
            });
            bare.map(|_| entry.to_owned()).ok_or_else(|| ConfigError {
                variable: "CORS_ALLOWED_ORIGINS",
                problem: format!(
                    "`{entry}` is not an origin; expected scheme://host[:port] with no path, \
                     e.g. https://app.example.com"
                ),
            })
        })
        .collect()
}

/// Parses an age such as `90d`, `12h`, `30m` or `3600s`.
pub fn parse_age(text: &str) -> Option<std::time::Duration> {
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
    Some(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("billing-sync").chain(args.iter().copied()))
            .expect("arguments parse")
    }

    #[test]
    fn a_bad_listen_addr_names_the_variable() {
        let Command::Serve(args) = cli(&["serve", "--listen-addr", "localhost"]).command else {
            panic!("serve expected");
        };
        let err = ServeSettings::from_args(&args).unwrap_err();
        assert_eq!(err.variable, "LISTEN_ADDR");
        assert!(
            err.to_string().starts_with("invalid LISTEN_ADDR: "),
            "{err}"
        );
    }

    #[test]
    fn a_bad_database_url_never_echoes_the_password() {
        let parsed = cli(&[
            "--database-url",
            "mysql://root:hunter2@db/x",
            "migrate",
            "status",
        ]);
        let err = CommonSettings::from_cli(&parsed).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_webhook_secret_without_its_prefix_is_rejected_without_echoing_it() {
        let Command::Serve(args) = cli(&[
            "serve",
            "--stripe-webhook-secret",
            "whsec_good,plain-s3cret",
        ])
        .command
        else {
            panic!("serve expected");
        };
        let err = ServeSettings::from_args(&args).unwrap_err();
        assert_eq!(err.variable, "STRIPE_WEBHOOK_SECRET");
        assert!(err.problem.contains("entry 2"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn ages_take_a_unit() {
        assert_eq!(
            parse_age("90d"),
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            parse_age("12h"),
            Some(std::time::Duration::from_secs(43_200))
        );
        assert_eq!(parse_age("45s"), Some(std::time::Duration::from_secs(45)));
        for bad in ["90", "d", "", "-1d", "1w", "1.5d"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_log_format_is_rejected() {
        let parsed = cli(&["--log-format", "xml", "migrate", "status"]);
        let err = CommonSettings::from_cli(&parsed).unwrap_err();
        assert_eq!(err.variable, "LOG_FORMAT");
    }
}
