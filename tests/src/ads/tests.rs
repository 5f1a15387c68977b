//! The server against tonic's generated ADS client, one protocol rule per
//! test.
use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, core::v3::Node, endpoint::v3::ClusterLoadAssignment,
            listener::v3::Listener,
        },
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::{protobuf::Any, rpc},
};
use prost::Message;
use tokio::{runtime::Runtime, sync::mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Status, Streaming};

use super::*;

const WAIT: Duration = Duration::from_secs(5);
/// How long a client listens to conclude that no response is coming.
const QUIET: Duration = Duration::from_millis(300);

/// One ADS stream from tonic's generated client, driven synchronously.
struct Client {
    runtime: Runtime,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Client {
    fn connect(ads: &AdsServer) -> Self {
        Self::connect_with_token(ads, None).expect("opening an ADS stream")
    }

    fn connect_with_token(ads: &AdsServer, token: Option<&str>) -> Result<Self, Status> {
        // A worker thread keeps the connection moving while the test thread
        // sleeps in `wait_for`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        let (requests, outgoing) = mpsc::unbounded_channel();
        let mut call = tonic::Request::new(UnboundedReceiverStream::new(outgoing));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("metadata value");
            call.metadata_mut().insert("authorization", value);
        }
        let responses = runtime.block_on(async {
            let mut client = AggregatedDiscoveryServiceClient::connect(ads.url())
                .await
                .expect("connecting to the ADS server");
            client.stream_aggregated_resources(call).await
        })?;
        Ok(Self {
            runtime,
            requests,
            responses: responses.into_inner(),
        })
    }

    fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).expect("stream open");
    }

    /// The next response, or why there is none within `within`.
    fn next(&mut self, within: Duration) -> Result<DiscoveryResponse, String> {
        let responses = &mut self.responses;
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(within, responses.message()).await });
        match next {
            Err(_) => Err("no response".to_string()),
            Ok(Err(status)) => Err(format!("stream broke: {status}")),
            Ok(Ok(None)) => Err("stream ended".to_string()),
            Ok(Ok(Some(response))) => Ok(response),
        }
    }

    fn recv(&mut self) -> DiscoveryResponse {
        self.next(WAIT).unwrap_or_else(|why| panic!("{why}"))
    }

    fn assert_quiet(&mut self) {
        if let Ok(response) = self.next(QUIET) {
            panic!("unexpected response: {response:?}");
        }
    }

    /// ACKs (or with `error`, NACKs) `response`, keeping `names`.
    fn reply(
        &self,
        response: &DiscoveryResponse,
        version: &str,
        names: &[&str],
        error: Option<&str>,
    ) {
        self.send(DiscoveryRequest {
            version_info: version.to_string(),
            response_nonce: response.nonce.clone(),
            error_detail: error.map(|message| rpc::Status {
                code: Code::InvalidArgument as i32,
                message: message.to_string(),
                details: Vec::new(),
            }),
            ..request(&response.type_url, names)
        });
    }

    fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.reply(response, &response.version_info, names, None);
    }
}

/// An initial request for `type_url`.
fn request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn clusters(names: &[&str]) -> Vec<(String, Any)> {
    let cluster = |name: &&str| Cluster {
        name: name.to_string(),
        ..Default::default()
    };
    names.iter().map(|n| resource(*n, &cluster(n))).collect()
}

fn endpoints(names: &[&str]) -> Vec<(String, Any)> {
    let cla = |name: &&str| ClusterLoadAssignment {
        cluster_name: name.to_string(),
        ..Default::default()
    };
    names.iter().map(|n| resource(*n, &cla(n))).collect()
}

/// Names of the clusters or load assignments in `response`, by decoding
/// them (both keep their name in field 1).
fn names(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            if any.type_url == ENDPOINT_TYPE {
                let cla = ClusterLoadAssignment::decode(&*any.value).expect("a load assignment");
                cla.cluster_name
            } else {
                Cluster::decode(&*any.value).expect("a cluster").name
            }
        })
        .collect()
}

