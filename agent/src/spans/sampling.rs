//! Which connections are traced: every failed, reset or slow one, and a
//! share of the rest chosen by trace id with the rule of OpenTelemetry's
//! TraceIdRatioBased sampler, so samplers downstream agree with ours.
//!
//! The agents at the two ends of a connection decide apart, so a trace is
//! whole or absent only if both decide alike from what both see:
//! - the ratio: both derive the same trace id (`ids`), so both agree;
//! - errors: a connection that one end aborts (reset sent, timeout) ends
//!   unorderly at the other end too (it receives the reset, or its next
//!   segment is answered with one), so both keep it;
//! - slowness is measured by each end on its own (connect latency only
//!   by the client; each its own RTT), so it keeps a trace only where one
//!   agent decides for all its spans: `slowness_counts` is false for a
//!   connection whose other end may be traced on another node.
use std::time::Duration;

use kmesh_common::{ConnEvent, close_reason};
use opentelemetry::trace::TraceId;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingSettings {
    /// Share of normal connections kept, 0 to 1.
    pub ratio: f64,
    /// Connect latency or smoothed RTT from which a connection is slow.
    pub slow_threshold: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Kept, and why: `error`, `slow` or `ratio`.
    Keep(&'static str),
    Drop,
}

pub fn decide(
    s: &SamplingSettings,
    trace_id: TraceId,
    ev: &ConnEvent,
    connect_latency_ns: u64,
    slowness_counts: bool,
) -> Decision {
    if ev.close_reason != close_reason::FIN {
        return Decision::Keep("error");
    }
    if slowness_counts && is_slow(s, ev, connect_latency_ns) {
        return Decision::Keep("slow");
    }
    if ratio_keeps(s.ratio, trace_id) {
        Decision::Keep("ratio")
    } else {
        Decision::Drop
    }
}

fn is_slow(s: &SamplingSettings, ev: &ConnEvent, connect_latency_ns: u64) -> bool {
    let slow_ns = s.slow_threshold.as_nanos().min(u128::from(u64::MAX)) as u64;
    let srtt_ns = u64::from(ev.srtt_us) * 1000;
    connect_latency_ns >= slow_ns || srtt_ns >= slow_ns
}

/// The lower 64 bits of the trace id, halved, against ratio * 2^63.
fn ratio_keeps(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) >> 1;
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    low < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::Record;

    fn settings(ratio: f64) -> SamplingSettings {
        SamplingSettings {
            ratio,
            slow_threshold: Duration::from_millis(100),
        }
    }

    fn closed(reason: u8, srtt_us: u32) -> ConnEvent {
        Record::bare().reason(reason).srtt_us(srtt_us).build()
    }

    #[test]
    fn failures_resets_and_slow_connections_are_always_kept() {
        let s = settings(0.0);
        let id = TraceId::from(7u128);
        for reason in [
            close_reason::RST_SENT,
            close_reason::RST_RECEIVED,
            close_reason::TIMEOUT,
            close_reason::CONNECT_REFUSED,
            close_reason::CONNECT_FAILED,
        ] {
            assert_eq!(
                decide(&s, id, &closed(reason, 10), 0, false),
                Decision::Keep("error")
            );
        }
        let fin = closed(close_reason::FIN, 10);
        assert_eq!(
            decide(&s, id, &fin, 100_000_000, true),
            Decision::Keep("slow")
        );
        assert_eq!(
            decide(&s, id, &closed(close_reason::FIN, 150_000), 0, true),
            Decision::Keep("slow")
        );
        assert_eq!(decide(&s, id, &fin, 99_999_999, true), Decision::Drop);
        // Where the other end decides apart, slowness does not keep a trace.
        assert_eq!(decide(&s, id, &fin, 100_000_000, false), Decision::Drop);
        assert_eq!(
            decide(&s, id, &closed(close_reason::FIN, 150_000), 0, false),
            Decision::Drop
        );
    }

    #[test]
    fn the_ratio_keeps_its_share_of_random_trace_ids() {
        let s = settings(0.25);
        let fin = closed(close_reason::FIN, 10);
        let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
        let n = 40_000;
        let kept = (0..n)
            .filter(|_| {
                use opentelemetry_sdk::trace::IdGenerator;
                decide(&s, ids.new_trace_id(), &fin, 0, true) != Decision::Drop
            })
            .count() as f64;
        // Binomial sd at n = 40000, p = 0.25 is ~87: 5 sd either side.
        assert!(
            (10_000.0 - 435.0..=10_000.0 + 435.0).contains(&kept),
            "{kept}"
        );
        assert_eq!(
            decide(&settings(1.0), TraceId::from(u128::MAX), &fin, 0, true),
            Decision::Keep("ratio")
        );
    }

    /// The ratio decision is the one OpenTelemetry's own `TraceIdRatioBased`
    /// sampler makes for the same trace id, so a trace the agent keeps is
    /// kept by every SDK sampling at the same ratio, and the other way round.
    #[test]
    fn the_ratio_decides_as_opentelemetrys_trace_id_ratio_sampler() {
        use opentelemetry::trace::SpanKind;
        use opentelemetry_sdk::trace::{
            IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
        };
        let fin = closed(close_reason::FIN, 10);
        let random = RandomIdGenerator::default();
        // Random ids, and ones at the edges of the lower 64 bits.
        let ids: Vec<TraceId> = (0..20_000)
            .map(|_| random.new_trace_id())
            .chain(
                [0, 1, u64::MAX >> 1, u64::MAX, 1 << 63, (1 << 62) + 1]
                    .map(|low| TraceId::from(u128::from(low) | (0xfeed_u128 << 64))),
            )
            .collect();
        for ratio in [0.0, 1e-6, 0.01, 0.25, 0.5, 0.999, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let mut kept = 0;
            for &id in &ids {
                let theirs = sdk
                    .should_sample(None, id, "connection", &SpanKind::Client, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                let ours = decide(&settings(ratio), id, &fin, 0, false) != Decision::Drop;
                assert_eq!(ours, theirs, "ratio {ratio}, trace id {id}");
                kept += usize::from(ours);
            }
            // Not a vacuous agreement: the middle ratios keep some and drop some.
            if (0.01..1.0).contains(&ratio) {
                assert!(kept > 0 && kept < ids.len(), "ratio {ratio} kept {kept}");
            }
        }
    }
}
