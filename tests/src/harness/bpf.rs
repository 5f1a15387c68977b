//! What the kernel has attached to a cgroup, asked directly (BPF_PROG_QUERY).
use std::path::Path;

/// Programs attached to `cgroup` for a cgroup attach type, by BPF_PROG_QUERY.
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> u32 {
    attached_program_ids(cgroup, attach_type).len() as u32
}

/// Ids of the programs attached to `cgroup` for a cgroup attach type, in
/// the order they run.
pub fn attached_program_ids(cgroup: &Path, attach_type: u32) -> Vec<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: [[u32; 5]; 5],
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    const MAX_PROGRAMS: usize = 64;
    let dir = std::fs::File::open(cgroup).expect("opening the cgroup");
    let mut ids = [0u32; MAX_PROGRAMS];
    let mut attr = QueryAttr {
        target_fd: std::os::fd::AsRawFd::as_raw_fd(&dir) as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_PROGRAMS as u32,
        ..Default::default()
    };
    // SAFETY: attr is a zeroed bpf_attr prefix large enough for PROG_QUERY;
    // prog_ids points at MAX_PROGRAMS u32s that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            size_of::<QueryAttr>() as u32,
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
    ids[..attr.prog_cnt as usize].to_vec()
}

/// Kernel attach types of the programs the agent attaches to its cgroup
/// (enum bpf_attach_type): sock_ops, connect4/6, getpeername4/6.
pub const AGENT_ATTACH_TYPES: [(u32, &str); 5] = [
    (3, "sock_ops"),
    (10, "connect4"),
    (11, "connect6"),
    (29, "getpeername4"),
    (30, "getpeername6"),
];
