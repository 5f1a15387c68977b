use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource},
    google::protobuf::Any,
};
use prost::Message;

use super::*;
use crate::xds::ambient::{
    proto::address,
    tests::{service, workload},
};

fn res(name: &str, version: &str, a: Address) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE_URL.into(),
            value: a.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn pod(uid: &str, last: u8) -> Resource {
    let w = workload(uid, [10, 0, 0, last], &[("shop/a.shop.svc", 8080)]);
    res(
        uid,
        "1",
        Address {
            r#type: Some(address::Type::Workload(Box::new(w))),
        },
    )
}

fn svc() -> Resource {
    let s = service("a.shop.svc", [10, 96, 0, 1], 8080);
    res(
        "shop/a.shop.svc",
        "1",
        Address {
            r#type: Some(address::Type::Service(Box::new(s))),
        },
    )
}

fn response(nonce: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ADDRESS_TYPE_URL.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        system_version_info: "istiod-7".into(),
        ..Default::default()
    }
}

#[test]
fn a_first_stream_subscribes_to_everything_and_acks_with_the_nonce() {
    let mut st = new_state();
    let first = st.initial_requests().remove(0);
    assert_eq!(first.type_url, ADDRESS_TYPE_URL);
    assert!(first.resource_names_subscribe.is_empty());
    assert!(first.initial_resource_versions.is_empty());
    assert!(!st.synced());
    let h = st.handle(&response(
        "n1",
        vec![svc(), pod("u1", 1), pod("u2", 2)],
        &[],
    ));
    assert!(h.errors.is_empty() && h.changed() && h.type_url.is_some());
    assert_eq!(h.requests[0].response_nonce, "n1");
    assert!(h.requests[0].error_detail.is_none());
    assert!(st.synced());
    assert_eq!(st.resources.workloads.len(), 2);
    assert_eq!(st.system_versions()[ADDRESS_TYPE_URL], "istiod-7");
    // Removal, and an unknown name removed is no error.
    let h = st.handle(&response("n2", vec![], &["u1", "never-seen"]));
    assert!(h.errors.is_empty() && h.changed());
    assert_eq!(st.resources.workloads.keys().collect::<Vec<_>>(), ["u2"]);
    // Nothing new: ACK, no change.
    let h = st.handle(&response("n3", vec![], &[]));
    assert!(!h.changed() && h.requests[0].error_detail.is_none());
}

#[test]
fn a_bad_resource_is_nacked_by_name_and_keeps_its_last_good_version() {
    let mut st = new_state();
    st.initial_requests().remove(0);
    st.handle(&response("n1", vec![svc(), pod("u1", 1)], &[]));
    let mut broken = workload("u1", [10, 0, 0, 9], &[]);
    broken.addresses = vec![vec![1, 2, 3]];
    let bad = res(
        "u1",
        "2",
        Address {
            r#type: Some(address::Type::Workload(Box::new(broken))),
        },
    );
    let garbage = Resource {
        name: "junk".into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        }),
        ..Default::default()
    };
    let h = st.handle(&response("n2", vec![bad, garbage, pod("u3", 3)], &[]));
    assert_eq!(h.errors.len(), 2);
    let detail = h.requests[0].error_detail.clone().unwrap();
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("\"u1\"") && detail.message.contains("3 bytes"),
        "{}",
        detail.message
    );
    assert!(detail.message.contains("\"junk\""), "{}", detail.message);
    assert_eq!(h.requests[0].response_nonce, "n2");
    // u1 keeps version 1 (10.0.0.1); u3 is applied.
    assert_eq!(st.resources.workloads["u1"].version, "1");
    assert_eq!(
        st.resources.workloads["u1"].resource.addresses,
        vec![vec![10, 0, 0, 1]]
    );
    assert!(st.resources.workloads.contains_key("u3"));
    assert_eq!(st.resources.rejected.len(), 2);
    assert_eq!(st.resources.rejected[0].kind, ResourceType::Workload);
    // A reconnect lists what is held, but not what was refused.
    let again = st.initial_requests().remove(0);
    assert!(!st.synced());
    let mut names: Vec<&String> = again.initial_resource_versions.keys().collect();
    names.sort();
    assert_eq!(names, ["shop/a.shop.svc", "u3"]);
    // A good version clears the refusal.
    st.handle(&response("n3", vec![pod("u1", 5)], &[]));
    assert!(st.resources.rejected.iter().all(|r| r.name != "u1"));
}

#[test]
fn a_name_twice_in_one_response_is_refused() {
    let mut st = new_state();
    let h = st.handle(&response(
        "n1",
        vec![pod("u1", 1), pod("u1", 2), pod("u2", 2)],
        &[],
    ));
    assert_eq!(h.errors.len(), 1);
    assert!(h.errors[0].reason.contains("more than once"));
    assert!(!st.resources.contains("u1"));
    assert!(st.resources.contains("u2"));
}

#[test]
fn another_type_is_nacked_under_its_own_url_and_changes_nothing() {
    let mut st = new_state();
    st.handle(&response("n1", vec![pod("u1", 1)], &[]));
    let mut other = response("n2", vec![], &["u1"]);
    other.type_url = "type.googleapis.com/istio.security.Authorization".into();
    let h = st.handle(&other);
    assert!(h.type_url.is_none() && !h.changed());
    assert_eq!(h.requests[0].type_url, other.type_url);
    assert!(h.requests[0].error_detail.is_some());
    assert!(st.resources.contains("u1"));
}

#[test]
fn an_update_the_kernel_refuses_goes_back_and_is_nacked() {
    let mut st = new_state();
    st.handle(&response("n1", vec![pod("u1", 1)], &[]));
    let h = st.handle(&response("n2", vec![pod("u2", 2)], &["u1"]));
    let nack = st.refuse_applied(h.undo, ADDRESS_TYPE_URL, "n2", "maps full".into());
    assert_eq!(nack.response_nonce, "n2");
    assert_eq!(nack.error_detail.unwrap().message, "maps full");
    assert!(st.resources.contains("u1") && !st.resources.contains("u2"));
}

/// 5,000 workloads in one response: taken whole, quickly.
#[test]
fn a_huge_response_is_handled() {
    let mut st = new_state();
    let pods: Vec<Resource> = (0..5000u32)
        .map(|i| pod(&format!("u{i}"), (i % 250) as u8))
        .collect();
    let started = std::time::Instant::now();
    let h = st.handle(&response("n1", pods, &[]));
    assert!(h.errors.is_empty());
    assert_eq!(st.resources.workloads.len(), 5000);
    assert!(started.elapsed().as_secs() < 2);
}
