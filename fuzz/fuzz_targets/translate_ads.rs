//! Resources as ADS delivers them: each record (see
//! `kmesh_fuzz_input::records`) is a type and an `Any` that is decoded and
//! checked, put into one set (refusals recorded as the ADS client records
//! them), and the set is translated. Ambient `istio.workload.Address`
//! records go, as one delta response (named as istiod names them, by uid or
//! `namespace/hostname`, when they decode; `a<i>` otherwise), through the
//! delta client's state and the ambient translation. A panic,
//! or a mesh the map writer could not take, is a bug.
#![no_main]

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, Resource as DeltaResource,
};
use kmesh_agent::{
    model::ProbeSettings,
    xds::{
        self, ambient,
        resources::{Rejected, Resource, ResourceSet, ResourceType},
    },
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut set = ResourceSet::default();
    let mut addresses = Vec::new();
    for (i, record) in kmesh_fuzz_input::records(data).into_iter().enumerate() {
        if record.kind == ResourceType::Workload {
            let name =
                <ambient::proto::Address as prost::Message>::decode(record.any.value.as_slice())
                    .ok()
                    .and_then(|a| ambient::kind_and_key(&a))
                    .map_or_else(|| format!("a{i}"), |(_, key)| key);
            addresses.push(DeltaResource {
                name,
                version: format!("v{i}"),
                resource: Some(record.any),
                ..Default::default()
            });
            continue;
        }
        let version = format!("v{i}");
        let refused = match Resource::decode(record.kind, &record.any) {
            Ok(resource) => {
                let name = resource.name().to_string();
                set.insert(resource, &version).err().map(|e| (name, e))
            }
            Err(e) => Some((String::new(), e)),
        };
        if let Some((name, reason)) = refused {
            set.rejected.push(Rejected {
                kind: record.kind,
                name,
                version,
                reason,
            });
        }
    }
    let (mesh, _report, _pending) = xds::mesh_of(&set, ProbeSettings::default());
    kmesh_fuzz_input::check_mesh(&mesh);
    if !addresses.is_empty() {
        let mut state = ambient::delta::new_state();
        state.initial_requests();
        state.handle(&DeltaDiscoveryResponse {
            type_url: ambient::ADDRESS_TYPE_URL.into(),
            nonce: "n".into(),
            resources: addresses,
            removed_resources: vec!["a3".into()],
            ..Default::default()
        });
        let (mesh, _report) =
            ambient::translate::translate(&state.resources, ProbeSettings::default());
        kmesh_fuzz_input::check_mesh(&mesh);
    }
});
