//! What the fuzz targets share, apart from libFuzzer: the byte format of
//! `translate_ads` inputs and the checks every translated mesh must pass.
use std::collections::HashSet;

use envoy_types::pb::google::protobuf::Any;
use kmesh_agent::{
    model::{MAX_BACKENDS, Mesh, Policy, RESERVED_NAMES},
    xds::resources::ResourceType,
};

/// One resource of an ADS response: the type the response is for and the
/// `Any` it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub kind: ResourceType,
    pub any: Any,
}

/// Splits a `translate_ads` input into records. Each record is
///
/// - a tag byte: bits 0-1 pick the response's type (`ResourceType::ALL[n]`);
///   bits 2-4 pick the `Any`'s type URL: 0-3 the response type's own, 4-7
///   the URL of `ResourceType::ALL[n - 4]` (a mismatch unless it is the same
///   type); bit 5 makes it an ambient `istio.workload.Address` record
///   instead (kind `ResourceType::Workload`; bits 0-1 ignored, bits 2-4 as
///   above); bits 6-7 are ignored;
/// - the value's length, `u16` little-endian;
/// - that many bytes of protobuf, fewer if the input ends first.
///
/// A tag without a whole length ends the input.
pub fn records(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while let [tag, lo, hi, rest @ ..] = data {
        let address = tag & 0x20 != 0;
        let kind = if address {
            ResourceType::Workload
        } else {
            ResourceType::ALL[usize::from(tag & 3)]
        };
        let url = match (tag >> 2) & 7 {
            n @ 4..=7 => ResourceType::ALL[usize::from(n - 4)],
            _ => kind,
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (value, tail) = rest.split_at(len);
        out.push(Record {
            kind,
            any: Any {
                type_url: url.type_url(),
                value: value.to_vec(),
            },
        });
        data = tail;
    }
    out
}

/// Appends one record whose `Any` carries the type's own URL (an Address
/// for `Workload` and `WorkloadService`).
pub fn encode(kind: ResourceType, value: &[u8], out: &mut Vec<u8>) {
    let tag = match kind {
        ResourceType::Workload | ResourceType::WorkloadService => 0x20,
        _ => ResourceType::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("every Envoy type is in ALL") as u8,
    };
    let len = u16::try_from(value.len()).expect("a seed resource under 64 KiB");
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// Panics unless the mesh passes the checks the compact format applies to
/// every service: what the map writer relies on, whatever the source.
pub fn check_mesh(mesh: &Mesh) {
    for (key, s) in &mesh.services {
        let what = format!("service {:?} at {}", s.name, s.vip);
        assert_eq!(*key, s.vip, "{what} is keyed by {key}");
        let name = s.name.trim();
        assert!(!name.is_empty(), "{what}: empty name");
        assert!(!RESERVED_NAMES.contains(&name), "{what}: a reserved name");
        assert_ne!(s.vip.port(), 0, "{what}: port 0");
        assert!(
            s.backends.len() <= MAX_BACKENDS,
            "{what}: {} backends, above {MAX_BACKENDS}",
            s.backends.len()
        );
        let mut seen = HashSet::new();
        for addr in std::iter::once(s.vip).chain(s.backends.iter().map(|b| b.addr)) {
            if let std::net::IpAddr::V6(v6) = addr.ip() {
                assert!(
                    v6.to_ipv4_mapped().is_none(),
                    "{what}: {addr} is IPv4-mapped"
                );
            }
        }
        for b in &s.backends {
            assert_eq!(
                b.addr.is_ipv4(),
                s.vip.is_ipv4(),
                "{what}: backend {} of another family",
                b.addr
            );
            assert_ne!(b.addr.port(), 0, "{what}: backend {} has port 0", b.addr);
            assert!(seen.insert(b.addr), "{what}: backend {} twice", b.addr);
        }
        let total: u64 = s.backends.iter().map(|b| u64::from(b.weight)).sum();
        assert!(
            total <= u64::from(u32::MAX),
            "{what}: weights sum to {total}"
        );
        if s.policy == Policy::Weighted && !s.backends.is_empty() {
            assert!(total > 0, "{what}: weighted, but every weight is 0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tolerate_truncation() {
        let mut bytes = Vec::new();
        encode(ResourceType::Listener, b"abc", &mut bytes);
        encode(ResourceType::Route, b"", &mut bytes);
        let r = records(&bytes);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, ResourceType::Listener);
        assert_eq!(r[0].any.type_url, ResourceType::Listener.type_url());
        assert_eq!(r[0].any.value, b"abc");
        assert_eq!(r[1].kind, ResourceType::Route);
        // The own URL picked by number, and a length past the end.
        let r = records(&[0b1_0101, 9, 0, 1, 2, 7]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, ResourceType::Endpoints);
        assert_eq!(r[0].any.type_url, ResourceType::Endpoints.type_url());
        // A mismatched URL; a lone tag ends the input.
        let r = records(&[0b1_0100, 1, 0, 5, 3]);
        assert_eq!(r[0].kind, ResourceType::Cluster);
        assert_eq!(r[0].any.type_url, ResourceType::Endpoints.type_url());
        assert_eq!(r[0].any.value, [5]);
        assert_eq!(r.len(), 1);
        assert!(records(&[3, 1]).is_empty());
        // An Address record.
        let mut bytes = Vec::new();
        encode(ResourceType::Workload, b"xy", &mut bytes);
        let r = records(&bytes);
        assert_eq!(r[0].kind, ResourceType::Workload);
        assert_eq!(
            r[0].any.type_url,
            kmesh_agent::xds::ambient::ADDRESS_TYPE_URL
        );
    }
}
