//! Logging: text or one JSON object per line, to standard error, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{CommonSettings, LogFormat};

/// Installs the global subscriber. The filter was validated with the configuration.
pub fn init(settings: &CommonSettings) {
    let filter = EnvFilter::builder().parse_lossy(&settings.log_filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
