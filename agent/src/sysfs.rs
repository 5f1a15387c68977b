//! The kernel filesystems the agent needs: cgroup v2 (where programs attach)
//! and bpffs (where shared maps are pinned). bpffs is not mounted at boot on
//! every machine; the agent mounts it when it is missing.
use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use tracing::info;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(
        "{path} is not a bpf filesystem and mounting one there failed: {reason}; mount it (mount -t bpf bpf {path}) or pass --bpffs-dir under a bpffs mount"
    )]
    Bpffs { path: PathBuf, reason: String },
    #[error(
        "no cgroup v2 mount found in /proc/self/mountinfo; mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup"
    )]
    NoCgroup2,
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and buf is a valid statfs to fill.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    (rc == 0).then_some(buf.f_type as i64)
}

pub fn is_cgroup2(path: &Path) -> bool {
    fs_magic(path) == Some(CGROUP2_SUPER_MAGIC)
}

fn mount(fstype: &str, target: &Path) -> Result<(), String> {
    let src = CString::new(fstype).expect("no NUL");
    let target_c = CString::new(target.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target_c.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Makes sure `dir` (the parent of the pin directory) is on bpffs.
pub fn ensure_bpffs(dir: &Path) -> Result<(), SysError> {
    if fs_magic(dir) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    let err = |reason: String| SysError::Bpffs {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    mount("bpf", dir).map_err(err)?;
    info!(path = %dir.display(), "mounted bpffs");
    Ok(())
}

/// The cgroup v2 mount point: `/sys/fs/cgroup` on most Kubernetes nodes,
/// `/sys/fs/cgroup/unified` on hybrid hosts.
pub fn detect_cgroup2_mount() -> Result<PathBuf, SysError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|_| SysError::NoCgroup2)?;
    parse_cgroup2_mount(&mountinfo).ok_or(SysError::NoCgroup2)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    // Fields: id parent major:minor root mountpoint options ... - fstype source super
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lifting it is
/// harmless on newer ones, where memory is charged to the cgroup.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for the call to read.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      36 24 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 1 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
