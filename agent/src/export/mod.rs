//! Exporters: each reads the aggregator (and the span assembler) and nothing else.
pub mod otlp;
pub mod prometheus;
