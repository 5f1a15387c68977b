//! Who is at each end of a connection, in the terms of Istio's standard
//! labels: the workload an address belongs to, and the names of the service
//! dialled. Built from the model once per applied mesh and shared by every
//! series that names them.
use std::sync::Arc;

use crate::model::{Service, UNKNOWN, Workload};

/// One workload's labels (`*_workload`, `*_workload_namespace`,
/// `*_canonical_service`, `*_canonical_revision`, `*_principal`,
/// `*_cluster`, `*_app`, `*_version`). A peer outside the mesh has every
/// label `unknown`, as Istio reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadLabels {
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub principal: Arc<str>,
    pub cluster: Arc<str>,
}

fn or_unknown(s: &str) -> Arc<str> {
    Arc::from(if s.is_empty() { UNKNOWN } else { s })
}

impl WorkloadLabels {
    pub fn unknown() -> Arc<Self> {
        let u: Arc<str> = Arc::from(UNKNOWN);
        Arc::new(Self {
            workload: u.clone(),
            namespace: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: u.clone(),
            principal: u.clone(),
            cluster: u,
        })
    }

    pub fn of(w: &Workload) -> Arc<Self> {
        let workload = if w.workload_name.is_empty() {
            &w.name
        } else {
            &w.workload_name
        };
        Arc::new(Self {
            workload: or_unknown(workload),
            namespace: or_unknown(&w.namespace),
            canonical_service: or_unknown(&w.canonical_name),
            canonical_revision: or_unknown(&w.canonical_revision),
            principal: or_unknown(&w.principal().unwrap_or_default()),
            cluster: or_unknown(&w.cluster),
        })
    }

    pub fn is_unknown(&self) -> bool {
        &*self.workload == UNKNOWN
    }

    /// `namespace/workload`, or `unknown` outside the mesh: how the admin
    /// API names a workload.
    pub fn display(&self) -> String {
        if self.is_unknown() {
            UNKNOWN.to_string()
        } else {
            format!("{}/{}", self.namespace, self.workload)
        }
    }
}

/// `destination_service_name` and `destination_service_namespace`; the
/// series' service name is `destination_service` itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceNames {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl ServiceNames {
    pub fn unknown() -> Arc<Self> {
        let u: Arc<str> = Arc::from(UNKNOWN);
        Arc::new(Self {
            name: u.clone(),
            namespace: u,
        })
    }

    pub fn of(s: &Service) -> Arc<Self> {
        let names = s.istio_names();
        Arc::new(Self {
            name: or_unknown(&names.name),
            namespace: or_unknown(names.namespace.as_deref().unwrap_or_default()),
        })
    }
}
