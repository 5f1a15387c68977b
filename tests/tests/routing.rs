//! Connect-time routing on the real kernel: policies, getpeername(), and
//! destinations that are not services.
use kmesh_tests::harness::{
    AGENT_ATTACH_TYPES, Topology, attached_programs, echo_mesh, privileged,
};

const VIP: &str = "198.18.0.10:80";
const BACKENDS: [&str; 4] = [
    "127.0.0.2:8080",
    "127.0.0.3:8080",
    "127.0.0.4:8080",
    "127.0.0.5:8080",
];

fn mesh(policy: &str, backends: &[(&str, u32)]) -> String {
    echo_mesh(VIP, policy, backends)
}

/// Bounds that a correct sampler leaves with probability < 1e-6 per backend:
/// the binomial mean ± 5 standard deviations.
fn five_sigma(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 5.0 * sd, mean + 5.0 * sd)
}

#[test]
fn round_robin_spreads_exactly_evenly() {
    if !privileged("round_robin_spreads_exactly_evenly") {
        return;
    }
    let topo = Topology::new("rr");
    let _backends = topo.serve(&BACKENDS, false);
    let _agent = topo.start_agent(&mesh("round_robin", &BACKENDS.map(|b| (b, 1))));
    let report = topo.client(VIP, 1000, &["--concurrency", "4"]);
    assert_eq!(report.ok, 1000, "failures: {:?}", report.failures);
    for b in BACKENDS {
        assert_eq!(report.backends.get(b), Some(&250), "{:?}", report.backends);
    }
}