#[test]
fn initial_wildcard_cds_request_gets_every_cluster() {
    let ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a", "b"]));
    let mut client = Client::connect(&ads);
    client.send(DiscoveryRequest {
        node: Some(Node {
            id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".into(),
            cluster: "kmesh".into(),
            ..Default::default()
        }),
        ..request(CLUSTER_TYPE, &[])
    });
    let response = client.recv();
    assert_eq!(response.type_url, CLUSTER_TYPE);
    assert_eq!(response.version_info, "1");
    assert!(!response.nonce.is_empty());
    assert_eq!(names(&response), ["a", "b"]);
    assert!(
        response
            .resources
            .iter()
            .all(|r| r.type_url == CLUSTER_TYPE)
    );

    let requests = ads.requests();
    let node = requests[0].node.as_ref().expect("node recorded");
    assert_eq!(node.id, "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local");
    assert_eq!(node.cluster, "kmesh");
    assert!(!node.has_metadata);
    assert_eq!(requests[0].stream, 1);
    assert_eq!((ads.streams(), ads.connected()), (1, 1));
    let sent = ads.responses();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].nonce, response.nonce);
    assert_eq!(sent[0].resource_names, ["a", "b"]);
}

#[test]
fn eds_carries_only_the_subscribed_names() {
    let ads = AdsServer::start().unwrap();
    ads.set(ENDPOINT_TYPE, "7", endpoints(&["a", "b", "c"]));
    let mut client = Client::connect(&ads);
    client.send(request(ENDPOINT_TYPE, &["c", "a"]));
    let response = client.recv();
    assert_eq!(response.version_info, "7");
    assert_eq!(names(&response), ["a", "c"]);
}

