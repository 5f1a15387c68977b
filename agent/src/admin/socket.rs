//! The admin API's socket file: owner-only, in a directory only the agent's
//! user can write, held by one agent at a time (a lock file beside it), and
//! removed at exit only if it is still the one this agent bound.
use std::{
    fs::File,
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
    #[error("admin socket {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The bound socket and its file.
pub struct AdminSocket {
    pub(super) listener: UnixListener,
    pub(super) file: SocketFile,
}

/// The socket file and its lock file, removed when dropped (at exit, also
/// after a failed start) if they are still this agent's.
pub(super) struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket file as bound.
    id: (u64, u64),
    lock_path: PathBuf,
    /// Held for the agent's life: a second agent on the same path fails to
    /// take it instead of racing this one for the socket file.
    lock: File,
}

/// Binds the socket, owner-only, replacing a stale one a crashed agent left.
pub fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
    let io = |error| AdminError::Io {
        path: path.to_path_buf(),
        error,
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
    let lock_path = path.with_extension("lock");
    let lock = take_lock(&lock_path).map_err(|e| match e {
        LockError::Held => AdminError::InUse(path.to_path_buf()),
        LockError::Io(error) => AdminError::Io {
            path: lock_path.clone(),
            error,
        },
    })?;
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
            lock_path,
            lock,
        },
    })
}

enum LockError {
    Held,
    Io(std::io::Error),
}

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Opens and locks the lock file. An agent removes its lock file at exit,
/// so the file locked must still be the one at the path: one removed
/// between our open and our lock proves nothing, and is opened anew.
fn take_lock(lock_path: &Path) -> Result<File, LockError> {
    loop {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path)
            .map_err(LockError::Io)?;
        // SAFETY: a valid open file descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(LockError::Held);
        }
        let locked = lock.metadata().map_err(LockError::Io)?;
        match std::fs::symlink_metadata(lock_path) {
            Ok(at_path) if file_id(&at_path) == file_id(&locked) => return Ok(lock),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LockError::Io(e)),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && file_id(&m) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
        // Removed while still locked, so no other agent holds it yet.
        let lock_ours = match (
            self.lock.metadata(),
            std::fs::symlink_metadata(&self.lock_path),
        ) {
            (Ok(held), Ok(at_path)) => file_id(&held) == file_id(&at_path),
            _ => false,
        };
        if lock_ours {
            let _ = std::fs::remove_file(&self.lock_path);
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
            // An agent that ends, also after a failed start, leaves nothing.
            drop(socket);
            assert!(!path.exists(), "the socket file is removed");
            assert!(
                !path.with_extension("lock").exists(),
                "the lock file is removed"
            );
            // A crashed agent: its lock is gone, its socket file is not.
            drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            let again = bind(&path).expect("a stale socket is replaced");
            // A file that is no longer ours is left alone at shutdown.
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"someone else's").unwrap();
            drop(again);
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
