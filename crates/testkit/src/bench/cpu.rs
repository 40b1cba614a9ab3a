//! CPU time from `/proc`, for the benchmarks: a process's, a PostgreSQL cluster's, the
//! machine's.

use std::time::Duration;

use billing_sync_store::sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// CPU time (user + system) a process has used.
pub fn process_cpu(pid: u32) -> Duration {
    ticks(stat_fields(pid).expect("read /proc/PID/stat"), false)
}

/// CPU time the whole PostgreSQL cluster has used: the postmaster, every process it started
/// (backends, WAL writer, checkpointer, …), and those that have ended and been reaped, which
/// the kernel adds to the postmaster's children's time.
pub fn cluster_cpu(postmaster: u32) -> Duration {
    let own = ticks(
        stat_fields(postmaster).expect("the postmaster's /proc/PID/stat"),
        true,
    );
    children(postmaster)
        .into_iter()
        .map(|fields| ticks(fields, true))
        .fold(own, |total, child| total + child)
}

/// How many processes the postmaster has now (backends, WAL writer, …): a client's backends
/// leave this count once the postmaster has reaped them, and their time is its children's.
pub fn cluster_processes(postmaster: u32) -> usize {
    children(postmaster).len()
}

/// The `/proc/PID/stat` fields of the processes whose parent is `parent`.
fn children(parent: u32) -> Vec<Vec<String>> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        // A process may end between listing and reading: it is then counted in the parent's.
        .filter_map(stat_fields)
        .filter(|fields| fields[1] == parent)
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (which is in parentheses and may
/// hold spaces): `[0]` state, `[1]` parent, `[11]`/`[12]` user/system ticks, `[13]`/`[14]`
/// those of reaped children.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// User + system time of `fields`, with that of reaped children when asked.
pub fn ticks(fields: Vec<String>, with_children: bool) -> Duration {
    let columns: &[usize] = if with_children {
        &[11, 12, 13, 14]
    } else {
        &[11, 12]
    };
    let ticks: u64 = columns
        .iter()
        .map(|&column| fields[column].parse::<u64>().expect("a tick count"))
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks_per_second())
}

/// The PID of the postmaster of the cluster `db` is on: the parent of this connection's backend.
pub async fn postmaster_pid(db: &DatabaseConnection) -> u32 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_backend_pid() AS pid",
        ))
        .await
        .expect("ask for the backend's pid")
        .expect("a row");
    let backend: i32 = row.try_get("", "pid").expect("pid");
    stat_fields(backend as u32).expect("the backend runs on this machine")[1]
        .parse()
        .expect("a parent pid")
}

/// `sysconf(_SC_CLK_TCK)`, read through `getconf` once (100 on every Linux this runs on).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The machine's cumulative (busy, total) CPU time, in ticks, from `/proc/stat`.
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let values: Vec<u64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
