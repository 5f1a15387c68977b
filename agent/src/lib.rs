//! kmesh-agent: loads the eBPF data plane, keeps its maps in step with the
//! mesh config, and turns the probe's records into metrics.
//!
//! Data flows one way: sources (`config`, `xds`) -> `model` -> `control` ->
//! `maps`; ring buffer -> `probe` -> `aggregator` (and `spans`) -> `export`,
//! `admin`. Imports follow it: no module imports one that imports it back
//! (tests/layout.rs checks, ARCHITECTURE.md draws it).
pub mod addr;
pub mod admin;
pub mod agent_stats;
pub mod aggregator;
pub mod backoff;
pub mod capabilities;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod export;
pub mod http;
pub mod maps;
pub mod model;
pub mod probe;
pub mod process;
pub mod readiness;
pub mod reload;
pub mod run;
pub mod shared;
pub mod spans;
pub mod sysfs;
#[cfg(test)]
pub(crate) mod test_records;
pub mod xds;
