//! What the benchmarks compute from what they measured, and read from the environment: one
//! percentile rule and one way to read a numeric setting.

use std::time::Duration;

/// The `p` percentile (0 to 1) of `sorted`, the nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// The number the environment variable `name` holds, else `default` (unset or unreadable).
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
