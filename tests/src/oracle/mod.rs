//! Envoy as the oracle of what an xDS client must accept: the same
//! resources, served over one in-test ADS server (state of the world) to a
//! real Envoy and to kmesh-agent, and per response type the two verdicts
//! side by side: ACK, or NACK and which resources the NACK names.
//!
//! Each case is a new version of all four types on the streams both
//! clients keep open, so one Envoy and one agent serve every case.
pub mod cases;
pub mod envoy;
mod served;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

use self::envoy::{ENVOY_NODE_ID, Envoy};
pub use self::served::served;
use crate::{
    ads::{AdsServer, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, Log, ROUTE_TYPE},
    xds_data::{self, ResourceMap},
};

/// The four types in the order a push sets them, with a short name.
pub const TYPES: [(&str, &str); 4] = [
    (CLUSTER_TYPE, "cluster"),
    (ENDPOINT_TYPE, "endpoints"),
    (LISTENER_TYPE, "listener"),
    (ROUTE_TYPE, "route"),
];

/// What a client said to one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ack,
    /// The resources of the response its message names, and the message.
    Nack {
        named: BTreeSet<String>,
        message: String,
    },
    /// No response of this version reached the client (it subscribed to
    /// none of the names, or to nothing of the type).
    NotSent,
    /// A response went out and no ACK or NACK came back.
    Unanswered,
}

impl Verdict {
    /// Equal as far as the oracle judges: both NACK naming the same
    /// resources, or neither refused anything. An ACK and "not sent" agree:
    /// which endpoint and route names a client subscribes to differs with
    /// what it holds (Envoy keeps a route subscription of a warming
    /// listener, say), and a response it never got it cannot refuse.
    pub fn agrees(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Nack { named: a, .. }, Verdict::Nack { named: b, .. }) => a == b,
            (Verdict::Ack | Verdict::NotSent, Verdict::Ack | Verdict::NotSent) => true,
            (a, b) => a == b,
        }
    }

    pub fn short(&self) -> String {
        match self {
            Verdict::Ack => "ACK".into(),
            Verdict::Nack { named, .. } => format!("NACK {named:?}"),
            Verdict::NotSent => "not sent".into(),
            Verdict::Unanswered => "unanswered".into(),
        }
    }
}

/// Both verdicts on one type of one case.
#[derive(Clone, Debug)]
pub struct Compared {
    pub case: String,
    pub kind: &'static str,
    pub envoy: Verdict,
    pub agent: Verdict,
}

impl Compared {
    pub fn agrees(&self) -> bool {
        self.envoy.agrees(&self.agent)
    }

    pub fn describe(&self) -> String {
        let msg = |v: &Verdict| match v {
            Verdict::Nack { message, .. } => format!(": {message}"),
            _ => String::new(),
        };
        format!(
            "{} / {}: Envoy {}{} | agent {}{}",
            self.case,
            self.kind,
            self.envoy.short(),
            msg(&self.envoy),
            self.agent.short(),
            msg(&self.agent)
        )
    }
}

/// One set of resources to serve.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub resources: ResourceMap,
    /// A hand-made response pushed after the resources, as it is (a type
    /// no client subscribed to, say); its verdicts are compared under the
    /// response's own type.
    pub raw: Option<DiscoveryResponse>,
}

impl Case {
    pub fn new(name: impl Into<String>, resources: ResourceMap) -> Self {
        Self {
            name: name.into(),
            resources,
            raw: None,
        }
    }
}

/// Does `message` name `name` as a resource: quoted, or followed by `:`
/// (Envoy's "Error adding/updating listener(s) NAME: why")?
pub fn mentions(message: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    message.contains(&format!("{name:?}"))
        || message.match_indices(name).any(|(i, _)| {
            let before = message[..i].chars().last();
            let after = message[i + name.len()..].chars().next();
            before.is_none_or(|c| c.is_whitespace() || c == '\'' || c == ',')
                && matches!(after, Some(':') | Some('\'') | Some(',') | None)
        })
}

/// The ADS server with Envoy on it; the agent joins with
/// [`Oracle::agent_joined`].
pub struct Oracle {
    pub server: AdsServer,
    pub envoy: Envoy,
    cases: usize,
}

/// How long a case may take to settle before the oracle gives up.
const SETTLE: Duration = Duration::from_secs(30);
/// No request for this long after every response is answered: the
/// clients are done with the case (a client may ask for new names right
/// after its ACK).
const QUIET: Duration = Duration::from_millis(150);

impl Oracle {
    /// Starts the server with every type empty (version "0"), and Envoy on it.
    pub fn start(workdir: &std::path::Path) -> Self {
        let server = AdsServer::start().expect("ADS server");
        xds_data::serve_all(&server, "0", &ResourceMap::new());
        let envoy = Envoy::start(server.addr(), workdir);
        let oracle = Self {
            server,
            envoy,
            cases: 0,
        };
        oracle
            .server
            .wait_for(|log| stream_of(log, Client::Envoy), SETTLE)
            .expect("Envoy's ADS stream");
        oracle
    }

    /// Waits until the agent's stream is open.
    pub fn agent_joined(&self) {
        self.server
            .wait_for(|log| stream_of(log, Client::Agent), SETTLE)
            .expect("the agent's ADS stream");
    }

