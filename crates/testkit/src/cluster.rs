//! A PostgreSQL cluster of a test's own, for tests that stop and restart the server (which the
//! shared cluster of `./scripts/test` must not do to its other tests).
//!
//! It uses the PostgreSQL binaries that `./scripts/test` installs from Debian's packages, runs
//! as the `postgres` user when the test runs as root (PostgreSQL refuses root), listens on a
//! free loopback port, and is stopped and removed when dropped.

use std::path::PathBuf;
use std::process::Command;

use crate::REQUIRE_POSTGRES_VAR;

/// A running (or stopped, between `stop` and `start`) throwaway cluster.
pub struct PostgresCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PostgresCluster {
    /// Creates and starts a cluster, or `None` (after saying so on stderr) when PostgreSQL is
    /// not installed here; panics instead when `BILLING_SYNC_TEST_REQUIRE_POSTGRES=1`.
    pub fn start() -> Option<PostgresCluster> {
        let Some(bin) = postgres_bin() else {
            if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") {
                panic!("PostgreSQL binaries not found under /usr/lib/postgresql");
            }
            eprintln!("SKIPPED: no PostgreSQL binaries here; ./scripts/test installs them");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("billing-sync-own-pg")
            .tempdir()
            .expect("a temporary directory");
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let port = free_port();
        let cluster = PostgresCluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        run(cluster
            .pg("initdb")
            .args(["-U", "billing", "--auth=trust", "--no-sync", "-D"])
            .arg(cluster.data()));
        cluster.start_server();
        Some(cluster)
    }

    /// An admin URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://billing@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash would (`-m immediate`: no shutdown checkpoint;
    /// the next start recovers from the WAL).
    pub fn crash(&self) {
        run(self
            .pg("pg_ctl")
            .args(["-m", "immediate", "-w", "stop", "-D"])
            .arg(self.data()));
    }

    /// Starts the server again (waiting until it accepts connections).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(self
            .pg("pg_ctl")
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &options, "start", "-D"])
            .arg(self.data()));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .pg("pg_ctl")
                .args(["-m", "immediate", "-w", "stop", "-D"])
                .arg(self.data())
                .output();
        }
    }
}

fn postgres_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
