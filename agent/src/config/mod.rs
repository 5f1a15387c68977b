//! The mesh file source: the compact kmesh-rs format, Envoy v3 resources
//! (lists, discovery responses, bootstraps, admin config dumps) in JSON or
//! YAML, or a ztunnel (Istio ambient) config dump. `--config` may name one file or a directory of them, as a mounted
//! ConfigMap is; Envoy resources from several files form one set.
mod compact;

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde_json::Value;

pub use self::compact::parse;
use crate::{
    model::{Mesh, ProbeSettings, ResourceRef},
    xds::{self, Report, ambient, resources::ResourceSet},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read mesh config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "mesh config {path} is empty; a truncated write or an empty ConfigMap? To remove every service, write `services: []` (or, for Envoy resources, an empty list `[]`)"
    )]
    Empty { path: PathBuf },
    #[error(
        "mesh config directory {path} holds no mesh file (*.yaml, *.yml or *.json; hidden entries are skipped); an empty ConfigMap? To remove every service, add a file with `services: []`"
    )]
    NoFiles { path: PathBuf },
    #[error("mesh config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A mesh read from files, and what its translation reported.
#[derive(Debug)]
pub struct Loaded {
    pub mesh: Mesh,
    pub report: Report,
    /// Services of a compact file that will not be routed, which `check`
    /// prints and the agent warns of when it applies them (Envoy resources
    /// report theirs as findings).
    pub notes: Vec<String>,
}

struct Document {
    path: PathBuf,
    text: String,
    version: String,
}

/// Reads and validates the mesh at `path` (a file or a directory). A file
/// with no document, or a directory with no mesh file, is refused: far more
/// often a truncated write or an empty ConfigMap than a wish to route
/// nothing, which `services: []` says.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |error| ConfigError::Read { path: p, error }
    };
    let meta = std::fs::metadata(path).map_err(read_err(path))?;
    let files = if meta.is_dir() {
        let files = config_files(path).map_err(read_err(path))?;
        if files.is_empty() {
            return Err(ConfigError::NoFiles {
                path: path.to_path_buf(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(read_err(&file))?;
        let version = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .map(file_version)
            .unwrap_or_default();
        docs.push(Document {
            path: file,
            text,
            version,
        });
    }
    from_documents(path, &docs)
}

/// Reads and validates a mesh from one document in memory, as `load` reads
/// one file (the fuzz targets go through here); errors name `<memory>`.
pub fn load_text(text: &str) -> Result<Loaded, ConfigError> {
    let path = Path::new("<memory>");
    let doc = Document {
        path: path.to_path_buf(),
        text: text.to_string(),
        version: String::new(),
    };
    from_documents(path, &[doc])
}

/// The JSON and YAML files of a directory, in name order; hidden entries
/// (a ConfigMap's `..data`) are skipped.
fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !name.starts_with('.') && ["yaml", "yml", "json"].contains(&ext) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_version(t: SystemTime) -> String {
    format!("file modified {}", humantime::format_rfc3339_seconds(t))
}

/// The values of a file: JSON, or YAML with one or more documents; empty
/// (null) YAML documents are left out.
pub fn values_of(text: &str) -> Result<Vec<Value>, String> {
    // Checked before parsing: YAML refuses a tab where a token could start,
    // yet a file of blank lines and comments is empty whatever its spaces.
    let blank_or_comment = |line: &str| line.trim().is_empty() || line.trim().starts_with('#');
    if text.lines().all(blank_or_comment) {
        return Ok(Vec::new());
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| e.to_string());
    }
    let mut values = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            values.push(v);
        }
    }
    Ok(values)
}

fn from_documents(root: &Path, docs: &[Document]) -> Result<Loaded, ConfigError> {
    let invalid = |path: &Path, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut set = ResourceSet::default();
    let mut compact: Option<&Document> = None;
    let mut ztunnel: Option<&Document> = None;
    let mut addresses = ambient::AddressSet::default();
    let mut envoy_files = 0;
    for doc in docs {
        let values = values_of(&doc.text).map_err(|e| invalid(&doc.path, e))?;
        if values.is_empty() {
            return Err(ConfigError::Empty {
                path: doc.path.clone(),
            });
        }
        for value in &values {
            if ambient::dump::is_dump(value) {
                if let Some(first) = ztunnel.replace(doc) {
                    return Err(invalid(
                        root,
                        format!(
                            "{} and {} are both ztunnel config dumps; give one (one ztunnel's view of the mesh)",
                            first.path.display(),
                            doc.path.display()
                        ),
                    ));
                }
                ambient::dump::read(value, &doc.version, &mut addresses)
                    .map_err(|e| invalid(&doc.path, format!("ztunnel config dump: {e}")))?;
                continue;
            }
            if xds::json::is_envoy_document(value) {
                xds::json::read(value, &doc.version, &mut set)
                    .map_err(|e| invalid(&doc.path, e))?;
                envoy_files += 1;
            } else {
                match compact {
                    None => compact = Some(doc),
                    Some(first) if first.path == doc.path => {
                        return Err(invalid(
                            &doc.path,
                            "more than one document in the compact format; put every service in one document".into(),
                        ));
                    }
                    Some(first) => {
                        return Err(invalid(
                            root,
                            format!(
                                "{} and {} are both in the compact format, and a directory may hold one compact-format file; put every service in one of them",
                                first.path.display(),
                                doc.path.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(dump) = ztunnel {
        if let Some(other) = compact
            .map(|d| d.path.as_path())
            .or((envoy_files > 0).then_some(root))
        {
            return Err(invalid(
                root,
                format!(
                    "{} is a ztunnel config dump but {} holds another format; use one format",
                    dump.path.display(),
                    other.display()
                ),
            ));
        }
        let (mesh, report) = ambient::translate::translate(&addresses, ProbeSettings::default());
        return Ok(Loaded {
            notes: unrouted_notes(&mesh),
            mesh,
            report,
        });
    }
    match compact {
        Some(doc) if envoy_files > 0 => Err(invalid(
            root,
            format!(
                "{} is in the compact format but other documents hold Envoy resources; use one format",
                doc.path.display()
            ),
        )),
        Some(doc) => {
            let mut mesh = parse(&doc.text).map_err(|e| invalid(&doc.path, e))?;
            for service in mesh.services.values_mut() {
                service.origin.resources.push(ResourceRef {
                    kind: "file",
                    name: doc.path.display().to_string(),
                    version: doc.version.clone(),
                });
            }
            Ok(Loaded {
                notes: unrouted_notes(&mesh),
                mesh,
                report: Report::default(),
            })
        }
        None => {
            let (mesh, report, _) = xds::mesh_of(&set, ProbeSettings::default());
            Ok(Loaded {
                mesh,
                report,
                notes: Vec::new(),
            })
        }
    }
}

/// A service with nothing to route to is valid (its backends may come
/// later) but connections to its vip go out unchanged, which a user should
/// hear of.
fn unrouted_notes(mesh: &Mesh) -> Vec<String> {
    mesh.services
        .values()
        .filter_map(|s| {
            let why = if s.backends.is_empty() {
                "has no backends"
            } else if s.routable_backends().is_empty() {
                "has every backend at weight 0 (drained)"
            } else {
                return None;
            };
            Some(format!(
                "service {:?} ({}) {why}; connect() to it is refused (EPERM) until it has a backend",
                s.name, s.vip
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