#[test]
fn eds_without_names_gets_nothing() {
    let ads = AdsServer::start().unwrap();
    ads.set(ENDPOINT_TYPE, "1", endpoints(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(ENDPOINT_TYPE, &[]));
    client.assert_quiet();
    assert_eq!(ads.requests().len(), 1);
}

#[test]
fn a_type_never_set_is_not_answered() {
    let ads = AdsServer::start().unwrap();
    let mut client = Client::connect(&ads);
    client.send(request(LISTENER_TYPE, &[]));
    client.assert_quiet();
    // Setting it, even empty, answers the waiting subscription.
    ads.set(LISTENER_TYPE, "empty", Vec::new());
    let response = client.recv();
    assert_eq!(
        (response.version_info.as_str(), response.resources.len()),
        ("empty", 0)
    );
}

#[test]
fn ack_gets_no_response_and_is_recognised() {
    let ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    let response = client.recv();
    client.ack(&response, &[]);
    client.assert_quiet();
    let ack = ads.wait_for_ack(CLUSTER_TYPE, "1", WAIT).unwrap();
    assert_eq!(ack.response_nonce, response.nonce);
    assert!(!ack.stale);
    assert_eq!(ads.responses().len(), 1);
}

#[test]
fn set_pushes_a_new_version_to_subscribers_only() {
    let ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    let first = client.recv();
    client.ack(&first, &[]);
    ads.wait_for_ack(CLUSTER_TYPE, "1", WAIT).unwrap();

    ads.set(CLUSTER_TYPE, "2", clusters(&["a", "b"]));
    let second = client.recv();
    assert_eq!(second.version_info, "2");
    assert_eq!(names(&second), ["a", "b"]);
    assert_ne!(second.nonce, first.nonce);
    // The client never asked for listeners.
    ads.set(
        LISTENER_TYPE,
        "1",
        vec![resource("l", &Listener::default())],
    );
    client.assert_quiet();
}

#[test]
fn a_change_of_names_gets_a_fresh_response() {
    let ads = AdsServer::start().unwrap();
    ads.set(ENDPOINT_TYPE, "3", endpoints(&["a", "b"]));
    let mut client = Client::connect(&ads);
    client.send(request(ENDPOINT_TYPE, &["a"]));
    let first = client.recv();
    client.ack(&first, &["a", "b"]);
    let second = client.recv();
    assert_eq!(second.version_info, "3");
    assert_eq!(names(&second), ["a", "b"]);
}

#[test]
fn a_stale_nonce_is_recorded_and_ignored() {
    let ads = AdsServer::start().unwrap();
    ads.set(ENDPOINT_TYPE, "1", endpoints(&["a", "b"]));
    let mut client = Client::connect(&ads);
    client.send(request(ENDPOINT_TYPE, &["a"]));
    let first = client.recv();
    ads.set(ENDPOINT_TYPE, "2", endpoints(&["a", "b"]));
    let second = client.recv();
    // Acknowledging the older response with new names changes nothing.
    client.ack(&first, &["a", "b"]);
    client.assert_quiet();
    client.ack(&second, &["a"]);
    ads.wait_for_ack(ENDPOINT_TYPE, "2", WAIT).unwrap();
    let stale: Vec<bool> = ads.requests().iter().map(|r| r.stale).collect();
    assert_eq!(stale, [false, true, false]);
}

#[test]
fn nack_is_recorded_with_its_message() {
    let ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    let good = client.recv();
    client.ack(&good, &[]);
    ads.set(CLUSTER_TYPE, "2", clusters(&["a"]));
    let bad = client.recv();
    client.reply(&bad, "1", &[], Some("cluster a: no endpoints"));
    client.assert_quiet();

    let message = ads.wait_for_nack(CLUSTER_TYPE, WAIT).unwrap();
    assert_eq!(message, "cluster a: no endpoints");
    let log = ads.log();
    let nack = log.nack(CLUSTER_TYPE).unwrap();
    assert_eq!(nack.version_info, "1");
    assert_eq!(log.answers(nack).unwrap().version_info, "2");
    assert_eq!(
        nack.error.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    assert!(ads.wait_for_ack(CLUSTER_TYPE, "2", QUIET).is_err());
}

#[test]
fn push_raw_reaches_every_stream_with_a_current_nonce() {
    let ads = AdsServer::start().unwrap();
    let mut one = Client::connect(&ads);
    let mut two = Client::connect(&ads);
    ads.wait_for(|log| (log.streams == 2).then_some(()), WAIT)
        .unwrap();
    let garbage = Any {
        type_url: "type.googleapis.com/example.Unknown".into(),
        value: vec![0xff; 16],
    };
    ads.push_raw(DiscoveryResponse {
        version_info: "x".into(),
        type_url: garbage.type_url.clone(),
        resources: vec![garbage],
        ..Default::default()
    });
    let (a, b) = (one.recv(), two.recv());
    assert_ne!(a.nonce, b.nonce);
    assert_eq!(a.resources[0].value, [0xff; 16]);
    one.reply(&a, "", &[], Some("unknown type"));
    ads.wait_for_nack("type.googleapis.com/example.Unknown", WAIT)
        .unwrap();
    assert!(!ads.requests()[0].stale);
}

#[test]
fn stop_breaks_streams_and_start_on_reuses_the_address() {
    let mut ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    client.recv();
    let addr = ads.addr();
    ads.stop();
    assert!(client.next(WAIT).is_err(), "the stream outlived stop()");
    assert_eq!(ads.connected(), 0);

    let ads = AdsServer::start_on(addr).unwrap();
    assert_eq!(ads.addr(), addr);
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    assert_eq!(client.recv().version_info, "1");
    assert_eq!(ads.streams(), 1);
}

#[test]
fn restart_keeps_state_and_counts_reconnects() {
    let mut ads = AdsServer::start().unwrap();
    ads.set(CLUSTER_TYPE, "1", clusters(&["a"]));
    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    let before = client.recv();
    ads.stop();
    ads.restart().unwrap();

    let mut client = Client::connect(&ads);
    client.send(request(CLUSTER_TYPE, &[]));
    let after = client.recv();
    assert_eq!(after.version_info, "1");
    assert_ne!(after.nonce, before.nonce);
    assert_eq!((ads.streams(), ads.connected()), (2, 1));
    assert_eq!(ads.requests()[1].stream, 2);
}

#[test]
fn a_required_token_is_checked() {
    let options = AdsOptions {
        require_token: Some("s3cret".into()),
        ..Default::default()
    };
    let ads = AdsServer::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options).unwrap();
    for wrong in [None, Some("guess")] {
        let refused = Client::connect_with_token(&ads, wrong)
            .err()
            .expect("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    assert_eq!((ads.rejected(), ads.streams()), (2, 0));
    Client::connect_with_token(&ads, Some("s3cret")).expect("accepted");
    assert_eq!(ads.streams(), 1);
}
