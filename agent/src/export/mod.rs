//! Exporters: each reads copies of the aggregator's figures, the agent-wide
//! counters ([`crate::agent_stats`]) and, for traces, the span queue.
pub mod otlp;
pub mod prometheus;