    /// Serves `case` as the next version and returns both clients'
    /// verdicts per type.
    pub fn run(&mut self, case: &Case) -> Vec<Compared> {
        self.cases += 1;
        let version = format!("case-{}", self.cases);
        xds_data::serve_all(&self.server, &version, &served(&case.resources));
        let mut raw_type = None;
        if let Some(raw) = &case.raw {
            raw_type = Some(raw.type_url.clone());
            self.server.push_raw(DiscoveryResponse {
                version_info: version.clone(),
                ..raw.clone()
            });
        }
        let log = self.settle(&case.name);
        let envoy = stream_of(&log, Client::Envoy).expect("Envoy's stream");
        let agent = stream_of(&log, Client::Agent).expect("the agent's stream");
        let mut kinds: Vec<(String, &'static str)> =
            TYPES.iter().map(|(t, k)| (t.to_string(), *k)).collect();
        if let Some(t) = raw_type
            && !kinds.iter().any(|(u, _)| *u == t)
        {
            kinds.push((t, "raw"));
        }
        kinds
            .into_iter()
            .map(|(type_url, kind)| Compared {
                case: case.name.clone(),
                kind,
                envoy: verdict(&log, envoy, &type_url, &version),
                agent: verdict(&log, agent, &type_url, &version),
            })
            .collect()
    }

    /// Waits until every response sent to either client is answered and
    /// nothing new came for [`QUIET`].
    fn settle(&self, case: &str) -> Log {
        let deadline = Instant::now() + SETTLE;
        let mut quiet_since: Option<(usize, Instant)> = None;
        loop {
            let log = self.server.log();
            let answered = [Client::Envoy, Client::Agent]
                .into_iter()
                .all(|c| stream_of(&log, c).is_some_and(|s| all_answered(&log, s)));
            if answered {
                match quiet_since {
                    Some((n, since)) if n == log.requests.len() => {
                        if since.elapsed() >= QUIET {
                            return log;
                        }
                    }
                    _ => quiet_since = Some((log.requests.len(), Instant::now())),
                }
            } else {
                quiet_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "case {case}: the clients did not answer every response within {SETTLE:?}\n{}",
                log.summary()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Envoy,
    Agent,
}

/// The latest stream opened by `client`, known by the node on its first
/// request.
fn stream_of(log: &Log, client: Client) -> Option<usize> {
    log.requests
        .iter()
        .filter_map(|r| {
            let node = r.node.as_ref()?;
            let is_envoy = node.id == ENVOY_NODE_ID;
            (is_envoy == (client == Client::Envoy)).then_some(r.stream)
        })
        .max()
}

fn all_answered(log: &Log, stream: usize) -> bool {
    let mut latest: std::collections::BTreeMap<&str, &str> = Default::default();
    for r in log.responses.iter().filter(|r| r.stream == stream) {
        latest.insert(&r.type_url, &r.nonce);
    }
    latest.into_iter().all(|(type_url, nonce)| {
        // A type the client never asked for (a hand-made push) may go
        // unanswered: Envoy ignores it.
        !log.requests
            .iter()
            .any(|q| q.stream == stream && q.type_url == type_url)
            || unsubscribed(log, stream, type_url)
            || log
                .requests
                .iter()
                .any(|q| q.stream == stream && q.type_url == type_url && q.response_nonce == nonce)
    })
}

/// The client's latest request for a named type (endpoints, routes) asks
/// for no names: it has no use for a response, and Envoy ignores one for a
/// type it watches nothing of. The server may still have sent one, if the
/// unsubscription crossed a push and came with a nonce already stale.
fn unsubscribed(log: &Log, stream: usize, type_url: &str) -> bool {
    (type_url == ENDPOINT_TYPE || type_url == ROUTE_TYPE)
        && log
            .requests
            .iter()
            .rev()
            .find(|q| q.stream == stream && q.type_url == type_url)
            .is_some_and(|q| q.resource_names.is_empty())
}

fn verdict(log: &Log, stream: usize, type_url: &str, version: &str) -> Verdict {
    let Some(sent) = log
        .responses
        .iter()
        .rev()
        .find(|r| r.stream == stream && r.type_url == type_url && r.version_info == version)
    else {
        return Verdict::NotSent;
    };
    let Some(answer) = log
        .requests
        .iter()
        .find(|q| q.stream == stream && q.type_url == type_url && q.response_nonce == sent.nonce)
    else {
        if unsubscribed(log, stream, type_url) {
            return Verdict::NotSent;
        }
        return Verdict::Unanswered;
    };
    match &answer.error {
        None => Verdict::Ack,
        Some(e) => Verdict::Nack {
            named: sent
                .resource_names
                .iter()
                .filter(|n| mentions(&e.message, n))
                .cloned()
                .collect(),
            message: e.message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_nack_names_a_resource_quoted_or_before_a_colon() {
        let envoy = "Error adding/updating listener(s) bad_80: malformed IP address: x";
        assert!(mentions(envoy, "bad_80"));
        assert!(!mentions(envoy, "bad_8"));
        assert!(!mentions(envoy, "x_bad_80"));
        let agent = "listener \"bad_80\": address: \"x\" is not an IP address";
        assert!(mentions(agent, "bad_80"));
        assert!(!mentions(agent, "good"));
    }
}
