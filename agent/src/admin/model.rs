//! The mesh in force as the admin API shows it (`/v1/model`): written by the
//! control loop after each apply, read by the admin server.
use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use kmesh_api::v1;

use crate::{
    model::{Backend, Mesh},
    xds::{Report, ads::SharedStatus},
};

pub enum SourceKind {
    File(PathBuf),
    Xds { url: String, status: SharedStatus },
}

/// What the admin API needs to answer `/v1/model`.
pub struct ModelState {
    pub source: SourceKind,
    pub mesh: Mesh,
    pub report: Report,
    pub applied_at: Option<SystemTime>,
    pub updates_applied: u64,
    pub updates_rejected: u64,
    pub last_error: Option<String>,
}

pub type SharedModel = crate::shared::Shared<ModelState>;

impl ModelState {
    pub fn new(source: SourceKind) -> Self {
        Self {
            source,
            mesh: Mesh::default(),
            report: Report::default(),
            applied_at: None,
            updates_applied: 0,
            updates_rejected: 0,
            last_error: None,
        }
    }

    pub fn applied(&mut self, mesh: &Mesh, report: &Report) {
        self.mesh = mesh.clone();
        self.report = report.clone();
        self.applied_at = Some(SystemTime::now());
        self.updates_applied += 1;
        self.last_error = None;
    }

    pub fn refused(&mut self, error: String) {
        self.updates_rejected += 1;
        self.last_error = Some(error);
    }

    pub fn to_v1(&self) -> v1::Model {
        let (kind, location, xds, source_error) = match &self.source {
            SourceKind::File(path) => ("file", path.display().to_string(), None, None),
            SourceKind::Xds { url, status } => {
                let s = status.lock().clone();
                ("xds", url.clone(), Some(s.stream), s.last_error)
            }
        };
        let report = &self.report;
        v1::Model {
            source: v1::Source {
                kind: kind.into(),
                location,
                updates_applied: self.updates_applied,
                updates_rejected: self.updates_rejected,
                last_error: self.last_error.clone().or(source_error),
                xds,
            },
            applied_at_unix_ms: self
                .applied_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            services: self
                .mesh
                .services
                .values()
                .map(|s| v1::ModelService {
                    name: s.name.clone(),
                    vip: s.vip.to_string(),
                    policy: s.policy.as_str().into(),
                    policy_reason: s.origin.policy_reason.clone(),
                    backends: backends(&s.backends),
                    clusters: s
                        .origin
                        .clusters
                        .iter()
                        .map(|c| v1::ModelCluster {
                            name: c.name.clone(),
                            weight: c.weight,
                            lb_policy: c.lb_policy.clone(),
                            max_connections: c.max_connections,
                            endpoints: c.endpoints,
                            excluded_endpoints: c.excluded_endpoints,
                        })
                        .collect(),
                    resources: s
                        .origin
                        .resources
                        .iter()
                        .map(|r| v1::ResourceVersion {
                            kind: r.kind.into(),
                            name: r.name.clone(),
                            version: r.version.clone(),
                        })
                        .collect(),
                })
                .collect(),
            unrouted: report
                .unrouted
                .iter()
                .map(|u| v1::UnroutedRoute {
                    listener: u.listener.clone(),
                    port: u.port,
                    virtual_host: u.virtual_host.clone(),
                    domains: u.domains.clone(),
                    policy: u.policy.as_str().into(),
                    backends: backends(&u.backends),
                    reason: u.reason.clone(),
                })
                .collect(),
            rejected: report
                .rejected
                .iter()
                .map(|r| v1::RejectedResource {
                    kind: r.kind.to_string(),
                    name: r.name.clone(),
                    version: r.version.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            workloads: self
                .mesh
                .workloads
                .iter()
                .map(|w| v1::ModelWorkload {
                    uid: w.uid.clone(),
                    name: w.name.clone(),
                    namespace: w.namespace.clone(),
                    workload_name: w.workload_name.clone(),
                    service_account: w.service_account.clone(),
                    canonical_name: w.canonical_name.clone(),
                    canonical_revision: w.canonical_revision.clone(),
                    node: w.node.clone(),
                    cluster: w.cluster.clone(),
                    network: w.network.clone(),
                    addresses: w.addresses.iter().map(ToString::to_string).collect(),
                    services: w.services.clone(),
                })
                .collect(),
            findings: report
                .findings
                .iter()
                .map(|f| v1::Finding {
                    severity: format!("{:?}", f.severity).to_ascii_lowercase(),
                    kind: f.kind.to_string(),
                    name: f.name.clone(),
                    message: f.message.clone(),
                })
                .collect(),
        }
    }
}

fn backends(list: &[Backend]) -> Vec<v1::ModelBackend> {
    list.iter()
        .map(|b| v1::ModelBackend {
            address: b.addr.to_string(),
            weight: b.weight,
            workload: b.workload.clone(),
        })
        .collect()
}
