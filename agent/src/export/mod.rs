//! Exporters: each reads copies of the aggregator's figures, the agent-wide
//! counters ([`crate::agent_stats`]) and, for traces, the span queue.
pub mod otlp;
pub mod prometheus;

/// Under which names the connection counters are published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricNames {
    /// `kmesh_*` only.
    #[default]
    Kmesh,
    /// `kmesh_*`, and the four TCP counters under Istio's names too
    /// (`istio_tcp_*`), for Kiali and Istio's dashboards.
    Istio,
}
