//! The compact mesh format (YAML): parsing and validation into a [`Mesh`].
//!
//! Each field is validated inside its own visitor, so the YAML deserializer
//! attaches the line and column of the offending field (the vip, a
//! backend's address, a weight) to the error; what needs the whole service
//! points at the service. Fields are read in the order written, so a check
//! between two fields (a backend's address family against the vip's) is
//! made at the one written second. The format is documented in
//! docs/configuration.md.
mod non_empty;
mod workloads;

use std::{collections::BTreeMap, fmt, net::SocketAddr, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};

use self::non_empty::NonEmptyField;
use crate::model::{
    Backend, MAX_BACKENDS, Mesh, Origin, Policy, ProbeSettings, RESERVED_NAMES, Service,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    #[serde(default)]
    probe: RawProbe,
    /// Required, so that a file cut short before its list is not read as
    /// "route nothing"; `services: []` says that.
    services: Option<Vec<ValidService>>,
    #[serde(default)]
    workloads: Vec<workloads::RawWorkload>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    /// Seconds between running-total reports of a long-lived connection; 0 turns them off.
    report_interval_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ServiceField {
    Name,
    Namespace,
    Vip,
    Policy,
    Backends,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum BackendField {
    Address,
    Weight,
    Workload,
}

/// A field may be given once.
fn unset<T, E: de::Error>(slot: &Option<T>, field: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(field)),
        None => Ok(()),
    }
}

fn socket_addr<E: de::Error>(what: &str, v: &str, example: &str) -> Result<SocketAddr, E> {
    let addr: SocketAddr = v.trim().parse().map_err(|_| {
        E::custom(format!(
            "{what} {v:?} is not an IP address and port, like {example}"
        ))
    })?;
    if let std::net::IpAddr::V6(v6) = addr.ip()
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(E::custom(format!(
            "{what} {addr} is an IPv4-mapped IPv6 address; write it as {v4}:{}",
            addr.port()
        )));
    }
    Ok(addr)
}

fn family(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A service as far as it has been read, which is how errors name it.
#[derive(Default)]
struct ServiceSoFar {
    name: Option<String>,
    vip: Option<SocketAddr>,
    backends: Option<Vec<Backend>>,
}

impl ServiceSoFar {
    fn label(&self) -> String {
        match (&self.name, self.vip) {
            (Some(name), Some(vip)) => format!("service {name:?} ({vip})"),
            (Some(name), None) => format!("service {name:?}"),
            (None, Some(vip)) => format!("service at {vip}"),
            (None, None) => "service".to_string(),
        }
    }
}

#[derive(Debug)]
struct ValidService(Service);

impl<'de> Deserialize<'de> for ValidService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ServiceVisitor)
    }
}

struct ServiceVisitor;

impl<'de> Visitor<'de> for ServiceVisitor {
    type Value = ValidService;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a service (name, vip, policy, backends)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValidService, A::Error> {
        let mut service = ServiceSoFar::default();
        let mut policy = None;
        let mut namespace = None;
        while let Some(field) = map.next_key()? {
            match field {
                ServiceField::Name => {
                    unset(&service.name, "name")?;
                    service.name = Some(map.next_value::<ServiceName>()?.0);
                }
                ServiceField::Namespace => {
                    unset(&namespace, "namespace")?;
                    let field = NonEmptyField::new(
                        format!("{}: namespace", service.label()),
                        "leave it out when there is none",
                    );
                    namespace = Some(map.next_value_seed(field)?.0);
                }
                ServiceField::Vip => {
                    unset(&service.vip, "vip")?;
                    service.vip = Some(map.next_value_seed(VipSeed(&service))?);
                }
                ServiceField::Policy => {
                    unset(&policy, "policy")?;
                    policy = Some(map.next_value()?);
                }
                ServiceField::Backends => {
                    unset(&service.backends, "backends")?;
                    service.backends = Some(map.next_value_seed(BackendsSeed(&service))?);
                }
            }
        }
        let what = service.label();
        let name = service
            .name
            .ok_or_else(|| de::Error::missing_field("name"))?;
        let vip = service.vip.ok_or_else(|| de::Error::missing_field("vip"))?;
        let policy = policy.unwrap_or(Policy::Random);
        let backends = service.backends.unwrap_or_default();
        if policy == Policy::Weighted
            && !backends.is_empty()
            && backends.iter().all(|b| b.weight == 0)
        {
            return Err(de::Error::custom(format!(
                "{what}: policy weighted but all weights are 0; give at least one backend a weight"
            )));
        }
        Ok(ValidService(Service {
            name,
            namespace,
            vip,
            policy,
            backends,
            origin: Origin::default(),
        }))
    }
}

