//! Starting the real `billing-sync` binary for end-to-end tests and benchmarks, and what they
//! send it: signed deliveries, stand-ins for Stripe, Clerk and the app ([`standins`],
//! [`receivers`]).

pub mod receivers;
pub mod standins;

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The `billing-sync` binary Cargo built beside the running test or bench: Cargo builds a
/// package's binaries for its integration tests and benches, into the folder above theirs
/// (`target/<profile>/`, the tests in `target/<profile>/deps/`).
pub fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let running = std::env::current_exe().expect("the running test's path");
        let profile = running
            .parent()
            .and_then(std::path::Path::parent)
            .expect("a test runs from target/<profile>/deps/");
        let binary = profile.join(format!("billing-sync{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.is_file(),
            "{} is missing: these helpers are for billing-sync's own tests and benches \
             (cargo test -p billing-sync, ./scripts/bench), which build it",
            binary.display()
        );
        binary.display().to_string()
    })
}

/// How long a server gets to start listening before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a test waits for a log line the server writes as it answers.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// A `billing-sync` command with a clean environment: only what the test sets.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.kill_on_drop(true);
    command
}

/// What a finished command printed.
pub struct Finished {
    /// How the command ended.
    pub status: ExitStatus,
    /// What it wrote to standard output.
    pub stdout: String,
    /// What it wrote to standard error.
    pub stderr: String,
}

/// Runs `billing-sync ARGS` to completion.
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let output = tokio::time::timeout(
        START_TIMEOUT,
        command(env).args(args).stdin(Stdio::null()).output(),
    )
    .await
    .expect("billing-sync finishes")
    .expect("billing-sync runs");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `billing-sync serve`, stopped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The lines read so far from the server's stderr, by a task of this process: a line the
    /// server wrote before it answered may not be here yet when the answer arrives.
    logs: Arc<Mutex<Vec<String>>>,
    /// Woken whenever a line is added to `logs`.
    logged: Arc<Notify>,
    /// The task reading stderr; it ends when the server has exited and every line is read.
    reader: Option<JoinHandle<()>>,
}

/// How many of its last log lines a server prints when the test fails while it runs.
const LINES_ON_FAILURE: usize = 40;

impl Drop for Server {
    /// A test that fails while a server runs prints what the server was doing last: the
    /// assertion alone does not tell a server that refused from one that stalled.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            eprintln!(
                "last {} of {} log lines of billing-sync at {}:",
                LINES_ON_FAILURE.min(logs.len()),
                logs.len(),
                self.base_url
            );
            for line in &logs[logs.len().saturating_sub(LINES_ON_FAILURE)..] {
                eprintln!("  {line}");
            }
        }
    }
}

impl Server {
    /// The body of `GET path` as text (the metrics, the served OpenAPI document).
    pub async fn get_text(&self, path: &str) -> String {
        http()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
            .text()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// Starts `billing-sync serve` on a free port with `DATABASE_URL=database_url` and `env`,
    /// and waits (bounded) until it logs the address it listens on.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with_args(database_url, &[], env).await
    }

    /// [`Server::start`] with `args` after `serve` (`--no-migrate`, say).
    pub async fn start_with_args(
        database_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::spawn(database_url, args, env, None).await
    }

    /// [`Server::start`] under an open-files limit of `limit` (soft and hard: the server cannot
    /// raise it), set by the shell that execs it.
    pub async fn start_with_open_files_limit(
        database_url: &str,
        env: &[(&str, &str)],
        limit: u32,
    ) -> Server {
        Server::spawn(database_url, &[], env, Some(limit)).await
    }

