//! Command-line flags with environment fallbacks, validated once at startup.
//!
//! Every value is taken as text and checked here rather than by clap, so that a bad value is
//! reported as one line naming the environment variable, and a secret (a password in
//! `DATABASE_URL`) is never echoed back.

use std::fmt;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
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

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (webhooks, API, probes), applying pending migrations first.
    Serve(ServeArgs),
    /// Inspect or apply the database schema migrations.
    Migrate {
        /// `up` applies pending migrations; `status` lists them.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document of the HTTP API to standard output.
    Openapi,
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
}

/// The validated settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// Whether to apply pending migrations at start.
    pub migrate: bool,
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
        Ok(ServeSettings {
            listen_addr,
            migrate: !args.no_migrate,
        })
    }
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
    fn an_unknown_log_format_is_rejected() {
        let parsed = cli(&["--log-format", "xml", "migrate", "status"]);
        let err = CommonSettings::from_cli(&parsed).unwrap_err();
        assert_eq!(err.variable, "LOG_FORMAT");
    }
}
