//! The probe's record of each connection against what its client counted
//! and what the kernel's TCP_INFO said for the same socket, in every order
//! a connection can end: client first (the HTTP/1.1 pattern), server first,
//! a peer that vanishes, and data that arrives after close().
use std::collections::HashMap;

use kmesh_api::v1::{Connection, Direction};
use kmesh_tests::{
    harness::{Agent, Topology, echo_mesh, privileged, run},
    protocol::Ending,
    sessions::Session,
};

const VIP: &str = "198.18.0.30:80";
const BACKEND: &str = "127.0.0.2:8080";
/// Odd sizes, so an off-by-one cannot hide in a round number.
const REQUEST: &str = "1237";
const REPLY: &str = "2700";

fn start(tag: &str, ending: Ending) -> (Topology, kmesh_tests::harness::Proc, Agent) {
    let topo = Topology::new(tag);
    let servers = topo.serve_ending(&[BACKEND], ending, true);
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[(BACKEND, 1)]));
    (topo, servers, agent)
}

/// The agent's records of `sessions` in `direction`, by client address;
/// fails unless there is one for each.
fn records_of(
    agent: &Agent,
    sessions: &[Session],
    direction: Direction,
) -> HashMap<String, Connection> {
    let sources: Vec<&str> = sessions.iter().map(|s| s.local.as_str()).collect();
    let found = agent.connections_from(&sources, direction);
    assert_eq!(
        found.len(),
        sessions.len(),
        "the agent reported {} of {} {direction:?} connections",
        found.len(),
        sessions.len()
    );
    found
}

/// Counts, per figure, the connections whose probe value differs from the
/// expected one, keeping one example of each; asserts none does.
#[derive(Default)]
struct Mismatches(Vec<(&'static str, usize, String)>);

impl Mismatches {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, figure: &'static str, probe: T, truth: T) {
        if probe == truth {
            return;
        }
        let example = format!("probe {probe:?}, truth {truth:?}");
        match self.0.iter_mut().find(|(f, _, _)| *f == figure) {
            Some((_, n, _)) => *n += 1,
            None => self.0.push((figure, 1, example)),
        }
    }

    fn assert_none(&self, of: usize, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: figures that differ from the truth, as (figure, connections of {of}, first example): {:?}",
            self.0
        );
    }
}

fn sessions(topo: &Topology, args: &[&str]) -> Vec<Session> {
    let mut all = vec![
        "sessions",
        "--target",
        VIP,
        "--request-bytes",
        REQUEST,
        "--reply-bytes",
        REPLY,
    ];
    all.extend_from_slice(args);
    serde_json::from_value(topo.testbed_json(&all)).expect("sessions as JSON")
}

/// Client side against the client's counts and TCP_INFO before the close;
/// server side against the same counts, seen from the other end.
fn check_both_sides(
    agent: &Agent,
    sessions: &[Session],
    reason_out: &str,
    reason_in: &str,
    what: &str,
) {
    let outbound = records_of(agent, sessions, Direction::Outbound);
    let inbound = records_of(agent, sessions, Direction::Inbound);
    let mut out = Mismatches::default();
    let mut inn = Mismatches::default();
    for s in sessions {
        let o = &outbound[&s.local];
        out.check("bytes_sent", o.bytes_sent, s.written);
        out.check("bytes_received", o.bytes_received, s.read);
        out.check("srtt_us", o.srtt_us, s.before_close.rtt_us);
        out.check("min_rtt_us", o.min_rtt_us, s.before_close.min_rtt_us);
        out.check("close_reason", o.close_reason.as_str(), reason_out);
        let i = &inbound[&s.local];
        inn.check("bytes_sent", i.bytes_sent, s.read);
        inn.check("bytes_received", i.bytes_received, s.written);
        inn.check("close_reason", i.close_reason.as_str(), reason_in);
    }
    out.assert_none(sessions.len(), &format!("{what}, client side"));
    inn.assert_none(sessions.len(), &format!("{what}, server side"));
}

#[test]
fn figures_match_the_kernel_when_the_client_closes_first() {
    if !privileged("figures_match_the_kernel_when_the_client_closes_first") {
        return;
    }
    // The server closes 200 ms after the client's EOF: the client's FIN is
    // acknowledged long before the server's arrives, if it ever reaches a
    // socket that is still there.
    let (topo, _servers, agent) = start("clientfirst", Ending::AwaitEof);
    let sessions = sessions(&topo, &["--connections", "60", "--order", "client-first"]);
    for s in &sessions {
        // TCP_INFO agrees with the client's own counts (the SYN is acked too).
        assert_eq!(s.before_close.bytes_acked, s.written + 1, "{s:?}");
        assert_eq!(s.before_close.bytes_received, s.read, "{s:?}");
    }
    check_both_sides(&agent, &sessions, "fin", "fin", "client closes first");
}

#[test]
fn figures_match_the_kernel_when_the_server_closes_first() {
    if !privileged("figures_match_the_kernel_when_the_server_closes_first") {
        return;
    }
    let (topo, _servers, agent) = start("serverfirst", Ending::Close);
    let sessions = sessions(&topo, &["--connections", "60", "--order", "server-first"]);
    for s in &sessions {
        // Read after EOF: the server's FIN counts in the kernel's figure.
        assert_eq!(s.before_close.bytes_received, s.read + 1, "{s:?}");
    }
    check_both_sides(&agent, &sessions, "fin", "fin", "server closes first");
}