    async fn spawn(
        database_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
        open_files_limit: Option<u32>,
    ) -> Server {
        let mut full_env: HashMap<&str, &str> = HashMap::from([
            ("DATABASE_URL", database_url),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ]);
        full_env.extend(env.iter().copied());
        let env: Vec<(&str, &str)> = full_env.into_iter().collect();
        let mut command = command(&env);
        if let Some(limit) = open_files_limit {
            let program = command.as_std().get_program().to_owned();
            let mut shell = Command::new("sh");
            shell
                .env_clear()
                .envs(
                    command
                        .as_std()
                        .get_envs()
                        .filter_map(|(k, v)| Some((k, v?))),
                )
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(program)
                .kill_on_drop(true);
            command = shell;
        }
        let mut child = command
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn billing-sync serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logged = Arc::new(Notify::new());
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        let wake = logged.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[billing-sync] {line}");
                }
                sink.lock().expect("log lock").push(line);
                wake.notify_waiters();
            }
        });
        let addr = match tokio::time::timeout(START_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "billing-sync did not start listening (exit: {status:?}); logs:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        Server {
            child,
            base_url: format!("http://{addr}"),
            logs,
            logged,
            reader: Some(reader),
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running child")
    }

    /// The server's resident memory now, in bytes (Linux: `VmRSS` of `/proc/PID/status`).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }

    /// Every log line read so far. For a line the server writes as it answers, use
    /// [`Server::wait_for_log`]: this process may not have read it yet.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first log line for which `matches` holds, waiting (bounded) until it has been read;
    /// panics naming `what`, with the lines read, when it never comes.
    pub async fn wait_for_log(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = async {
            loop {
                // Registered before looking, so a line added in between still wakes us.
                let added = self.logged.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if let Some(line) = self.logs().into_iter().find(|line| matches(line)) {
                    return line;
                }
                added.await;
            }
        };
        match tokio::time::timeout(LOG_TIMEOUT, found).await {
            Ok(line) => line,
            Err(_) => panic!(
                "waited {LOG_TIMEOUT:?} for the log line: {what}; lines read:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL billing-sync");
        self.child.wait().await.expect("reap billing-sync");
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn terminate(self) -> ExitStatus {
        self.terminate_and_read_logs().await.0
    }

    /// Sends SIGTERM, waits (bounded) for the process to exit, and returns its status with every
    /// line it wrote, the last ones included.
    pub async fn terminate_and_read_logs(mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().expect("a running child");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("billing-sync exits after SIGTERM")
            .expect("wait for billing-sync");
        // The process is gone, so its stderr ends: the reader finishes once it has read it all.
        let reader = self.reader.take().expect("read until the server ends");
        tokio::time::timeout(LOG_TIMEOUT, reader)
            .await
            .expect("the server's stderr is read to its end")
            .expect("the log reader");
        let logs = self.logs.lock().expect("log lock").clone();
        (status, logs)
    }
}

fn listening_addr(line: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("message")?.as_str()? != "listening" {
        return None;
    }
    Some(event.get("addr")?.as_str()?.to_owned())
}

/// A page of the repository's documentation (`README.md`, `docs/…`), by its path from the
/// repository's root: tests hold the text to the code.
pub fn doc(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The program `name` from the PATH. Missing, the test passes saying SKIPPED (the test script
/// names it at the end), unless `require` is set to 1 in the environment: `./scripts/test`
/// installs every such tool and sets it, so that there a missing tool is a failure.
pub fn tool(name: &str, require: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        missing(&format!("{name}: not on the PATH"), require);
    }
    found
}

/// Says that `what` a test needs is missing: a failure when `require` is set to 1 in the
/// environment (`./scripts/test` installs what its tests need and sets it), else the test goes
/// on saying SKIPPED, which the script names at the end.
pub fn missing(what: &str, require: &str) {
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{what}, and {require}=1 requires it"
    );
    eprintln!("SKIPPED: {what} (./scripts/test installs it)");
}

/// A client for the server and the stand-ins, all plain HTTP on 127.0.0.1. It trusts no
/// certificate: otherwise each client built reads and parses the system's trust store, which
/// the hostile test's senders (a client per delivery, 32 a second) paid with most of two cores,
/// so that their latency measured the test process rather than the server.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Held by the tests of the heavy group (`tests/it/heavy.rs` declares them), so that no
/// two of them run at once on two cores. Lighter tests still run alongside.
pub async fn one_load_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOAD.lock().await
}

