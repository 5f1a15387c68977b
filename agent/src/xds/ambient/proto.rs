//! Istio ambient's workload discovery messages (`istio.workload`), written
//! by hand with prost's derives from the field numbers of Istio's
//! `pkg/workloadapi/workload.proto` (as ztunnel's `proto/workload.proto`
//! carries it). Only the fields the agent reads or reports on are declared;
//! prost skips the others (authorization policies, extensions, locality).
use std::collections::BTreeMap;

/// `istio.workload.Address`: a workload or a service, the one resource type
/// of workload discovery.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(oneof = "address::Type", tags = "1, 2")]
    pub r#type: Option<address::Type>,
}

pub mod address {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Type {
        #[prost(message, boxed, tag = "1")]
        Workload(Box<super::Workload>),
        #[prost(message, boxed, tag = "2")]
        Service(Box<super::Service>),
    }
}

impl prost::Name for Address {
    const NAME: &'static str = "Address";
    const PACKAGE: &'static str = "istio.workload";

    fn type_url() -> String {
        super::ADDRESS_TYPE_URL.to_string()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Service {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub hostname: String,
    /// The VIPs; empty for a headless service.
    #[prost(message, repeated, tag = "4")]
    pub addresses: Vec<NetworkAddress>,
    #[prost(message, repeated, tag = "5")]
    pub ports: Vec<Port>,
    #[prost(string, repeated, tag = "6")]
    pub subject_alt_names: Vec<String>,
    #[prost(message, optional, tag = "7")]
    pub waypoint: Option<GatewayAddress>,
    #[prost(message, optional, tag = "8")]
    pub load_balancing: Option<LoadBalancing>,
    /// `IPFamilies`: 0 automatic, 1 IPv4 only, 2 IPv6 only, 3 dual.
    #[prost(int32, tag = "9")]
    pub ip_families: i32,
    #[prost(message, repeated, tag = "13")]
    pub weighted_waypoints: Vec<WeightedWaypoint>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadBalancing {
    /// `Scope`s: 1 region, 2 zone, 3 subzone, 4 node, 5 cluster, 6 network.
    #[prost(int32, repeated, tag = "1")]
    pub routing_preference: Vec<i32>,
    /// `Mode`: 0 unspecified, 1 strict, 2 failover, 3 passthrough.
    #[prost(int32, tag = "2")]
    pub mode: i32,
    /// `HealthPolicy`: 0 only healthy, 1 allow all.
    #[prost(int32, tag = "3")]
    pub health_policy: i32,
}

pub mod load_balancing {
    pub const MODE_STRICT: i32 = 1;
    pub const MODE_FAILOVER: i32 = 2;
    pub const MODE_PASSTHROUGH: i32 = 3;
    pub const HEALTH_ALLOW_ALL: i32 = 1;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Workload {
    #[prost(string, tag = "20")]
    pub uid: String,
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// IPv4 (4 bytes) or IPv6 (16 bytes) addresses.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub addresses: Vec<Vec<u8>>,
    /// Set instead of addresses for workloads reached by DNS name.
    #[prost(string, tag = "21")]
    pub hostname: String,
    #[prost(string, tag = "4")]
    pub network: String,
    /// `TunnelProtocol`: 0 none, 1 HBONE, 2 legacy Istio mTLS.
    #[prost(int32, tag = "5")]
    pub tunnel_protocol: i32,
    #[prost(string, tag = "6")]
    pub trust_domain: String,
    #[prost(string, tag = "7")]
    pub service_account: String,
    #[prost(message, optional, tag = "8")]
    pub waypoint: Option<GatewayAddress>,
    #[prost(message, optional, tag = "19")]
    pub network_gateway: Option<GatewayAddress>,
    #[prost(string, tag = "9")]
    pub node: String,
    #[prost(string, tag = "10")]
    pub canonical_name: String,
    #[prost(string, tag = "11")]
    pub canonical_revision: String,
    /// `WorkloadType`: 0 deployment, 1 cronjob, 2 pod, 3 job.
    #[prost(int32, tag = "12")]
    pub workload_type: i32,
    #[prost(string, tag = "13")]
    pub workload_name: String,
    /// The services it backs, keyed `namespace/hostname`, with its own port
    /// mapping.
    #[prost(btree_map = "string, message", tag = "22")]
    pub services: BTreeMap<String, PortList>,
    /// `WorkloadStatus`: 0 healthy, 1 unhealthy.
    #[prost(int32, tag = "17")]
    pub status: i32,
    #[prost(string, tag = "18")]
    pub cluster_id: String,
    /// Relative share of traffic; 1 when unset.
    #[prost(message, optional, tag = "27")]
    pub capacity: Option<u32>,
}

pub const WORKLOAD_UNHEALTHY: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PortList {
    #[prost(message, repeated, tag = "1")]
    pub ports: Vec<Port>,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Port {
    #[prost(uint32, tag = "1")]
    pub service_port: u32,
    /// 0 when the service names its target port: each workload's own
    /// mapping says the number.
    #[prost(uint32, tag = "2")]
    pub target_port: u32,
    #[prost(int32, tag = "3")]
    pub app_protocol: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GatewayAddress {
    #[prost(oneof = "gateway_address::Destination", tags = "1, 2")]
    pub destination: Option<gateway_address::Destination>,
    #[prost(uint32, tag = "3")]
    pub hbone_mtls_port: u32,
}

pub mod gateway_address {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Destination {
        #[prost(message, tag = "1")]
        Hostname(super::NamespacedHostname),
        #[prost(message, tag = "2")]
        Address(super::NetworkAddress),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WeightedWaypoint {
    #[prost(message, optional, tag = "1")]
    pub destination: Option<GatewayAddress>,
    #[prost(uint32, tag = "2")]
    pub weight: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkAddress {
    #[prost(string, tag = "1")]
    pub network: String,
    #[prost(bytes = "vec", tag = "2")]
    pub address: Vec<u8>,
    /// A prefix length (CIDR VIPs of newer Istio); None for one address.
    #[prost(uint32, optional, tag = "3")]
    pub length: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespacedHostname {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub hostname: String,
}

impl GatewayAddress {
    /// How a finding names it: `namespace/hostname` or `network/ip`.
    pub fn describe(&self) -> String {
        match &self.destination {
            Some(gateway_address::Destination::Hostname(h)) => {
                format!("{}/{}", h.namespace, h.hostname)
            }
            Some(gateway_address::Destination::Address(a)) => match super::ip_of(&a.address) {
                Ok(ip) => format!("{}/{ip}", a.network),
                Err(_) => "an address".into(),
            },
            None => "(no destination)".into(),
        }
    }
}