/// The server writes once the client has closed; the client's kernel
/// answers with a reset (RFC 1122). TCP_LINGER2 over 60 s keeps the
/// orphaned socket itself in FIN_WAIT2, so the data reaches it whenever it
/// comes.
fn data_after_close(tag: &str, ending: Ending, what: &str) {
    let (topo, _servers, agent) = start(tag, ending);
    let sessions = sessions(
        &topo,
        &[
            "--connections",
            "20",
            "--order",
            "client-first",
            "--fin-wait2-secs",
            "120",
        ],
    );
    check_both_sides(&agent, &sessions, "rst_sent", "rst_received", what);
}

#[test]
fn data_with_the_ack_of_our_fin_is_a_reset_this_side_sent() {
    if !privileged("data_with_the_ack_of_our_fin_is_a_reset_this_side_sent") {
        return;
    }
    // FIN_WAIT1 takes the ACK and sees the data: tcp_done(), no tcp_reset().
    data_after_close(
        "latedata",
        Ending::WriteAfterEof,
        "data with the ACK of our FIN",
    );
}

#[test]
fn data_in_fin_wait2_is_a_reset_this_side_sent() {
    if !privileged("data_in_fin_wait2_is_a_reset_this_side_sent") {
        return;
    }
    // FIN_WAIT2 sees the data: tcp_reset(), which fires the reset
    // tracepoint as if the peer had sent one.
    data_after_close("latedata2", Ending::WriteLateAfterEof, "data in FIN_WAIT2");
}

/// One connection whose server vanishes after the reply; the probe's record
/// of it, checked against the client's TCP_INFO.
fn vanish(tag: &str, ending: Ending, args: &[&str], sysctl: Option<&str>) -> (Session, Connection) {
    let topo = Topology::new(tag);
    if let Some(setting) = sysctl {
        run(std::process::Command::new("ip").args([
            "netns",
            "exec",
            &topo.netns,
            "sysctl",
            "-qw",
            setting,
        ]));
    }
    let _servers = topo.serve_ending(&[BACKEND], ending, false);
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[(BACKEND, 1)]));
    let mut all = vec![
        "vanish",
        "--target",
        VIP,
        "--request-bytes",
        REQUEST,
        "--reply-bytes",
        REPLY,
    ];
    all.extend_from_slice(args);
    let session: Session =
        serde_json::from_value(topo.testbed_json(&all)).expect("a session as JSON");
    let record = records_of(&agent, std::slice::from_ref(&session), Direction::Outbound)
        .remove(&session.local)
        .expect("found above");
    (session, record)
}

/// What every vanished peer leaves: a timeout, with what was acknowledged
/// before it as the bytes sent, and the RTT of the data phase.
fn check_timeout(session: &Session, record: &Connection, what: &str) {
    let mut m = Mismatches::default();
    m.check("close_reason", record.close_reason.as_str(), "timeout");
    // Sent means acknowledged: what the peer had before it vanished.
    m.check(
        "bytes_sent",
        record.bytes_sent,
        session.before_close.bytes_acked - 1,
    );
    m.check("bytes_received", record.bytes_received, session.read);
    m.check("srtt_us", record.srtt_us, session.before_close.rtt_us);
    if let Some(after) = session.after_end {
        m.check("retransmits", record.retransmits, after.total_retrans);
    }
    m.assert_none(1, what);
    assert!(
        record.retransmits > 0,
        "{what}: a timeout follows retransmissions: {record:?}"
    );
}

#[test]
fn a_peer_that_vanishes_mid_connection_times_out_on_the_user_timeout() {
    if !privileged("a_peer_that_vanishes_mid_connection_times_out_on_the_user_timeout") {
        return;
    }
    let (session, record) = vanish(
        "vanishuser",
        Ending::AwaitEof,
        &[
            "--then",
            "read",
            "--extra-bytes",
            "1000",
            "--user-timeout-ms",
            "1000",
        ],
        None,
    );
    assert_eq!(session.outcome, "timeout", "{session:?}");
    assert_eq!(
        session.written,
        session.before_close.bytes_acked - 1 + 1000,
        "{session:?}"
    );
    check_timeout(&session, &record, "TCP_USER_TIMEOUT in ESTABLISHED");
}

#[test]
fn a_peer_that_vanishes_mid_connection_times_out_when_retries_run_out() {
    if !privileged("a_peer_that_vanishes_mid_connection_times_out_when_retries_run_out") {
        return;
    }
    // Two retries (about 1.4 s at loopback's RTO) instead of fifteen.
    let (session, record) = vanish(
        "vanishretry",
        Ending::AwaitEof,
        &["--then", "read", "--extra-bytes", "1000"],
        Some("net.ipv4.tcp_retries2=2"),
    );
    assert_eq!(session.outcome, "timeout", "{session:?}");
    check_timeout(&session, &record, "tcp_retries2 in ESTABLISHED");
}

#[test]
fn a_close_to_a_vanished_peer_times_out_in_fin_wait1() {
    if !privileged("a_close_to_a_vanished_peer_times_out_in_fin_wait1") {
        return;
    }
    let (session, record) = vanish(
        "vanishfin1",
        Ending::AwaitEof,
        &["--then", "close", "--user-timeout-ms", "1000"],
        None,
    );
    check_timeout(&session, &record, "FIN never acknowledged, FIN_WAIT1");
}

#[test]
fn a_close_after_the_peer_closed_and_vanished_times_out_in_last_ack() {
    if !privileged("a_close_after_the_peer_closed_and_vanished_times_out_in_last_ack") {
        return;
    }
    let (session, record) = vanish(
        "vanishlastack",
        Ending::Close,
        &[
            "--order",
            "server-first",
            "--then",
            "close",
            "--user-timeout-ms",
            "1000",
        ],
        None,
    );
    check_timeout(&session, &record, "FIN never acknowledged, LAST_ACK");
}
