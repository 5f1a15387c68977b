//! Workloads: what runs behind the addresses the mesh routes to and from (a
//! pod, a VM), and the names Istio's telemetry gives them. Attribution is by
//! address: a pod IP names a workload at either end of a connection.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

/// One workload, as Istio ambient's workload discovery or the mesh file
/// describes it. Empty strings are "not said"; telemetry labels them as
/// Istio does (`unknown`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Unique across the mesh, e.g. `cluster//Pod/ns/name`.
    pub uid: String,
    /// The instance (the pod's name).
    pub name: String,
    pub namespace: String,
    /// What owns the instances (a Deployment's name): Istio's
    /// `source_workload` / `destination_workload`.
    pub workload_name: String,
    pub service_account: String,
    /// `service.istio.io/canonical-name` (or `app`), and its revision.
    pub canonical_name: String,
    pub canonical_revision: String,
    pub node: String,
    pub cluster: String,
    pub network: String,
    pub trust_domain: String,
    pub addresses: Vec<IpAddr>,
    /// The services it backs, as `namespace/hostname`.
    pub services: Vec<String>,
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is: a v6 socket
/// talking to a v4 peer sees it so, and the workload is the v4 one.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Istio's trust domain when a source does not name one.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

impl Workload {
    /// The workload's SPIFFE identity, as Istio's `*_principal` labels give
    /// it; None without a namespace and service account.
    pub fn principal(&self) -> Option<String> {
        if self.namespace.is_empty() || self.service_account.is_empty() {
            return None;
        }
        let domain = if self.trust_domain.is_empty() {
            DEFAULT_TRUST_DOMAIN
        } else {
            &self.trust_domain
        };
        Some(format!(
            "spiffe://{domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        ))
    }
}

/// The workloads of a mesh, keyed by uid, with the address index that
/// attribution reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workloads {
    by_uid: BTreeMap<String, Workload>,
    /// Every claimant of an address, in claim order; the first holds it.
    by_addr: HashMap<IpAddr, Vec<String>>,
}

/// Two workloads claimed one address; the first to claim it keeps it
/// (while it lives, then the next).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressClash {
    pub addr: IpAddr,
    pub kept: String,
    pub ignored: String,
}

impl Workloads {
    /// Adds or replaces a workload by uid. Returns the addresses it claims
    /// that another workload already holds (those stay with the other).
    pub fn insert(&mut self, workload: Workload) -> Vec<AddressClash> {
        self.remove(&workload.uid);
        let mut clashes = Vec::new();
        for addr in workload.addresses.iter().map(|a| canonical_ip(*a)) {
            let claims = self.by_addr.entry(addr).or_default();
            if let Some(kept) = claims.first()
                && *kept != workload.uid
            {
                clashes.push(AddressClash {
                    addr,
                    kept: kept.clone(),
                    ignored: workload.uid.clone(),
                });
            }
            if !claims.contains(&workload.uid) {
                claims.push(workload.uid.clone());
            }
        }
        self.by_uid.insert(workload.uid.clone(), workload);
        clashes
    }

    pub fn remove(&mut self, uid: &str) -> Option<Workload> {
        let old = self.by_uid.remove(uid)?;
        for addr in old.addresses.iter().map(|a| canonical_ip(*a)) {
            if let Some(claims) = self.by_addr.get_mut(&addr) {
                claims.retain(|u| u != uid);
                if claims.is_empty() {
                    self.by_addr.remove(&addr);
                }
            }
        }
        Some(old)
    }

    pub fn get(&self, uid: &str) -> Option<&Workload> {
        self.by_uid.get(uid)
    }

    /// The workload an address belongs to.
    pub fn by_addr(&self, addr: IpAddr) -> Option<&Workload> {
        self.by_uid
            .get(self.by_addr.get(&canonical_ip(addr))?.first()?)
    }

    /// Every address that names a workload, with its workload.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, &Workload)> {
        self.by_addr
            .iter()
            .filter_map(|(ip, uids)| Some((*ip, self.by_uid.get(uids.first()?)?)))
    }

    /// Every workload, in uid order.
    pub fn iter(&self) -> impl Iterator<Item = &Workload> {
        self.by_uid.values()
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

impl FromIterator<Workload> for Workloads {
    fn from_iter<I: IntoIterator<Item = Workload>>(iter: I) -> Self {
        let mut all = Workloads::default();
        for w in iter {
            all.insert(w);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ip: &str) -> Workload {
        Workload {
            uid: uid.into(),
            namespace: "shop".into(),
            service_account: "cart".into(),
            addresses: vec![ip.parse().unwrap()],
            ..Workload::default()
        }
    }

    #[test]
    fn an_address_names_its_workload_and_follows_replacement() {
        let mut all = Workloads::default();
        assert!(all.insert(pod("a", "10.0.0.1")).is_empty());
        assert_eq!(all.by_addr("10.0.0.1".parse().unwrap()).unwrap().uid, "a");
        // The pod moved to a new IP: the old one names nobody.
        all.insert(pod("a", "10.0.0.2"));
        assert!(all.by_addr("10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(all.by_addr("10.0.0.2".parse().unwrap()).unwrap().uid, "a");
        // An IPv4-mapped peer address is the IPv4 workload.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(all.by_addr(mapped).unwrap().uid, "a");
    }

    #[test]
    fn a_claimed_address_stays_with_its_first_owner() {
        let mut all = Workloads::default();
        all.insert(pod("a", "10.0.0.1"));
        let clashes = all.insert(pod("b", "10.0.0.1"));
        assert_eq!(clashes.len(), 1);
        assert_eq!(
            (clashes[0].kept.as_str(), clashes[0].ignored.as_str()),
            ("a", "b")
        );
        assert_eq!(all.by_addr("10.0.0.1".parse().unwrap()).unwrap().uid, "a");
        // Removing the owner hands it to the next claimant.
        all.remove("a");
        assert_eq!(all.by_addr("10.0.0.1".parse().unwrap()).unwrap().uid, "b");
        all.remove("b");
        assert!(all.by_addr("10.0.0.1".parse().unwrap()).is_none());
        assert!(all.is_empty());
    }

    #[test]
    fn principal_is_spiffe_with_the_default_trust_domain() {
        let w = pod("a", "10.0.0.1");
        assert_eq!(
            w.principal().as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/cart")
        );
        let anonymous = Workload::default();
        assert_eq!(anonymous.principal(), None);
    }
}