#[test]
fn weighted_shares_follow_weights() {
    if !privileged("weighted_shares_follow_weights") {
        return;
    }
    let topo = Topology::new("weighted");
    let _backends = topo.serve(&BACKENDS[..3], false);
    let weights = [(BACKENDS[0], 80), (BACKENDS[1], 10), (BACKENDS[2], 10)];
    let _agent = topo.start_agent(&mesh("weighted", &weights));
    let n = 2000;
    let report = topo.client(VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    for (b, w) in weights {
        let got = *report.backends.get(b).unwrap_or(&0) as f64;
        let (lo, hi) = five_sigma(n, f64::from(w) / 100.0);
        assert!(
            (lo..=hi).contains(&got),
            "{b}: {got} outside [{lo:.0}, {hi:.0}] for weight {w}%"
        );
    }
}

#[test]
fn weighted_shares_hold_for_weights_near_the_u32_limit() {
    if !privileged("weighted_shares_hold_for_weights_near_the_u32_limit") {
        return;
    }
    let topo = Topology::new("weighted-big");
    let _backends = topo.serve(&BACKENDS[..2], false);
    // A total of 3 * 2^30, as xDS weight arithmetic can reach: a draw of
    // 32 random bits modulo the total makes the first 2^30 values twice as
    // likely, so the 2/3 backend would get 3/4.
    let weights = [(BACKENDS[0], 1u32 << 31), (BACKENDS[1], 1 << 30)];
    let _agent = topo.start_agent(&mesh("weighted", &weights));
    let n = 3000;
    let report = topo.client(VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    for (b, share) in [(BACKENDS[0], 2.0 / 3.0), (BACKENDS[1], 1.0 / 3.0)] {
        let got = *report.backends.get(b).unwrap_or(&0) as f64;
        let (lo, hi) = five_sigma(n, share);
        assert!(
            (lo..=hi).contains(&got),
            "{b}: {got} outside [{lo:.0}, {hi:.0}] for a share of {share:.3}"
        );
    }
}

#[test]
fn a_weight_of_zero_drains_a_backend_of_a_weighted_service() {
    if !privileged("a_weight_of_zero_drains_a_backend_of_a_weighted_service") {
        return;
    }
    let topo = Topology::new("weighted-zero");
    let _backends = topo.serve(&BACKENDS[..3], false);
    // The drained backend sits between two live ones: the search over
    // cumulative weights must step over it, whatever the draw.
    let weights = [(BACKENDS[0], 1), (BACKENDS[1], 0), (BACKENDS[2], 1)];
    let _agent = topo.start_agent(&mesh("weighted", &weights));
    let n = 400;
    let report = topo.client(VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    assert_eq!(
        report.backends.get(BACKENDS[1]),
        None,
        "{:?}",
        report.backends
    );
    let (lo, hi) = five_sigma(n, 0.5);
    for b in [BACKENDS[0], BACKENDS[2]] {
        let got = *report.backends.get(b).unwrap_or(&0) as f64;
        assert!(
            (lo..=hi).contains(&got),
            "{b}: {got} outside [{lo:.0}, {hi:.0}]"
        );
    }
}

#[test]
fn random_policy_uses_every_backend_evenly() {
    if !privileged("random_policy_uses_every_backend_evenly") {
        return;
    }
    let topo = Topology::new("random");
    let _backends = topo.serve(&BACKENDS, false);
    let _agent = topo.start_agent(&mesh("random", &BACKENDS.map(|b| (b, 1))));
    let n = 2000;
    let report = topo.client(VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n);
    let (lo, hi) = five_sigma(n, 0.25);
    for b in BACKENDS {
        let got = *report.backends.get(b).unwrap_or(&0) as f64;
        assert!(
            (lo..=hi).contains(&got),
            "{b}: {got} outside [{lo:.0}, {hi:.0}]"
        );
    }
}

#[test]
fn getpeername_returns_the_vip() {
    if !privileged("getpeername_returns_the_vip") {
        return;
    }
    let topo = Topology::new("peer");
    let _backends = topo.serve(&BACKENDS[..2], false);
    let _agent = topo.start_agent(&mesh("round_robin", &[(BACKENDS[0], 1), (BACKENDS[1], 1)]));
    let report = topo.client(VIP, 20, &[]);
    assert_eq!(report.ok, 20);
    assert_eq!(report.peer_names.len(), 1, "{:?}", report.peer_names);
    assert_eq!(report.peer_names.get(VIP), Some(&20));
    assert_eq!(
        report.backends.len(),
        2,
        "both backends answered: {:?}",
        report.backends
    );
}

#[test]
fn ipv6_and_v4_mapped_clients_are_routed() {
    if !privileged("ipv6_and_v4_mapped_clients_are_routed") {
        return;
    }
    let topo = Topology::new("v6");
    let _backends = topo.serve(&["[::1]:8080", BACKENDS[0]], false);
    let config = format!(
        "{}  - name: echo6\n    vip: \"[fd00::10]:80\"\n    backends:\n      - address: \"[::1]:8080\"\n",
        mesh("round_robin", &[(BACKENDS[0], 1)])
    );
    let _agent = topo.start_agent(&config);
    let v6 = topo.client("[fd00::10]:80", 10, &[]);
    assert_eq!(v6.ok, 10, "failures: {:?}", v6.failures);
    assert_eq!(v6.backends.get("[::1]:8080"), Some(&10));
    assert_eq!(v6.peer_names.get("[fd00::10]:80"), Some(&10));
    // A v6 socket dialling the IPv4 VIP as ::ffff:198.18.0.10.
    let mapped = topo.client("[::ffff:198.18.0.10]:80", 10, &[]);
    assert_eq!(mapped.ok, 10, "failures: {:?}", mapped.failures);
    assert_eq!(mapped.backends.get(BACKENDS[0]), Some(&10));
    // getpeername() on the v6 socket answers in the form it dialled.
    assert_eq!(
        mapped.peer_names.get("[::ffff:198.18.0.10]:80"),
        Some(&10),
        "{:?}",
        mapped.peer_names
    );
}

#[test]
fn other_destinations_pass_untouched() {
    if !privileged("other_destinations_pass_untouched") {
        return;
    }
    let topo = Topology::new("passthru");
    let _backends = topo.serve(&BACKENDS[..2], false);
    let _agent = topo.start_agent(&mesh("round_robin", &[(BACKENDS[0], 1)]));
    // A backend dialled directly is reached as itself, not re-routed.
    let direct = topo.client(BACKENDS[1], 10, &[]);
    assert_eq!(direct.backends.get(BACKENDS[1]), Some(&10));
    assert_eq!(direct.peer_names.get(BACKENDS[1]), Some(&10));
    // The VIP on a port that is not a service goes to the VIP itself, which
    // has no route in the test's namespace.
    let other_port = topo.client("198.18.0.10:81", 5, &[]);
    assert_eq!(other_port.ok, 0);
    assert_eq!(
        other_port.failures.get("unreachable"),
        Some(&5),
        "{:?}",
        other_port.failures
    );
    // Only TCP is routed: UDP to the service's own VIP and port goes to the
    // VIP, unreachable here, while a UDP listener waits on the backend.
    let udp = topo.testbed_json(&["udp", "--target", VIP, "--listen", BACKENDS[0]]);
    assert_eq!(udp["connect"], "unreachable", "{udp}");
    assert_eq!(udp["datagrams_at_backend"], 0, "{udp}");
    // The same datagram sent to the backend itself arrives: the check can see one.
    let direct = topo.testbed_json(&["udp", "--target", BACKENDS[0], "--listen", BACKENDS[0]]);
    assert_eq!(direct["connect"], "ok", "{direct}");
    assert_eq!(direct["datagrams_at_backend"], 1, "{direct}");
}

#[test]
fn routing_only_routes_without_observing() {
    if !privileged("routing_only_routes_without_observing") {
        return;
    }
    let topo = Topology::new("routeonly");
    let _backends = topo.serve(&BACKENDS[..2], false);
    let agent = topo.start_agent_with(
        &mesh("round_robin", &[(BACKENDS[0], 1), (BACKENDS[1], 1)]),
        &["--routing-only"],
    );
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        let expected = u32::from(name != "sock_ops");
        assert_eq!(
            attached_programs(&topo.cgroup, attach_type),
            expected,
            "{name} programs on the cgroup with --routing-only"
        );
    }
    let report = topo.client(VIP, 40, &[]);
    assert_eq!(report.ok, 40, "failures: {:?}", report.failures);
    assert_eq!(report.backends.get(BACKENDS[0]), Some(&20));
    assert_eq!(report.backends.get(BACKENDS[1]), Some(&20));
    assert_eq!(
        report.peer_names.get(VIP),
        Some(&40),
        "getpeername still shows the VIP"
    );
    let metrics = agent.metrics();
    assert_eq!(
        metrics.value("kmesh_probe_events_total", &[]),
        0.0,
        "no probe records without the probe:\n{}",
        metrics.0
    );
}

#[test]
fn a_socket_whose_routed_connect_failed_is_not_labelled_when_it_connects_elsewhere() {
    if !privileged(
        "a_socket_whose_routed_connect_failed_is_not_labelled_when_it_connects_elsewhere",
    ) {
        return;
    }
    let topo = Topology::new("reconnect");
    let _backends = topo.serve(&BACKENDS[1..2], false);
    // The only backend has no route in the namespace: connect() fails at
    // once (ENETUNREACH), before any SYN, after the program chose it.
    let agent = topo.start_agent(&mesh("round_robin", &[("10.255.0.1:80", 1)]));
    let seen = topo.testbed_json(&["reconnect", "--first", VIP, "--then", BACKENDS[1]]);
    assert_eq!(seen["first"], "unreachable", "{seen}");
    assert_eq!(seen["then"], "ok", "{seen}");
    assert_eq!(
        seen["peer"], BACKENDS[1],
        "getpeername() must name the address the socket reached, not the VIP of its failed attempt"
    );
    // The probe labels the connection by what connect() did to it: nothing.
    let m = agent.metrics_when(|m| m.value("kmesh_tcp_connections_closed_total", &[]) >= 1.0);
    let echo = [("destination_service", "echo")];
    assert_eq!(m.value("kmesh_tcp_connections_opened_total", &echo), 0.0);
    let unknown = [("destination_service", "unknown")];
    assert_eq!(m.value("kmesh_tcp_connections_opened_total", &unknown), 1.0);
}

#[test]
fn round_robin_goes_on_where_it_was_after_an_update() {
    if !privileged("round_robin_goes_on_where_it_was_after_an_update") {
        return;
    }
    let topo = Topology::new("rr-update");
    let _backends = topo.serve(&BACKENDS, false);
    let agent = topo.start_agent(&mesh(
        "round_robin",
        &[(BACKENDS[0], 1), (BACKENDS[1], 1), (BACKENDS[2], 1)],
    ));
    let mut first_backend = 0;
    for update in 1..=6u32 {
        // The third backend changes each time: a new generation of the service.
        let third = BACKENDS[2 + (update % 2) as usize];
        let config = mesh(
            "round_robin",
            &[(BACKENDS[0], 1), (BACKENDS[1], 1), (third, 1)],
        );
        let tmp = agent.config_path.with_extension("tmp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, &agent.config_path).unwrap();
        agent.metrics_when(|m| {
            m.value("kmesh_config_reloads_total", &[("result", "success")]) >= f64::from(update)
        });
        let report = topo.client(VIP, 1, &[]);
        assert_eq!(report.ok, 1, "failures: {:?}", report.failures);
        first_backend += report.backends.get(BACKENDS[0]).copied().unwrap_or(0);
    }
    // Six turns in a row over three backends: each backend twice, wherever
    // the cursor stood. A cursor reset by each update sends all six to the
    // first backend.
    assert_eq!(
        first_backend, 2,
        "the first backend's share of six connections"
    );
}

#[test]
fn a_service_whose_backends_vanished_refuses_the_connect_instead_of_passing_it_through() {
    if !privileged(
        "a_service_whose_backends_vanished_refuses_the_connect_instead_of_passing_it_through",
    ) {
        return;
    }
    // The window a connect() could fall in, its service's backends replaced
    // twice between its two reads, held open: the service now points at a
    // generation that has no backends.
    use aya::maps::{HashMap, Map, MapData};
    use kmesh_common::{ServiceKey, ServiceValue};
    let topo = Topology::new("vanished");
    let _servers = topo.serve(&[BACKENDS[0]], false);
    let agent = topo.start_agent(&mesh("random", &[(BACKENDS[0], 1)]));
    assert_eq!(topo.client(VIP, 2, &[]).ok, 2);
    let pinned = MapData::from_pin(topo.bpffs.join("KM_SERVICES")).expect("the pinned KM_SERVICES");
    let mut services: HashMap<MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(Map::HashMap(pinned)).expect("KM_SERVICES as a hash map");
    let entries: Vec<(ServiceKey, ServiceValue)> = services.iter().map(|e| e.unwrap()).collect();
    assert_eq!(entries.len(), 1);
    for (key, mut value) in entries {
        value.generation += 1000;
        services
            .insert(key, value, 0)
            .expect("rewriting the service");
    }

    let report = topo.client(VIP, 3, &[]);
    assert_eq!(report.failures.get("denied"), Some(&3), "{report:?}");
    let refused = |m: &kmesh_tests::harness::Metrics, reason| {
        m.value("kmesh_route_refused_connects_total", &[("reason", reason)])
    };
    let m = agent.metrics_when(|m| refused(m, "backend_missing") >= 3.0);
    assert_eq!(refused(&m, "backend_missing"), 3.0, "{}", m.0);
    assert_eq!(refused(&m, "no_backends"), 0.0);
}
