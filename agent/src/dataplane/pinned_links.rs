//! The routing programs' links pinned in bpffs, so routing outlives the
//! agent process (a rolling update, a crash, an OOM kill). The next agent
//! finds them, attaches its own programs and only then lets the old links
//! go: from the first connect() to the last, some program routes.
//!
//! A link lives while something holds it: a pin or an open fd. The agent
//! holds none of its pinned links open, so removing a pin (the next agent,
//! `kmesh-agent cleanup`, or `rm`) detaches that program at once.
use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, LinkType, PinnedLink};
use tracing::{info, warn};

use super::DataPlaneError;

/// Subdirectory of the agent's bpffs directory holding the link pins.
pub const LINKS_DIR: &str = "links";

/// Links an earlier agent left pinned, held open so that they keep
/// routing while this agent attaches, whatever happens to their pins.
pub struct LeftLinks {
    links: Vec<LeftLink>,
}

struct LeftLink {
    path: PathBuf,
    program_id: u32,
    _link: FdLink,
}

impl LeftLinks {
    /// Opens every link pinned in `dir`; a missing directory has none.
    pub fn open(dir: &Path) -> Result<Self, DataPlaneError> {
        let err = |path: &Path, reason: String| DataPlaneError::Bpffs {
            path: path.to_path_buf(),
            reason,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self { links: vec![] }),
            Err(e) => return Err(err(dir, format!("cannot list pinned links: {e}"))),
        };
        let mut links = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| err(dir, format!("cannot list pinned links: {e}")))?
                .path();
            let link: FdLink = PinnedLink::from_pin(&path)
                .map_err(|e| {
                    err(
                        &path,
                        format!("cannot open the pinned link ({e}); remove it if nothing owns it"),
                    )
                })?
                .into();
            // Only cgroup links belong here; anything else is not ours to
            // detach or remove.
            let info = link
                .info()
                .ok()
                .filter(|i| matches!(i.link_type(), Ok(LinkType::Cgroup)))
                .ok_or_else(|| {
                    err(
                        &path,
                        format!(
                            "not a cgroup BPF link; only kmesh-agent's link pins belong in {}: move it elsewhere",
                            dir.display()
                        ),
                    )
                })?;
            let program_id = info.program_id();
            links.push(LeftLink {
                path,
                program_id,
                _link: link,
            });
        }
        Ok(Self { links })
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Lets the old links go: their pins are removed, except where this
    /// agent's own link now has the path, and closing the fds detaches
    /// them. Returns the program ids that stopped routing.
    pub fn release(self, replaced: &[PathBuf]) -> Vec<u32> {
        let mut released = Vec::new();
        for left in self.links {
            if !replaced.contains(&left.path) {
                match std::fs::remove_file(&left.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(pin = %left.path.display(), error = %e, "could not remove a link an earlier agent pinned; its program keeps running until the pin goes");
                        continue;
                    }
                }
            }
            released.push(left.program_id);
        }
        released
    }
}

/// A link pinned under a staging name, not yet in place.
pub struct Staged {
    staged: PathBuf,
    final_path: PathBuf,
}

/// Pins `link` as `dir/<program>_staged`. The pinned link is dropped right
/// away: only the pin holds it, so removing the pin detaches the program.
pub fn stage(link: FdLink, dir: &Path, program: &str) -> Result<Staged, DataPlaneError> {
    let err = |path: &Path, reason: String| DataPlaneError::Bpffs {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    // bpffs refuses names with a dot (EPERM: reserved for the kernel's
    // own files), so the staging name has none.
    let staged = dir.join(format!("{program}_staged"));
    let _ = std::fs::remove_file(&staged);
    link.pin(&staged).map_err(|e| {
        // aya's message names the syscall; its source says why it failed.
        let why = std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
        err(&staged, format!("cannot pin the {program} link: {e}{why}"))
    })?;
    Ok(Staged {
        staged,
        final_path: dir.join(program),
    })
}

/// Removes staged pins, detaching their links.
pub fn discard(staged: &[Staged]) {
    for s in staged {
        let _ = std::fs::remove_file(&s.staged);
    }
}

/// Moves every staged pin to its place, each replacing in one step (a
/// rename) the pin already there: the path never stops naming a link that
/// routes. Returns the paths now pinned.
pub fn commit(staged: Vec<Staged>) -> Result<Vec<PathBuf>, DataPlaneError> {
    let mut pinned = Vec::with_capacity(staged.len());
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(&s.staged, &s.final_path) {
            discard(&staged[i..]);
            return Err(DataPlaneError::Bpffs {
                path: s.final_path.clone(),
                reason: format!("cannot replace the pin: {e}"),
            });
        }
        pinned.push(s.final_path.clone());
    }
    Ok(pinned)
}

/// Removes every link pin in `dir`, and `dir` itself: each program stops
/// routing as its pin goes. Returns the program ids detached.
pub fn remove_all(dir: &Path) -> Result<Vec<u32>, DataPlaneError> {
    let left = LeftLinks::open(dir)?;
    if !left.is_empty() {
        info!(links = left.len(), dir = %dir.display(), "removing the routing links left pinned");
    }
    let released = left.release(&[]);
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(released),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(released),
        Err(e) => Err(DataPlaneError::Bpffs {
            path: dir.to_path_buf(),
            reason: format!("cannot remove the links directory: {e}"),
        }),
    }
}
