//! kmesh-agent: loads the eBPF data plane, keeps its maps in step with the
//! mesh config, and turns the probe's records into metrics.
//!
//! Data flows one way: config -> model -> maps; ring buffer -> aggregator ->
//! exporters.
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
pub mod xds;
