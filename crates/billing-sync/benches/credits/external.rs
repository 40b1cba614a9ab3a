//! The same consumes driven from outside the bench's process: wrk (its Lua script beside this
//! file) against the service, pgbench against the naive design (a single-row debit and a ledger
//! row per transaction, `naive.sql`), each for a fixed time. The in-process generator shares
//! the bench's runtime with its own bookkeeping; these are the tools anyone can rerun.
//! `./scripts/bench` installs both when missing; without them this part stops the bench.

use std::process::Command;
use std::time::Duration;

/// What an external generator measured.
pub struct Measured {
    pub requests: u64,
    pub seconds: f64,
    pub failed: u64,
    /// wrk's percentiles; pgbench prints a mean, given as both.
    pub p50: Duration,
    pub p99: Duration,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn script(name: &str) -> String {
    format!("{}/benches/credits/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[String]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "{program} could not run ({err}): ./scripts/bench installs it (Debian's package)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `connections` wrk connections consuming 1 credit each request, on organizations drawn from
/// `spread`, for `seconds`.
pub fn wrk(
    url: &str,
    api_key: &str,
    spread: usize,
    connections: usize,
    seconds: u64,
    tag: &str,
) -> Measured {
    let threads = connections.min(2);
    let stdout = run(
        "wrk",
        &[
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--timeout".into(),
            "10s".into(),
            "-s".into(),
            script("consume.lua"),
            url.into(),
            "--".into(),
            spread.to_string(),
            tag.into(),
            api_key.into(),
        ],
    );
    let figures: Vec<u64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("wrk-figures "))
        .unwrap_or_else(|| panic!("wrk printed no figures: {stdout}"))
        .split_whitespace()
        .map(|figure| figure.parse().expect("a number"))
        .collect();
    let [requests, micros, failed, p50, p99] = figures[..] else {
        panic!("wrk printed five figures: {stdout}");
    };
    Measured {
        requests,
        seconds: micros as f64 / 1e6,
        failed,
        p50: Duration::from_micros(p50),
        p99: Duration::from_micros(p99),
    }
}

/// The naive design from `clients` pgbench clients on organizations drawn from `spread`, for
/// `seconds`; `bench_balances` and `bench_ledger` must exist in `database_url`.
pub fn pgbench(database_url: &str, spread: usize, clients: usize, seconds: u64) -> Measured {
    // The cluster's own pgbench, beside the server ./scripts/with-postgres started.
    let pgbench = std::env::var("BILLING_SYNC_TEST_PG_BIN")
        .map_or_else(|_| "pgbench".to_owned(), |bin| format!("{bin}/pgbench"));
    let stdout = run(
        &pgbench,
        &[
            "-n".into(),
            format!("-c{clients}"),
            format!("-j{}", clients.min(2)),
            format!("-T{seconds}"),
            "-f".into(),
            script("naive.sql"),
            "-D".into(),
            format!("spread={spread}"),
            database_url.into(),
        ],
    );
    // The number after `prefix` on the line that starts with it.
    let figure = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    let field = |prefix: &str| -> f64 {
        figure(prefix).unwrap_or_else(|| panic!("pgbench printed no `{prefix}`: {stdout}"))
    };
    let requests = field("number of transactions actually processed: ") as u64;
    // pgbench before 15 does not print it.
    let failed = figure("number of failed transactions: ").map_or(0, |failed| failed as u64);
    let mean = Duration::from_secs_f64(field("latency average = ") / 1e3);
    Measured {
        requests,
        seconds: requests as f64 / field("tps = "),
        failed,
        p50: mean,
        p99: mean,
    }
}