/// Posts `body` to the Stripe webhook route, signed with `secret` at time `t` (or unsigned).
pub async fn post_stripe(
    server: &Server,
    body: &[u8],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = http()
        .post(server.url("/api/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.expect("POST the Stripe webhook")
}

/// Delivers a signed `customer.created` of `cus_{tag}` (event `evt_{tag}`), as Stripe would;
/// the answer's status.
pub async fn deliver_a_customer(server: &Server, secret: &str, tag: &str) -> u16 {
    let body = serde_json::to_vec(&serde_json::json!({"id": format!("evt_{tag}"),
        "object": "event", "type": "customer.created", "created": now(), "livemode": false,
        "data": {"object": {"id": format!("cus_{tag}"), "object": "customer"}}}))
    .expect("JSON");
    let signature = stripe_signature(secret, now(), &body);
    post_stripe(server, &body, Some(signature))
        .await
        .status()
        .as_u16()
}

/// Reads until the server closes the connection or `limit` passes.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// A valid `Stripe-Signature` header for `body` at time `t`.
pub fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        billing_sync_projection::stripe_signature::sign(secret, t, body)
    )
}

/// Posts `body` to the Clerk webhook route as Svix would, signed with `secret` by the svix
/// crate's own signer.
pub async fn post_clerk(
    server: &Server,
    secret: &str,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> reqwest::Response {
    let signature = svix::webhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .sign(message_id, timestamp, body)
        .expect("sign");
    post_clerk_raw(
        server,
        &[
            ("svix-id", message_id.to_owned()),
            ("svix-timestamp", timestamp.to_string()),
            ("svix-signature", signature),
        ],
        body,
    )
    .await
}

/// Posts `body` to the Clerk webhook route with exactly these headers.
pub async fn post_clerk_raw(
    server: &Server,
    headers: &[(&str, String)],
    body: &[u8],
) -> reqwest::Response {
    let mut request = http()
        .post(server.url("/api/v1/webhooks/clerk"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("POST the Clerk webhook")
}

/// A Clerk `organizationMembership.*` event making `user` an admin of `org` (an organization
/// named Acme), dated a minute ago.
pub fn membership_body(event_type: &str, org: &str, user: &str) -> Vec<u8> {
    let updated = now() * 1000 - 60_000;
    serde_json::to_vec(
        &serde_json::json!({"type": event_type, "object": "event", "data": {
        "id": format!("orgmem_{org}_{user}"), "role": "org:admin",
        "organization": {"id": org, "name": "Acme", "slug": "acme", "updated_at": updated},
        "public_user_data": {"user_id": user, "identifier": "jane@acme.example"},
        "created_at": updated, "updated_at": updated}}),
    )
    .expect("JSON")
}

/// Makes `user` a member of `org` through a Clerk delivery signed with `clerk_secret`.
pub async fn add_member(server: &Server, clerk_secret: &str, org: &str, user: &str) {
    let body = membership_body("organizationMembership.created", org, user);
    let id = format!("msg_add_{org}_{user}");
    let response = post_clerk(server, clerk_secret, &id, now(), &body).await;
    assert_eq!(response.status(), 200, "adding {user} to {org}");
}

/// A completed checkout that links `customer` to `org`, as billing-sync's checkout makes it
/// (the organization in the session's metadata and its `client_reference_id`).
pub fn checkout_body(customer: &str, org: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"id": format!("evt_checkout_{customer}"), "object": "event",
        "type": "checkout.session.completed", "created": now(), "livemode": false,
        "data": {"object": {"id": format!("cs_{customer}"), "object": "checkout.session",
            "customer": customer, "client_reference_id": org,
            "metadata": {"organization_id": org}, "mode": "subscription"}}}),
    )
    .expect("JSON")
}

/// Links `customer` to `org` the way it happens in production, a completed checkout, delivered
/// signed with `stripe_secret`.
pub async fn checkout(server: &Server, stripe_secret: &str, customer: &str, org: &str) {
    let body = checkout_body(customer, org);
    let signature = stripe_signature(stripe_secret, now(), &body);
    let response = post_stripe(server, &body, Some(signature)).await;
    assert_eq!(response.status(), 200, "checkout of {customer} for {org}");
}

/// The JSON body of a response, with its status.
pub async fn status_and_json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Polls `check` every 10 ms until it yields `Some`, for at most `within`; panics naming `what`
/// when it never does. For conditions nothing signals (a request reaching a stand-in; a log line
/// has [`Server::wait_for_log`]): a bound, never a sleep standing in for synchronisation.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
