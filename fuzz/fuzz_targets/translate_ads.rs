//! Resources as ADS delivers them: each record (see
//! `kmesh_fuzz_input::records`) is a type and an `Any` that is decoded and
//! checked, put into one set (refusals recorded as the ADS client records
//! them), and the set is translated. A panic, or a mesh the map writer
//! could not take, is a bug.
#![no_main]

use kmesh_agent::{
    model::ProbeSettings,
    xds::{
        self,
        resources::{Rejected, Resource, ResourceSet},
    },
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut set = ResourceSet::default();
    for (i, record) in kmesh_fuzz_input::records(data).into_iter().enumerate() {
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
});
