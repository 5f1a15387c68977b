//! The agent's bpffs directory: its lock, the maps pinned there and what
//! this build expects of them, and removing what an agent left.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use kmesh_common::{
    BackendKey, BackendValue, RouteDecision, ServiceKey, ServiceValue, map_capacity, map_names,
};
use tracing::{info, warn};

use super::{DataPlaneError, pinned_links};
use crate::sysfs;

/// What this build expects of a map pinned under the bpffs directory. A
/// pinned map is reused as it is (aya does not compare it with the
/// object's definition), and with `--on-exit keep-routing` the pins outlive
/// every agent, so a definition that changed must be caught here.
pub(super) struct PinnedMap {
    pub(super) name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl PinnedMap {
    const fn of<K, V>(name: &'static str, map_type: MapType, max_entries: u32) -> Self {
        Self {
            name,
            map_type,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
        }
    }

    /// The definition as (type, key size, value size, capacity).
    fn layout(&self) -> (MapType, u32, u32, u32) {
        (
            self.map_type,
            self.key_size,
            self.value_size,
            self.max_entries,
        )
    }
}

pub(super) const PINNED_MAPS: [PinnedMap; 3] = [
    PinnedMap::of::<ServiceKey, ServiceValue>(
        map_names::SERVICES,
        MapType::Hash,
        map_capacity::SERVICES,
    ),
    PinnedMap::of::<BackendKey, BackendValue>(
        map_names::BACKENDS,
        MapType::Hash,
        map_capacity::BACKENDS,
    ),
    PinnedMap::of::<u64, RouteDecision>(
        map_names::SOCK_ROUTES,
        MapType::LruHash,
        map_capacity::SOCK_ROUTES,
    ),
];

/// What [`remove_left_state`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Program ids that stopped routing as their link pins went.
    pub detached_programs: Vec<u32>,
    pub maps: Vec<PathBuf>,
}

/// Removes what an agent left in the bpffs directory `dir`: the routing
/// links (detaching their programs), then the maps and `dir` itself. For
/// uninstalling after agents that ran with [`super::OnExit::KeepRouting`]; refused
/// while an agent runs with `dir`. Anything else in `dir` is left, named.
pub fn remove_left_state(dir: &Path) -> Result<Removed, DataPlaneError> {
    if !dir.exists() {
        return Ok(Removed::default());
    }
    // A running agent holds no fd of its pinned links: removing them under
    // it would stop its routing while it reports ready.
    let _lock = lock_pin_dir(dir)?;
    let detached_programs = pinned_links::remove_all(&dir.join(pinned_links::LINKS_DIR))?;
    let maps = PINNED_MAPS
        .iter()
        .map(|spec| dir.join(spec.name))
        .filter(|p| p.exists())
        .collect();
    remove_pins(dir);
    if dir.exists() {
        let others: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        return Err(DataPlaneError::Bpffs {
            path: dir.to_path_buf(),
            reason: format!(
                "still holds {others:?}, which no kmesh-agent pins; remove them if nothing else uses them"
            ),
        });
    }
    Ok(Removed {
        detached_programs,
        maps,
    })
}

pub(super) fn prepare_pin_dir(dir: &Path) -> Result<(), DataPlaneError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    sysfs::ensure_bpffs(parent)?;
    std::fs::create_dir_all(dir).map_err(|e| DataPlaneError::Bpffs {
        path: dir.to_path_buf(),
        reason: format!("cannot create: {e}"),
    })
}

/// Takes the bpffs directory for this process alone: an exclusive flock
/// on the directory, released by the kernel however the process ends.
pub(super) fn lock_pin_dir(dir: &Path) -> Result<File, DataPlaneError> {
    let file = File::open(dir).map_err(|e| DataPlaneError::Bpffs {
        path: dir.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc == 0 {
        return Ok(file);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(DataPlaneError::PinDirBusy {
            path: dir.to_path_buf(),
        });
    }
    Err(DataPlaneError::Bpffs {
        path: dir.to_path_buf(),
        reason: format!("cannot lock: {e}"),
    })
}

pub(super) fn check_existing_pins(dir: &Path) -> Result<(), DataPlaneError> {
    for spec in &PINNED_MAPS {
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let found = MapInfo::from_pin(&path).map_err(|e| DataPlaneError::Bpffs {
            path: path.clone(),
            reason: format!("cannot open pinned map: {e}"),
        })?;
        let found_type = found.map_type().map_err(|e| DataPlaneError::Bpffs {
            path: path.clone(),
            reason: format!("cannot read the pinned map's type: {e}"),
        })?;
        let found = (
            found_type,
            found.key_size(),
            found.value_size(),
            found.max_entries(),
        );
        if found != spec.layout() {
            return Err(DataPlaneError::IncompatiblePin {
                path,
                dir: dir.to_path_buf(),
                found: format!("{found:?}"),
                expected: format!("{:?}", spec.layout()),
            });
        }
        info!(map = %path.display(), "reusing pinned map");
    }
    Ok(())
}

pub(super) fn remove_pins(dir: &Path) {
    for spec in &PINNED_MAPS {
        let path = dir.join(spec.name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(map = %path.display(), error = %e, "could not remove pinned map");
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "could not remove the bpffs directory (not empty?)");
    }
}
