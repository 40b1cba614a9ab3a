//! The heavy group, declared once: the tests that put the machine under load (a thousand
//! connections, a kill or a restart under a running load, two replicas, schemathesis), each
//! measuring latency or memory against a bound that a second load beside it would blur. In
//! the group one runs at a time (each takes [`crate::support::one_load_at_a_time`], and only
//! they do); lighter tests run alongside. `./scripts/test --quick` leaves the group out (it
//! reads this list), and the test below holds the list to the tests that take the load.

/// The group: each test's module and name.
pub const HEAVY: &[&str] = &[
    "credits::two_replicas_spend_exactly_the_balance_under_retries_and_a_kill",
    "exhaustion::api_bodies_are_bounded_before_anyone_is_authenticated",
    "exhaustion::answers_nobody_reads_are_dropped_with_their_connections",
    "exhaustion::keep_alive_holders_do_not_shut_real_deliveries_out",
    "exhaustion::at_the_open_files_limit_the_server_keeps_answering_and_says_why",
    "hostile::real_deliveries_get_through_a_thousand_hostile_connections",
    "hostile::a_thousand_unfinished_oversized_heads_keep_memory_bounded",
    "outbox::two_replicas_never_send_an_older_state_after_a_newer_one",
    "resilience::a_service_killed_mid_run_loses_nothing_acknowledged",
    "resilience::a_postgres_restart_mid_run_loses_nothing_acknowledged",
    "resilience::two_replicas_on_one_postgres_end_in_the_in_order_state",
    "schemathesis::every_answer_conforms_to_the_served_spec",
    "security::hundreds_of_stalled_clients_do_not_starve_a_real_delivery",
    "security::a_thousand_stalled_megabyte_bodies_keep_memory_bounded",
];

/// Every test whose body takes the load is in the group, and every test of the group takes it:
/// a new heavy test that forgot either would run beside another load, or in the quick lane.
#[test]
fn the_heavy_group_is_exactly_the_tests_that_take_the_load() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/it");
    let mut taking = Vec::new();
    for entry in std::fs::read_dir(&folder).expect("tests/it").flatten() {
        let path = entry.path();
        let Some(module) = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|_| path.extension().is_some_and(|extension| extension == "rs"))
            // This file names the call; it does not make it.
            .filter(|module| *module != "heavy")
        else {
            continue;
        };
        let source = std::fs::read_to_string(&path).expect("a test module");
        // The function a line belongs to: the last `fn name(` above it.
        let mut function = None;
        for line in source.lines() {
            if let Some(start) = line.find("fn ") {
                let name: String = line[start + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if line[start + 3 + name.len()..].starts_with(['(', '<']) {
                    function = Some(name);
                }
            }
            if line.contains("one_load_at_a_time().await")
                && let Some(function) = &function
            {
                taking.push(format!("{module}::{function}"));
            }
        }
    }
    taking.sort();
    let mut declared: Vec<String> = HEAVY.iter().map(|name| (*name).to_owned()).collect();
    declared.sort();
    assert_eq!(
        taking, declared,
        "the tests that take one_load_at_a_time() (left) and the heavy group (right)"
    );
}
