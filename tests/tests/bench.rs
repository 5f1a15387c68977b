//! kmesh-bench runs end to end (shortened): every scenario and load
//! completes without a failed operation, and every part of the report is
//! filled from real measurements. No figure is asserted against a time:
//! speed is for `scripts/bench.sh` to report, not for the tests to judge.
use std::process::Command;

use kmesh_tests::{
    bench::report::{Measure, Results, Scenario},
    harness::{privileged, target_bin},
};

#[test]
fn the_benchmark_harness_runs_every_scenario_and_reports_every_part() {
    if !privileged("the_benchmark_harness_runs_every_scenario_and_reports_every_part") {
        return;
    }
    let json = std::env::temp_dir().join(format!("kmesh-bench-{}.json", std::process::id()));
    let out = Command::new(target_bin("kmesh-bench"))
        .args([
            "run",
            "--repetitions",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--cost-rate",
            "500",
            "--cost-duration",
            "1s",
            "--services",
            "50",
            "--connections",
            "500",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("running kmesh-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kmesh-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Results =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON results")).expect("JSON");
    let _ = std::fs::remove_file(&json);

    for scenario in Scenario::ALL {
        assert!(
            stdout.contains(scenario.label()),
            "table lacks {scenario:?}:\n{stdout}"
        );
        for measure in Measure::ALL {
            let sample = results
                .samples
                .iter()
                .find(|s| s.scenario == scenario && s.measure == measure)
                .unwrap_or_else(|| panic!("no {scenario:?} {measure:?} sample"));
            let r = &sample.report;
            assert!(
                r.ops > 0 && r.failures == 0,
                "{scenario:?} {measure:?}: {r:?}"
            );
            if measure == Measure::Bulk {
                assert!(r.bytes > 0, "{scenario:?} bulk moved nothing: {r:?}");
            } else {
                assert!(
                    r.latency.p50 > 0.0 && r.latency.p50 <= r.latency.p99,
                    "{r:?}"
                );
            }
        }
    }

    let cost = results.agent_cost.expect("agent cost");
    assert_eq!(cost.load.failures, 0);
    // Both ends of every connection are observed: an established and a
    // closed record each.
    assert!(
        (cost.events_per_connection - 4.0).abs() < 0.1,
        "records per connection: {}",
        cost.events_per_connection
    );
    let sockops = cost
        .per_connection
        .per_op
        .get("observe_sockops")
        .expect("sock_ops accounted");
    let connect4 = cost
        .per_connection
        .per_op
        .get("route_connect4")
        .expect("connect4 accounted");
    assert!(sockops.runs >= 4.0 && sockops.ns > 0.0, "{sockops:?}");
    assert!(
        (connect4.runs - 1.0).abs() < 0.05,
        "connect4 runs once per connection: {connect4:?}"
    );
    assert!(cost.agent_peak_rss_bytes > 0);

    let memory = results.memory.expect("memory run");
    assert_eq!(memory.connections, 500);
    assert_eq!(
        memory.tracked, 500.0,
        "the agent tracks every open connection"
    );
    assert!(memory.rss_tracking_bytes > 0 && memory.rss_idle_bytes > 0);

    let ring = results.ring_buffer.expect("ring-buffer run");
    // A 256 KiB ring of records: the event, rounded up to 8 bytes, and an
    // 8-byte header.
    let record = size_of::<kmesh_common::ConnEvent>().next_multiple_of(8) + 8;
    assert_eq!(ring.held_records, (256 * 1024 / record) as f64);
    assert!(
        ring.dropped_records > 0.0,
        "a stopped reader must overflow the ring: {ring:?}"
    );
    assert!(
        !ring.flat_out.is_empty() && ring.flat_out.iter().all(|f| f.connections_per_second > 0.0),
        "every flat-out load made connections: {ring:?}"
    );
}
