//! Exporters: each reads the aggregator and nothing else.
pub mod health;
pub mod prometheus;
