//! Watches the mesh config and says when it may have changed. Editors and
//! ConfigMap updates replace a file rather than write it in place, so a
//! file's directory is watched and events are filtered by its name; a
//! directory (a ConfigMap volume, as the DaemonSet mounts it) is watched
//! itself, where the kubelet swaps its `..data` link on every update.
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {error}")]
pub struct WatchError {
    path: PathBuf,
    error: notify::Error,
}

/// Sends `()` on `changed` whenever the file or directory at `path` may have
/// changed. The watcher stops when the returned value is dropped.
pub fn watch(path: &Path, changed: mpsc::Sender<()>) -> Result<RecommendedWatcher, WatchError> {
    // `None`: every change in the watched directory is one of the config's.
    let (dir, name) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, path.file_name().map(|n| n.to_os_string()))
    };
    let err = |error| WatchError {
        path: path.to_path_buf(),
        error,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // Kubernetes swaps a ConfigMap's `..data` symlink, so any change in
        // the directory may be a change of the file.
        let ours = name.is_none()
            || event.paths.iter().any(|p| {
                p.file_name().map(|n| n.to_os_string()) == name
                    || p.file_name().is_some_and(|n| n == "..data")
            });
        if ours {
            // A full channel already holds a pending reload.
            let _ = changed.try_send(());
        }
    })
    .map_err(err)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_that_cannot_be_watched_is_named_with_the_cause_once() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let err = super::watch(std::path::Path::new("/nonexistent/kmesh/mesh.yaml"), tx)
            .expect_err("no such directory");
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("/nonexistent/kmesh/mesh.yaml"), "{chain}");
        assert_eq!(chain.matches("No path was found").count(), 1, "{chain}");
    }
}