/// A service's name, trimmed: not empty, not a name the metrics reserve.
struct ServiceName(String);

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ServiceNameVisitor)
    }
}

struct ServiceNameVisitor;

impl Visitor<'_> for ServiceNameVisitor {
    type Value = ServiceName;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a service name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ServiceName, E> {
        let name = NonEmptyField::new("a service's name".into(), "").check(v)?;
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(E::custom(format!(
                "the name {name:?} is reserved for series of unconfigured destinations; rename the service"
            )));
        }
        Ok(ServiceName(name))
    }
}

/// The vip, checked against the backends when they were written first.
struct VipSeed<'s>(&'s ServiceSoFar);

impl<'de> DeserializeSeed<'de> for VipSeed<'_> {
    type Value = SocketAddr;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for VipSeed<'_> {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vip, an IP address and port")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        let what = self.0.label();
        let vip = socket_addr(
            &format!("{what}: vip"),
            v,
            "198.18.0.10:9080 or \"[fd00::10]:80\"",
        )?;
        if vip.port() == 0 {
            return Err(E::custom(format!(
                "{what}: vip {vip} needs a port other than 0"
            )));
        }
        if let Some(first) = self.0.backends.iter().flatten().next()
            && first.addr.is_ipv4() != vip.is_ipv4()
        {
            return Err(E::custom(format!(
                "{what}: vip {vip} is {} but its backends are {} (like {}); a service's backends are of its vip's address family",
                family(vip),
                family(first.addr),
                first.addr
            )));
        }
        Ok(vip)
    }
}

/// The backend list of the service read so far.
struct BackendsSeed<'s>(&'s ServiceSoFar);

impl<'de> DeserializeSeed<'de> for BackendsSeed<'_> {
    type Value = Vec<Backend>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Backend>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BackendsSeed<'_> {
    type Value = Vec<Backend>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of backends (address, weight)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Backend>, A::Error> {
        let mut list = BackendList {
            service: self.0,
            backends: Vec::new(),
            weights: 0,
        };
        while let Some(backend) = seq.next_element_seed(BackendSeed(&list))? {
            list.weights += u64::from(backend.weight);
            list.backends.push(backend);
        }
        Ok(list.backends)
    }
}

/// The backends read so far, which the next one is checked against.
struct BackendList<'s> {
    service: &'s ServiceSoFar,
    backends: Vec<Backend>,
    /// Their weights' sum.
    weights: u64,
}

impl BackendList<'_> {
    /// Whose field a message is about: the service, and the backend if its
    /// address has been read.
    fn label(&self, addr: Option<SocketAddr>) -> String {
        match addr {
            Some(addr) => format!("{}: backend {addr}", self.service.label()),
            None => self.service.label(),
        }
    }

    /// A weight added to the sum, which the kernel keeps in 32 bits.
    fn check_sum<E: de::Error>(&self, addr: Option<SocketAddr>, weight: u32) -> Result<(), E> {
        let total = self.weights + u64::from(weight);
        if total > u64::from(u32::MAX) {
            return Err(E::custom(format!(
                "{}: weights sum to {total}, above {}; lower them (only their ratios count)",
                self.label(addr),
                u32::MAX
            )));
        }
        Ok(())
    }
}

struct BackendSeed<'l, 's>(&'l BackendList<'s>);

