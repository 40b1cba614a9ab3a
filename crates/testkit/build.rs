//! Whether this build runs the tests' PostgreSQL variants: when `./scripts/with-postgres` (and
//! so `./scripts/test`) started a server for them, it sets `BILLING_SYNC_TEST_REQUIRE_POSTGRES=1`.
//! Otherwise they are built ignored (`cargo test` lists them as such, saying what they need),
//! rather than run with no database and reported as passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(billing_sync_postgres)");
    println!("cargo::rerun-if-env-changed=BILLING_SYNC_TEST_REQUIRE_POSTGRES");
    if std::env::var("BILLING_SYNC_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=billing_sync_postgres");
    }
}
