//! Logging: text or one JSON object per line, to standard error, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{CommonArgs, LogFormat};

/// Installs the global subscriber. The filter was validated with the configuration.
pub fn init(settings: &CommonArgs) {
    let filter = EnvFilter::builder().parse_lossy(&settings.rust_log);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_wanted())
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colour codes only for a person at a terminal: never into a file, a pipe, journald or a log
/// shipper, and never when `NO_COLOR` is set to anything (<https://no-color.org>).
fn colours_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
