//! The contract between the kernel programs and the agent: map names, keys,
//! values and ring-buffer records. Every type is `#[repr(C)]`, padded by hand
//! so no byte is left uninitialised, and laid out the same on both sides.
//!
//! Addresses are `[u32; 4]` in network byte order, as `bpf_sock_addr` and
//! `bpf_sock_ops` hand them over: an IPv4 address sits in word 0 with the
//! other words zero. Ports are stored in host byte order unless a field says
//! otherwise.
#![cfg_attr(not(test), no_std)]

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Backends one service can have; the weighted pick is a binary search over
/// them, so the verifier sees a loop of `log2(MAX_BACKENDS) + 1` steps.
pub const MAX_BACKENDS: u32 = 256;
pub const BACKEND_SEARCH_STEPS: u32 = 9;

/// Names of the maps, at most 15 characters (the kernel's limit). Maps the
/// two objects share are pinned under the agent's bpffs directory by these
/// names.
pub mod map_names {
    pub const SERVICES: &str = "KM_SERVICES";
    pub const BACKENDS: &str = "KM_BACKENDS";
    pub const SOCK_ROUTES: &str = "KM_SOCK_ROUTES";
    pub const CONNS: &str = "KM_CONNS";
    pub const EVENTS: &str = "KM_EVENTS";
    pub const DROPS: &str = "KM_DROPS";
    pub const PROBE_CONFIG: &str = "KM_PROBE_CFG";
    pub const REFUSED_CONNECTS: &str = "KM_REFUSED";
}

/// Slots of the refused-connects counter (a per-CPU array): connect()s to a
/// service VIP that orchestration refused (EPERM) rather than let through
/// to an address nothing serves.
pub mod refused {
    /// The service has no backends.
    pub const NO_BACKENDS: u32 = 0;
    /// The backend picked was not in the map, even after reading the
    /// service again: the agent replaced its backends twice within one
    /// connect().
    pub const BACKEND_MISSING: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// Capacities (max_entries) of the hash maps, shared so the agent can report
/// how full they are.
pub mod map_capacity {
    pub const SERVICES: u32 = 16384;
    /// Every service's backends, twice over while a new generation replaces
    /// the old one.
    pub const BACKENDS: u32 = 65536;
    pub const SOCK_ROUTES: u32 = 65536;
    pub const CONNS: u32 = 65536;
}

/// Load-balancing policies, as stored in [`ServiceValue::policy`].
pub mod policy {
    pub const RANDOM: u32 = 0;
    pub const ROUND_ROBIN: u32 = 1;
    pub const WEIGHTED: u32 = 2;
}

/// Key of the services map: the address a client dials.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u16,
}

/// Value of the services map. The backends of a service live in the
/// backends map under `(service_id, generation)`; the agent writes a new
/// generation in full before it points the service at it, so a connect()
/// never sees a half-written backend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    pub service_id: u32,
    pub generation: u32,
    pub backend_count: u32,
    /// Sum of the weights; the last backend's `cumulative_weight`.
    pub total_weight: u32,
    pub policy: u32,
    pub _pad0: u32,
    /// Round-robin cursor, advanced atomically by connect(). 64 bits because
    /// the BPF target has no 32-bit atomics.
    pub rr_cursor: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BackendKey {
    pub service_id: u32,
    pub generation: u32,
    pub index: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendValue {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u16,
    /// Weight of this backend plus all before it; a weighted pick draws
    /// `r < total_weight` and takes the first backend whose sum exceeds it.
    pub cumulative_weight: u32,
}

/// What connect() decided for one socket, keyed by socket cookie in the
/// shared sock-routes map; the probe copies it into every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouteDecision {
    /// The service address the application dialled.
    pub orig_addr: [u32; 4],
    /// The backend connect() was sent to.
    pub backend_addr: [u32; 4],
    pub orig_port: u16,
    pub backend_port: u16,
    pub family: u16,
    pub _pad0: u16,
    pub service_id: u32,
    pub backend_index: u32,
    pub policy: u32,
    pub _pad1: u32,
    /// `bpf_ktime_get_ns()` when connect() was called.
    pub connect_ns: u64,
    /// cgroup v2 id of the task that called connect(): the source workload.
    pub cgroup_id: u64,
}

