//! The admin API's socket file: owner-only, in a directory only the agent's
//! user can write, held by one agent at a time (a lock file beside it), and
//! removed at exit only if it is still the one this agent bound.
use std::{
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "another process is serving the admin API at {0}; stop it, or give this agent another --admin-socket"
    )]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket; remove it or choose another --admin-socket")]
    NotASocket { path: PathBuf },
    #[error(
        "{dir} is not private to the agent's user (owned by another user, or writable by others), so the admin socket in it could be replaced; use a directory only root can write, like the default /run/kmesh-rs"
    )]
    SharedDirectory { dir: PathBuf },
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bound socket and its file.
pub struct AdminSocket {
    pub(super) listener: UnixListener,
    pub(super) file: SocketFile,
}

/// What proves the file at the socket's path is still this agent's.
pub(super) struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket file as bound.
    id: (u64, u64),
    /// Held for the agent's life: a second agent on the same path fails to
    /// take it instead of racing this one for the socket file.
    _lock: std::fs::File,
}

/// Binds the socket, owner-only, replacing a stale one a crashed agent left.
pub fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let meta = std::fs::metadata(&dir).map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
        return Err(AdminError::SharedDirectory { dir });
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_extension("lock"))
        .map_err(io)?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AdminError::InUse(path.to_path_buf()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AdminError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(AdminError::InUse(path.to_path_buf())),
            // Nobody listens: a crashed agent's socket.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    // The directory is private (checked above), so the path cannot have
    // been swapped for a link since the bind.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    Ok(AdminSocket {
        listener,
        file: SocketFile {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            _lock: lock,
        },
    })
}

impl SocketFile {
    /// Removes the socket file if it is still the one this agent bound.
    pub(super) fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_owner_only_and_a_live_one_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("kmesh-admin-test-{}", std::process::id()));
        let path = dir.join("sub").join("admin.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = bind(&path).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            assert!(
                matches!(bind(&path), Err(AdminError::InUse(_))),
                "the lock is held"
            );
            // A crashed agent: its lock is gone, its socket file is not.
            let AdminSocket { listener, file } = socket;
            drop(listener);
            drop(file);
            let again = bind(&path).expect("a stale socket is replaced");
            // A file that is no longer ours is left alone at shutdown.
            let AdminSocket { listener, file } = again;
            drop(listener);
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"someone else's").unwrap();
            file.remove();
            assert!(path.exists());
        });
        std::fs::write(dir.join("plain"), b"x").unwrap();
        assert!(matches!(
            bind(&dir.join("plain")),
            Err(AdminError::NotASocket { .. })
        ));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind(&dir.join("x.sock")),
            Err(AdminError::SharedDirectory { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
