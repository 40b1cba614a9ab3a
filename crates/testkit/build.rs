//! What this build of the tests can run, decided once so that a test that cannot run is built
//! ignored, saying what it needs (`cargo test` lists it as such), rather than run without it
//! and reported as passed:
//!
//! - the tests' PostgreSQL variants: when `./scripts/with-postgres` (and so `./scripts/test`)
//!   started a server for them, it sets `BILLING_SYNC_TEST_REQUIRE_POSTGRES=1`;
//! - the tests of the Python tools and Chromium that `./scripts/test` installs: it sets each
//!   one's `BILLING_SYNC_TEST_REQUIRE_…=1`;
//! - the conformance tests on the shared provider fixtures: when `BILLING_SYNC_FIXTURES` names
//!   them, `BILLING_SYNC_TEST_REQUIRE_FIXTURES=1` (CI) insists on them, or they are at
//!   `../shared/fixtures` beside the repository when this is built.

/// The switches `./scripts/test` sets for the tools it installs.
const TOOLS: [&str; 5] = [
    "BILLING_SYNC_TEST_REQUIRE_OPENAPI_VALIDATOR",
    "BILLING_SYNC_TEST_REQUIRE_SCHEMATHESIS",
    "BILLING_SYNC_TEST_REQUIRE_CHROMIUM",
    "BILLING_SYNC_TEST_REQUIRE_PYTHON_CLIENT",
    "BILLING_SYNC_TEST_REQUIRE_STANDARD_WEBHOOKS",
];

fn main() {
    let set = |name: &str| {
        println!("cargo::rerun-if-env-changed={name}");
        std::env::var(name).as_deref() == Ok("1")
    };
    println!("cargo::rustc-check-cfg=cfg(billing_sync_postgres)");
    if set("BILLING_SYNC_TEST_REQUIRE_POSTGRES") {
        println!("cargo::rustc-cfg=billing_sync_postgres");
    }
    println!("cargo::rustc-check-cfg=cfg(billing_sync_tools)");
    let tools: Vec<bool> = TOOLS.iter().map(|name| set(name)).collect();
    if tools.iter().all(|installed| *installed) {
        println!("cargo::rustc-cfg=billing_sync_tools");
    }
    println!("cargo::rustc-check-cfg=cfg(billing_sync_fixtures)");
    println!("cargo::rerun-if-env-changed=BILLING_SYNC_FIXTURES");
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.is_dir() {
        // Its removal is noticed; its later arrival is not (set BILLING_SYNC_FIXTURES then).
        println!("cargo::rerun-if-changed={}", beside.display());
    }
    // The tests read BILLING_SYNC_FIXTURES when it is set, else the folder beside.
    let found = match std::env::var_os("BILLING_SYNC_FIXTURES") {
        Some(named) => std::path::Path::new(&named).is_dir(),
        None => beside.is_dir(),
    };
    if set("BILLING_SYNC_TEST_REQUIRE_FIXTURES") || found {
        println!("cargo::rustc-cfg=billing_sync_fixtures");
    }
}