/// Record kinds in [`ConnEvent::kind`].
pub mod event_kind {
    pub const ESTABLISHED: u8 = 1;
    pub const CLOSED: u8 = 2;
    /// A long-lived connection's running totals.
    pub const PERIODIC: u8 = 3;
}

pub mod direction {
    /// This side called connect().
    pub const OUTBOUND: u8 = 1;
    /// This side accepted.
    pub const INBOUND: u8 = 2;
}

pub mod close_reason {
    pub const NONE: u8 = 0;
    /// Orderly shutdown: FINs exchanged.
    pub const FIN: u8 = 1;
    /// This side aborted the connection (close with unread data, SO_LINGER 0).
    pub const RST_SENT: u8 = 2;
    /// The peer aborted the connection.
    pub const RST_RECEIVED: u8 = 3;
    /// connect() was answered with a reset: nothing listens there.
    pub const CONNECT_REFUSED: u8 = 4;
    /// connect() never completed: timeout, unreachable, or closed while in SYN-SENT.
    pub const CONNECT_FAILED: u8 = 5;
    /// The peer stopped answering: retransmissions, or `TCP_USER_TIMEOUT`,
    /// gave up. No reset was sent or received.
    pub const TIMEOUT: u8 = 6;
}

pub mod event_flags {
    /// The connection was routed by connect(): `route` is filled in.
    pub const ROUTED: u8 = 1;
    /// The connection was established: `local_isn` and `remote_isn` are
    /// both the handshake's initial sequence numbers.
    pub const ISNS: u8 = 1 << 1;
}

/// One ring-buffer record. Byte and segment counts are totals since the
/// connection began, so a lost record loses no bytes: the next one carries them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnEvent {
    pub kind: u8,
    pub direction: u8,
    pub close_reason: u8,
    pub flags: u8,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad0: u16,
    pub srtt_us: u32,
    pub local_addr: [u32; 4],
    pub remote_addr: [u32; 4],
    pub cookie: u64,
    /// The socket's network namespace: loopback addresses are only unique
    /// within one, so the agent pairs the two ends of a loopback connection
    /// by it.
    pub netns_cookie: u64,
    /// `bpf_ktime_get_ns()` when the record was written.
    pub ts_ns: u64,
    /// connect() (outbound) or accept (inbound) time.
    pub start_ns: u64,
    /// connect() to established; 0 for inbound or not (yet) established.
    pub connect_latency_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub min_rtt_us: u32,
    pub total_retrans: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    /// Initial sequence numbers of this side and of the peer, read at
    /// establishment (`event_flags::ISNS`): the client's local ISN is the
    /// server's remote ISN and the other way round, so both ends of a
    /// connection share them. A connect that failed carries its own SYN's
    /// sequence number as `local_isn` (0 if no SYN was built) and 0 as
    /// `remote_isn`, without the flag.
    pub local_isn: u32,
    pub remote_isn: u32,
    pub route: RouteDecision,
}

/// Per-socket state the probe keeps between callbacks (probe-private map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnState {
    pub start_ns: u64,
    pub established_ns: u64,
    pub last_report_ns: u64,
    /// The kernel's byte counters at establishment: `bytes_acked` already
    /// counts the SYN there, which is not payload.
    pub base_acked: u64,
    pub base_received: u64,
    /// Smoothed and minimum RTT (µs) when the close handshake began
    /// (`conn_flags::CLOSING`): later samples time FINs and their often
    /// delayed ACKs, not the data.
    pub closing_srtt_us: u32,
    pub closing_min_rtt_us: u32,
    /// Sequence number just past the peer's FIN, once a segment carrying it
    /// was seen (`conn_flags::PEER_FIN_SEEN`).
    pub peer_fin_end: u32,
    /// Sequence number just past the newest payload that arrived after this
    /// side sent its FIN (`conn_flags::LATE_DATA`).
    pub late_data_end: u32,
    /// Initial sequence numbers of this side and of the peer, set at
    /// establishment (see `ConnEvent::local_isn`).
    pub local_isn: u32,
    pub remote_isn: u32,
    /// `conn_flags` bits.
    pub flags: u16,
    pub direction: u8,
    pub last_state: u8,
    pub _pad0: u32,
    pub route: RouteDecision,
}

