//! Who the agent says it is to istiod. Istio reads a proxy's type,
//! IP, pod and namespace from the node ID (`TYPE~IP~POD.NS~NS.svc.DOMAIN`),
//! checks the namespace against the caller's token, and takes the rest from
//! the metadata; this builds both from the pod's downward-API environment.
use std::collections::BTreeMap;

use envoy_types::pb::{
    envoy::config::core::v3::{Node, node::UserAgentVersionType},
    google::protobuf::{Struct, Value, value::Kind},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub id: String,
    pub cluster: String,
    pub metadata: BTreeMap<String, String>,
}

/// What the node ID and metadata are made of.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub pod_name: String,
    pub namespace: String,
    pub ip: String,
    pub node_name: String,
    pub cluster_id: String,
    pub dns_domain: String,
    /// Passed on when set, so istiod generates config for that proxy version.
    pub istio_version: Option<String>,
}

impl NodeFacts {
    /// From the DaemonSet's environment (`POD_NAME`, `POD_NAMESPACE`,
    /// `INSTANCE_IP` or `POD_IP`, `NODE_NAME`), with fallbacks for a
    /// process run by hand.
    pub fn from_env(cluster_id: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "kmesh-agent".into());
        Self {
            pod_name: env("POD_NAME").unwrap_or_else(|| host.clone()),
            namespace: env("POD_NAMESPACE").unwrap_or_else(|| "kmesh-system".into()),
            ip: env("INSTANCE_IP")
                .or_else(|| env("POD_IP"))
                .unwrap_or_else(|| "127.0.0.1".into()),
            node_name: env("NODE_NAME").unwrap_or(host),
            cluster_id: cluster_id.to_string(),
            dns_domain: env("DNS_DOMAIN").unwrap_or_else(|| "cluster.local".into()),
            istio_version: env("ISTIO_VERSION"),
        }
    }

    /// A sidecar-type node: istiod then sends the outbound clusters,
    /// listeners and routes a sidecar of this namespace would get.
    pub fn identity(&self) -> NodeIdentity {
        self.identity_as("sidecar")
    }

    /// A ztunnel-type node, as ztunnel presents itself
    /// (`ztunnel~IP~POD.NS~NS.svc.DOMAIN`, metadata `NAME`, `NAMESPACE`,
    /// `INSTANCE_IPS`, `NODE_NAME`, `CLUSTER_ID`): istiod then serves it
    /// the workload discovery of ambient mode.
    pub fn ztunnel_identity(&self) -> NodeIdentity {
        self.identity_as("ztunnel")
    }

    fn identity_as(&self, proxy_type: &str) -> NodeIdentity {
        let ns = &self.namespace;
        let mut metadata = BTreeMap::from([
            ("CLUSTER_ID".to_string(), self.cluster_id.clone()),
            ("NAMESPACE".to_string(), ns.clone()),
            ("NAME".to_string(), self.pod_name.clone()),
            ("INSTANCE_IPS".to_string(), self.ip.clone()),
            ("NODE_NAME".to_string(), self.node_name.clone()),
        ]);
        if let Some(v) = &self.istio_version {
            metadata.insert("ISTIO_VERSION".into(), v.clone());
        }
        NodeIdentity {
            id: format!(
                "{proxy_type}~{}~{}.{ns}~{ns}.svc.{}",
                self.ip, self.pod_name, self.dns_domain
            ),
            cluster: format!("{}.{ns}", self.pod_name),
            metadata,
        }
    }
}

impl NodeIdentity {
    pub fn to_node(&self) -> Node {
        let fields = self
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        kind: Some(Kind::StringValue(v.clone())),
                    },
                )
            })
            .collect();
        Node {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            metadata: Some(Struct { fields }),
            user_agent_name: "kmesh-rs".into(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            )),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_id_and_metadata_as_istio_parses_them() {
        let facts = NodeFacts {
            pod_name: "kmesh-abc".into(),
            namespace: "kmesh-system".into(),
            ip: "10.0.0.7".into(),
            node_name: "worker-1".into(),
            cluster_id: "Kubernetes".into(),
            dns_domain: "cluster.local".into(),
            istio_version: Some("1.24.0".into()),
        };
        let id = facts.identity();
        assert_eq!(
            id.id,
            "sidecar~10.0.0.7~kmesh-abc.kmesh-system~kmesh-system.svc.cluster.local"
        );
        let node = id.to_node();
        let fields = node.metadata.unwrap().fields;
        assert_eq!(
            fields["NAMESPACE"].kind,
            Some(Kind::StringValue("kmesh-system".into()))
        );
        assert!(fields.contains_key("ISTIO_VERSION"));
        assert_eq!(node.user_agent_name, "kmesh-rs");
        let z = facts.ztunnel_identity();
        assert_eq!(
            z.id,
            "ztunnel~10.0.0.7~kmesh-abc.kmesh-system~kmesh-system.svc.cluster.local"
        );
        for key in [
            "NAME",
            "NAMESPACE",
            "INSTANCE_IPS",
            "NODE_NAME",
            "CLUSTER_ID",
        ] {
            assert!(z.metadata.contains_key(key), "{key}");
        }
    }
}
