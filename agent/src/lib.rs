//! kmesh-agent: loads the eBPF data plane, keeps its maps in step with the
//! mesh config, and turns the probe's records into metrics.
pub mod config;
pub mod model;
