//! What the benchmarks (`crates/billing-sync/benches`) share: CPU time read from `/proc`
//! ([`cpu`]), and the figures computed from what they measured ([`figures`]).

pub mod cpu;
pub mod figures;