pub mod conn_flags {
    pub const ROUTED: u16 = 1;
    pub const RST_RECEIVED: u16 = 1 << 1;
    pub const ESTABLISHED: u16 = 1 << 2;
    /// Our FIN was acknowledged: `bytes_acked` counts it, payload does not.
    pub const FIN_ACKED: u16 = 1 << 3;
    /// The peer's FIN arrived: `bytes_received` counts it.
    pub const FIN_RECEIVED: u16 = 1 << 4;
    /// The kernel gave up retransmitting (an RTO callback said "expired").
    pub const TIMED_OUT: u16 = 1 << 5;
    /// A segment carrying the peer's FIN was seen; whether it was taken in
    /// order shows in `rcv_nxt` at close.
    pub const PEER_FIN_SEEN: u16 = 1 << 6;
    /// Payload arrived after this side sent its FIN.
    pub const LATE_DATA: u16 = 1 << 7;
    /// The close handshake began; the RTT figures are frozen.
    pub const CLOSING: u16 = 1 << 8;
}

/// Runtime switches the agent writes into index 0 of the probe-config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeConfig {
    /// Report a long-lived connection's totals at most this often; 0 = never.
    pub report_interval_ns: u64,
    /// Wake the agent's reader only once this many bytes wait in the ring
    /// buffer; below it records wait for the reader's next timed drain.
    /// Each wake-up is an interrupt (an exit on a virtual machine), so
    /// waking per record costs more than the probe's own work. 0: wake on
    /// every record (the kernel's default), as before the agent configures it.
    pub wakeup_bytes: u32,
    pub _pad0: u32,
}

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
}

/// Reads a 4-word address from a program context one volatile u32 at a
/// time. The verifier accepts only fixed-offset, word-sized reads of context
/// fields like `user_ip6` and `local_ip6`; volatile keeps LLVM from merging
/// or re-basing them.
///
/// # Safety
/// `p` must point at a readable `[u32; 4]`.
#[inline(always)]
pub unsafe fn read_addr_words(p: *const [u32; 4]) -> [u32; 4] {
    unsafe {
        [
            core::ptr::read_volatile(&raw const (*p)[0]),
            core::ptr::read_volatile(&raw const (*p)[1]),
            core::ptr::read_volatile(&raw const (*p)[2]),
            core::ptr::read_volatile(&raw const (*p)[3]),
        ]
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], made of integers, with explicit
    // padding, so every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendKey {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for RouteDecision {}
    unsafe impl aya::Pod for ConnEvent {}
    unsafe impl aya::Pod for ConnState {}
    unsafe impl aya::Pod for ProbeConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // Implicit padding would leave bytes the verifier calls uninitialised
    // when a program copies the struct into a map; these sizes prove there is
    // none (each equals the sum of its fields).
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<ServiceValue>(), 32);
        assert_eq!(size_of::<BackendKey>(), 12);
        assert_eq!(size_of::<BackendValue>(), 24);
        assert_eq!(size_of::<RouteDecision>(), 72);
        assert_eq!(size_of::<ConnState>(), 72 + 72);
        assert_eq!(size_of::<ConnEvent>(), 16 + 32 + 56 + 16 + 8 + 72);
    }

    // The agent reads the ISNs at these offsets; the probe writes them.
    #[test]
    fn the_isns_sit_before_the_route() {
        assert_eq!(core::mem::offset_of!(ConnEvent, local_isn), 120);
        assert_eq!(core::mem::offset_of!(ConnEvent, remote_isn), 124);
        assert_eq!(core::mem::offset_of!(ConnEvent, route), 128);
        assert_eq!(core::mem::offset_of!(ConnState, local_isn), 56);
        assert_eq!(core::mem::offset_of!(ConnState, route), 72);
    }
}