impl<'de> DeserializeSeed<'de> for BackendSeed<'_, '_> {
    type Value = Backend;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Backend, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BackendSeed<'_, '_> {
    type Value = Backend;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend (address, weight)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Backend, A::Error> {
        let list = self.0;
        if list.backends.len() == MAX_BACKENDS {
            return Err(de::Error::custom(format!(
                "{}: more than {MAX_BACKENDS} backends, at most {MAX_BACKENDS} are supported; split the service",
                list.service.label()
            )));
        }
        let mut addr = None;
        let mut weight = None;
        let mut workload = None;
        while let Some(field) = map.next_key()? {
            match field {
                BackendField::Address => {
                    unset(&addr, "address")?;
                    addr = Some(map.next_value_seed(AddressSeed(list))?);
                }
                BackendField::Weight => {
                    unset(&weight, "weight")?;
                    weight = Some(map.next_value_seed(WeightSeed { list, addr })?);
                }
                BackendField::Workload => {
                    unset(&workload, "workload")?;
                    let field = NonEmptyField::new(
                        format!("{}: workload", list.label(addr)),
                        "a uid, or namespace/name, of `workloads:`",
                    );
                    workload = Some(map.next_value_seed(field)?.0);
                }
            }
        }
        let addr = addr.ok_or_else(|| de::Error::missing_field("address"))?;
        let weight = match weight {
            Some(weight) => weight,
            None => {
                list.check_sum(Some(addr), 1)?;
                1
            }
        };
        Ok(Backend {
            addr,
            weight,
            workload,
        })
    }
}

/// A backend's address, checked against the vip and the backends before it.
struct AddressSeed<'l, 's>(&'l BackendList<'s>);

impl<'de> DeserializeSeed<'de> for AddressSeed<'_, '_> {
    type Value = SocketAddr;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for AddressSeed<'_, '_> {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend address, an IP address and port")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        let list = self.0;
        let what = list.service.label();
        let addr = socket_addr(&format!("{what}: backend"), v, "10.244.1.5:9080")?;
        if addr.port() == 0 {
            return Err(E::custom(format!("{what}: backend {addr} needs a port")));
        }
        if let Some(vip) = list.service.vip {
            if vip.is_ipv4() != addr.is_ipv4() {
                return Err(E::custom(format!(
                    "{what}: backend {addr} is not of the vip's address family ({}); a service's backends are of its vip's family",
                    family(vip)
                )));
            }
        } else if let Some(first) = list.backends.first()
            && first.addr.is_ipv4() != addr.is_ipv4()
        {
            return Err(E::custom(format!(
                "{what}: backend {addr} is not of the address family of backend {} ({}); a service's backends are of one family, its vip's",
                first.addr,
                family(first.addr)
            )));
        }
        if list.backends.iter().any(|b| b.addr == addr) {
            return Err(E::custom(format!("{what}: backend {addr} is listed twice")));
        }
        Ok(addr)
    }
}

/// A backend's weight: a whole number that fits the kernel's 32 bits.
struct WeightSeed<'l, 's> {
    list: &'l BackendList<'s>,
    /// The backend's address, when written before its weight.
    addr: Option<SocketAddr>,
}

impl<'de> DeserializeSeed<'de> for WeightSeed<'_, '_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_any(self)
    }
}

impl WeightSeed<'_, '_> {
    fn not_a_weight<E: de::Error>(&self, shown: impl fmt::Display) -> E {
        E::custom(format!(
            "{}: weight {shown} is not a whole number 0..=4294967295 (a share of connections under policy weighted; 0 drains the backend)",
            self.list.label(self.addr)
        ))
    }
}

impl Visitor<'_> for WeightSeed<'_, '_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "the weight of {}, a whole number 0..=4294967295",
            self.list.label(self.addr)
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        let weight = u32::try_from(v).map_err(|_| self.not_a_weight(v))?;
        self.list.check_sum(self.addr, weight)?;
        Ok(weight)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.not_a_weight(v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
        Err(self.not_a_weight(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        Err(self.not_a_weight(format!("{v:?}")))
    }
}

/// Parses mesh YAML; the error names the line and what to change.
pub fn parse(text: &str) -> Result<Mesh, String> {
    let raw: RawMesh = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Some(raw_services) = raw.services else {
        return Err(
            "no `services:` list; a truncated write? To remove every service, write `services: []`"
                .into(),
        );
    };
    let mut services = BTreeMap::new();
    for ValidService(service) in raw_services {
        if let Some(other) = services.get(&service.vip).map(|s: &Service| s.name.clone()) {
            return Err(format!(
                "services {other:?} and {:?} both use vip {}; each vip:port may belong to one service",
                service.name, service.vip
            ));
        }
        services.insert(service.vip, service);
    }
    let mut probe = ProbeSettings::default();
    if let Some(secs) = raw.probe.report_interval_seconds {
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(format!(
                "probe.report_interval_seconds: {secs} is outside 0..=86400 (0 turns periodic reports off)"
            ));
        }
        probe.report_interval = Duration::from_secs_f64(secs);
    }
    let mut mesh = Mesh {
        services,
        workloads: workloads::collect(raw.workloads)?,
        probe,
    };
    workloads::link_backends(&mut mesh)?;
    Ok(mesh)
}

#[cfg(test)]
mod tests;
