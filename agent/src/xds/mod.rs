//! Envoy xDS (v3) as a mesh source. Resources arrive from istiod over ADS
//! or from a file; either way they become the same `envoy-types` messages,
//! go through one translation, and come out as the [`Mesh`](crate::model::Mesh)
//! the map writer applies.
pub mod ads;
pub mod ambient;
pub mod json;
pub mod resources;
pub mod translate;

use std::{collections::BTreeSet, net::SocketAddr};

use self::{
    resources::{Rejected, ResourceSet},
    translate::{Finding, Translation, Unrouted},
};
use crate::model::{Mesh, ProbeSettings};

/// What a source has to say beyond the mesh itself: resources it refused,
/// config the kernel cannot honour, and routes no address leads to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub rejected: Vec<Rejected>,
    pub findings: Vec<Finding>,
    pub unrouted: Vec<Unrouted>,
}

/// Translates a resource set into a mesh, its report, and the VIPs still
/// waiting for their endpoints or routes.
pub fn mesh_of(set: &ResourceSet, probe: ProbeSettings) -> (Mesh, Report, BTreeSet<SocketAddr>) {
    let Translation {
        services,
        pending,
        unrouted,
        findings,
        ..
    } = translate::translate(set);
    let report = Report {
        rejected: set.rejected.clone(),
        findings,
        unrouted,
    };
    (
        Mesh {
            services,
            workloads: translate::workloads::from_endpoints(set),
            probe,
        },
        report,
        pending,
    )
}
