//! Where istiod is and how to reach it: command-line flags with
//! `KMESH_XDS_*` environment fallbacks, resolved once into [`AdsSettings`].
use std::path::PathBuf;

use clap::Args;

use super::node::{NodeFacts, NodeIdentity};

#[derive(Args, Clone, Debug, Default)]
pub struct XdsArgs {
    /// xDS control plane (ADS) to take the mesh from, as HOST:PORT or a URL:
    /// istiod's plain-text port 15010, or 15012 with --xds-ca-file.
    #[arg(long, env = "KMESH_XDS_ADDRESS")]
    pub xds_address: Option<String>,
    /// PEM file of the CA that signed the control plane's certificate;
    /// turns TLS on (istiod: the istio-ca-root-cert ConfigMap's root-cert.pem).
    #[arg(long, env = "KMESH_XDS_CA_FILE")]
    pub xds_ca_file: Option<PathBuf>,
    /// Name to verify in the control plane's certificate (istiod:
    /// istiod.istio-system.svc); default: the address's host.
    #[arg(long, env = "KMESH_XDS_SERVER_NAME")]
    pub xds_server_name: Option<String>,
    /// File holding a bearer token sent with each stream (a projected
    /// service-account token with audience istio-ca); re-read on every
    /// reconnect, so rotation needs no restart.
    #[arg(long, env = "KMESH_XDS_TOKEN_FILE")]
    pub xds_token_file: Option<PathBuf>,
    /// Istio cluster ID sent in the node metadata.
    #[arg(long, env = "KMESH_XDS_CLUSTER_ID", default_value = "Kubernetes")]
    pub xds_cluster_id: String,
    /// Node ID to present instead of the one built from POD_NAME,
    /// POD_NAMESPACE and INSTANCE_IP (sidecar~... or, in ambient mode,
    /// ztunnel~...).
    #[arg(long, env = "KMESH_XDS_NODE_ID")]
    pub xds_node_id: Option<String>,
    /// What to ask the control plane for: `sidecar`, Envoy clusters,
    /// endpoints, listeners and routes (state of the world); or `ambient`,
    /// Istio ambient's workloads and services (istio.workload.Address over
    /// delta xDS, as ztunnel does).
    #[arg(long, env = "KMESH_XDS_MODE", value_enum, default_value_t = XdsMode::Sidecar)]
    pub xds_mode: XdsMode,
    /// How the sidecar mode's resources travel: `delta` (incremental,
    /// `DeltaAggregatedResources`: a change carries only the resources
    /// that changed) or `sotw` (state of the world: every response carries
    /// the whole set of its type). Ambient mode is always delta.
    #[arg(long, env = "KMESH_XDS_PROTOCOL", value_enum, default_value_t = XdsProtocol::Delta)]
    pub xds_protocol: XdsProtocol,
}

/// The ADS flavour of the sidecar mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdsProtocol {
    /// Incremental: `DeltaAggregatedResources`.
    #[default]
    Delta,
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
}

impl XdsProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            XdsProtocol::Delta => "delta",
            XdsProtocol::Sotw => "sotw",
        }
    }
}

/// Which API the agent reads from the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdsMode {
    /// Envoy's clusters, endpoints, listeners and routes, as a sidecar.
    #[default]
    Sidecar,
    /// `istio.workload.Address` over delta xDS, as ztunnel.
    Ambient,
}

impl XdsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdsMode::Sidecar => "sidecar",
            XdsMode::Ambient => "ambient",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AdsSettings {
    /// `http://` or `https://` URL of the server.
    pub url: String,
    pub ca_pem: Option<Vec<u8>>,
    pub server_name: Option<String>,
    pub token_file: Option<PathBuf>,
    pub node: NodeIdentity,
    pub mode: XdsMode,
    /// Delta or SotW; ambient mode is always delta.
    pub protocol: XdsProtocol,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--xds-address {0:?}: {1}")]
    Address(String, String),
    #[error(
        "--xds-ca-file {path}: {error}; give the PEM file of the CA that signed istiod's certificate"
    )]
    Ca {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--xds-token-file {path}: {error}")]
    Token {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl XdsArgs {
    /// `None` when no control plane is configured.
    pub fn resolve(&self) -> Result<Option<AdsSettings>, SettingsError> {
        let Some(address) = self.xds_address.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let tls = self.xds_ca_file.is_some();
        let url = if address.contains("://") {
            address.to_string()
        } else if tls {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| SettingsError::Address(address.into(), format!("{e}")))?;
        match (uri.scheme_str(), tls) {
            (Some("https"), false) => {
                return Err(SettingsError::Address(
                    address.into(),
                    "https needs --xds-ca-file to verify the server".into(),
                ));
            }
            (Some("http"), true) => {
                return Err(SettingsError::Address(
                    address.into(),
                    "--xds-ca-file is set but the URL says http; use https:// or HOST:PORT".into(),
                ));
            }
            (Some("http" | "https"), _) => {}
            _ => {
                return Err(SettingsError::Address(
                    address.into(),
                    "use HOST:PORT, http://HOST:PORT or https://HOST:PORT".into(),
                ));
            }
        }
        if uri.port_u16().is_none() {
            return Err(SettingsError::Address(
                address.into(),
                "needs a port (istiod: 15010 plain, 15012 TLS)".into(),
            ));
        }
        let ca_pem = match &self.xds_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|error| SettingsError::Ca {
                path: path.clone(),
                error,
            })?),
            None => None,
        };
        // Read once now so a wrong path fails at start, not at first connect.
        if let Some(path) = &self.xds_token_file {
            std::fs::metadata(path).map_err(|error| SettingsError::Token {
                path: path.clone(),
                error,
            })?;
        }
        let facts = NodeFacts::from_env(&self.xds_cluster_id);
        let mut node = match self.xds_mode {
            XdsMode::Sidecar => facts.identity(),
            XdsMode::Ambient => facts.ztunnel_identity(),
        };
        if let Some(id) = &self.xds_node_id {
            node.id = id.clone();
        }
        Ok(Some(AdsSettings {
            url,
            ca_pem,
            server_name: self.xds_server_name.clone(),
            token_file: self.xds_token_file.clone(),
            node,
            mode: self.xds_mode,
            protocol: match self.xds_mode {
                XdsMode::Sidecar => self.xds_protocol,
                XdsMode::Ambient => XdsProtocol::Delta,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: &str) -> XdsArgs {
        XdsArgs {
            xds_address: Some(address.into()),
            xds_cluster_id: "Kubernetes".into(),
            ..Default::default()
        }
    }

    #[test]
    fn addresses_become_urls() {
        let s = args("istiod.istio-system.svc:15010")
            .resolve()
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://istiod.istio-system.svc:15010");
        assert!(XdsArgs::default().resolve().unwrap().is_none());
    }

    #[test]
    fn bad_addresses_say_what_to_write() {
        for (addr, expected) in [
            ("istiod", "needs a port"),
            ("https://istiod:15012", "needs --xds-ca-file"),
            ("ftp://istiod:15012", "HOST:PORT"),
        ] {
            let e = args(addr).resolve().unwrap_err().to_string();
            assert!(e.contains(expected), "{addr}: {e}");
        }
        let mut a = args("istiod:15012");
        a.xds_ca_file = Some("/nonexistent/root-cert.pem".into());
        let e = format!("{:#}", anyhow::Error::from(a.resolve().unwrap_err()));
        assert!(e.contains("--xds-ca-file"), "{e}");
        assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    }
}
