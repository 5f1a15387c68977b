//! `GET /v1/model` → [`Model`]: the mesh the agent routes by, where it came
//! from, and what of the source it could not honour.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MODEL_PATH: &str = "/v1/model";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub source: Source,
    /// When the mesh in force was applied; absent before the first apply.
    pub applied_at_unix_ms: Option<u64>,
    pub services: Vec<ModelService>,
    /// Routes derived from the source that no destination address leads to.
    pub unrouted: Vec<UnroutedRoute>,
    /// Resources refused, with why; their previous versions stay in force.
    pub rejected: Vec<RejectedResource>,
    /// Config the kernel cannot honour, references that do not resolve,
    /// adjustments made to fit, and what was set aside.
    pub findings: Vec<Finding>,
    /// Who runs behind the addresses (Istio ambient's workloads), in uid
    /// order; empty when the source names none.
    #[serde(default)]
    pub workloads: Vec<ModelWorkload>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// What owns the instances (a Deployment): Istio's `*_workload` label.
    pub workload_name: String,
    pub service_account: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub node: String,
    pub cluster: String,
    pub network: String,
    pub addresses: Vec<String>,
    /// The services it backs, as `namespace/hostname`.
    pub services: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `file` or `xds`.
    pub kind: String,
    /// The file or directory, or the control plane's URL.
    pub location: String,
    /// Applies that took, and updates refused (invalid, or the maps said no).
    pub updates_applied: u64,
    pub updates_rejected: u64,
    pub last_error: Option<String>,
    /// Only for `xds`.
    pub xds: Option<XdsSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct XdsSource {
    pub node_id: String,
    /// `sidecar` (Envoy resources, state of the world) or `ambient`
    /// (`istio.workload.Address`, delta).
    #[serde(default)]
    pub mode: String,
    pub connected: bool,
    /// The current stream has delivered every subscribed type.
    pub synced: bool,
    /// Versions ACKed on the current stream, by type (`cluster`,
    /// `endpoints`, `listener`, `route`).
    pub versions: BTreeMap<String, String>,
    pub connects: u64,
    pub responses: u64,
    pub acks: u64,
    pub nacks: u64,
    pub last_nack: Option<String>,
    /// Ambient mode: the Address resources held (workloads and services).
    #[serde(default)]
    pub resources: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelService {
    pub name: String,
    pub vip: String,
    /// `random`, `round_robin` or `weighted`.
    pub policy: String,
    /// Why the policy differs from what the source asked for.
    pub policy_reason: Option<String>,
    pub backends: Vec<ModelBackend>,
    /// xDS clusters behind the service.
    pub clusters: Vec<ModelCluster>,
    /// The resources the service was made from, with their versions.
    pub resources: Vec<ResourceVersion>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelBackend {
    pub address: String,
    pub weight: u32,
    /// The uid of the workload behind it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCluster {
    pub name: String,
    pub weight: u32,
    pub lb_policy: String,
    /// Circuit-breaker connection limit, carried for a later kernel limit.
    pub max_connections: Option<u32>,
    pub endpoints: usize,
    pub excluded_endpoints: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceVersion {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnroutedRoute {
    pub listener: String,
    pub port: u16,
    pub virtual_host: String,
    pub domains: Vec<String>,
    pub policy: String,
    pub backends: Vec<ModelBackend>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub version: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `unsupported`, `unresolved`, `adjusted` or `ignored`.
    pub severity: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub message: String,
}
