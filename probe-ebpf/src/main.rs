//! The probe: every TCP connection of the attached cgroup leaves a record at
//! establishment, periodically while it lives, and at close, with its timings,
//! bytes, RTT, retransmits, close reason, and the routing decision connect()
//! made for it (read from the map shared with orchestration).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG,
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTO_CB,
        BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, sock_ops},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, SockOpsContext},
};
use kmesh_common::{
    AF_INET, ConnEvent, ConnState, ProbeConfig, RouteDecision, close_reason, conn_flags, direction,
    event_flags, event_kind, map_capacity, read_addr_words, tcp_state,
};

/// Shared with orchestration (same name, pinned): what connect() decided.
mod tcp;

use tcp::{close_reason_of, initial_sequence_numbers, seq_after};

#[map(name = "KM_SOCK_ROUTES")]
static SOCK_ROUTES: LruHashMap<u64, RouteDecision> =
    LruHashMap::pinned(map_capacity::SOCK_ROUTES, 0);

#[map(name = "KM_CONNS")]
static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(map_capacity::CONNS, 0);

/// The agent may resize it at load time.
#[map(name = "KM_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that found the ring buffer full, per CPU: loss is counted, never silent.
#[map(name = "KM_DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KM_PROBE_CFG")]
static CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);

#[sock_ops]
pub fn observe_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(&ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx, direction::OUTBOUND),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_established(&ctx, direction::INBOUND),
        BPF_SOCK_OPS_STATE_CB => on_state_change(&ctx, ctx.arg(0), ctx.arg(1)),
        BPF_SOCK_OPS_RTT_CB => on_rtt_sample(&ctx),
        BPF_SOCK_OPS_RTO_CB => on_retransmission_timeout(&ctx),
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => on_segment_after_fin(&ctx),
        _ => {}
    }
    1
}

/// A reset arrives before the state change to CLOSE; remember it so the
/// close record can say who ended the connection.
///
/// A BTF tracepoint rather than a classic one: it is attached with bpf()
/// alone, so the agent needs neither tracefs nor perf_event_open(), which
/// container runtimes' seccomp profiles allow later than bpf(), and it takes
/// the socket itself, so no record layout differs between kernels.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn observe_receive_reset(ctx: BtfTracePointContext) {
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: the verifier types the argument as the tracepoint's socket; the
    // helper takes it as such.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    if let Some(state) = CONNS.get_ptr_mut(cookie) {
        // SAFETY: a live map value; only this flag bit is written.
        unsafe { (*state).flags |= conn_flags::RST_RECEIVED };
    }
}

fn cookie_of(ctx: &SockOpsContext) -> u64 {
    // SAFETY: sock_ops contexts carry a socket.
    unsafe { bpf_get_socket_cookie(ctx.ops.cast()) }
}

fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

fn report_interval_ns() -> u64 {
    CONFIG.get(0).map_or(0, |c| c.report_interval_ns)
}

/// Asks the kernel for the callbacks the probe needs on this socket: state
/// changes, and RTOs, the only sign that the kernel gave up on a peer
/// rather than aborted.
fn watch_socket(ctx: &SockOpsContext) {
    let mut flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG;
    if report_interval_ns() > 0 {
        flags |= BPF_SOCK_OPS_RTT_CB_FLAG;
    }
    let _ = ctx.set_cb_flags(flags as i32);
}

/// Just before the SYN: start the clock and pick up connect()'s decision.
fn on_connect(ctx: &SockOpsContext) {
    let cookie = cookie_of(ctx);
    let mut state = ConnState {
        start_ns: now_ns(),
        direction: direction::OUTBOUND,
        last_state: tcp_state::SYN_SENT as u8,
        ..ConnState::default()
    };
    if let Some(route) = SOCK_ROUTES.get_ptr(cookie) {
        // SAFETY: a live map value, copied out.
        state.route = unsafe { *route };
        state.start_ns = state.route.connect_ns;
        state.flags |= conn_flags::ROUTED;
    }
    if CONNS.insert(cookie, state, 0).is_ok() {
        watch_socket(ctx);
    }
}

fn on_established(ctx: &SockOpsContext, dir: u8) {
    let cookie = cookie_of(ctx);
    let now = now_ns();
    let state = match CONNS.get_ptr_mut(cookie) {
        Some(state) => state,
        None => {
            // Inbound, or an outbound socket that connected before the probe
            // was attached: start tracking now.
            let state = ConnState {
                start_ns: now,
                direction: dir,
                ..ConnState::default()
            };
            if CONNS.insert(cookie, state, 0).is_err() {
                return;
            }
            watch_socket(ctx);
            match CONNS.get_ptr_mut(cookie) {
                Some(state) => state,
                None => return,
            }
        }
    };
    let (local_isn, remote_isn) = initial_sequence_numbers(ctx, dir);
    // SAFETY: a live map value of this socket; ctx field reads.
    unsafe {
        (*state).base_acked = (*ctx.ops).bytes_acked;
        (*state).base_received = (*ctx.ops).bytes_received;
        (*state).local_isn = local_isn;
        (*state).remote_isn = remote_isn;
        (*state).established_ns = now;
        (*state).last_report_ns = now;
        (*state).last_state = tcp_state::ESTABLISHED as u8;
        (*state).flags |= conn_flags::ESTABLISHED;
        emit(
            ctx,
            cookie,
            &*state,
            event_kind::ESTABLISHED,
            close_reason::NONE,
            now,
        );
    }
}

fn on_state_change(ctx: &SockOpsContext, old: u32, new: u32) {
    let cookie = cookie_of(ctx);
    let Some(state) = CONNS.get_ptr_mut(cookie) else {
        return;
    };
    // SAFETY: a live map value of this socket.
    let state = unsafe { &mut *state };
    if state.flags & conn_flags::CLOSING == 0
        && matches!(
            new,
            tcp_state::FIN_WAIT1 | tcp_state::CLOSE_WAIT | tcp_state::CLOSE
        )
    {
        freeze_rtt(ctx, state);
    }
    match new {
        // Only the peer's FIN moves a socket here.
        tcp_state::CLOSE_WAIT | tcp_state::CLOSING => state.flags |= conn_flags::FIN_RECEIVED,
        // Only the ACK of our FIN does.
        tcp_state::FIN_WAIT2 => state.flags |= conn_flags::FIN_ACKED,
        // From here on the state changes no longer tell which FINs crossed
        // (FIN_WAIT2 -> CLOSE is the same whether the peer's FIN arrived or
        // an orphan's wait was cut short), so the probe reads the segments
        // themselves: a few per connection, during its close only.
        tcp_state::FIN_WAIT1 => {
            let _ =
                ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG) as i32);
        }
        _ => {}
    }
    if new != tcp_state::CLOSE {
        state.last_state = new as u8;
        return;
    }
    // SAFETY: a full socket's sock_ops fields.
    let (rcv_nxt, snd_una, snd_nxt) =
        unsafe { ((*ctx.ops).rcv_nxt, (*ctx.ops).snd_una, (*ctx.ops).snd_nxt) };
    // A connect that never completed: `snd_una` is still its SYN's
    // sequence number (tcp_connect_init set it; nothing acknowledged it).
    if state.flags & conn_flags::ESTABLISHED == 0 && state.direction == direction::OUTBOUND {
        state.local_isn = snd_una;
    }
    if state.flags & conn_flags::PEER_FIN_SEEN != 0 && rcv_nxt == state.peer_fin_end {
        state.flags |= conn_flags::FIN_RECEIVED;
    }
    // LAST_ACK and CLOSING end on the ACK of our FIN, or on a reset or a
    // timeout, when the FIN is still outstanding.
    if matches!(old, tcp_state::LAST_ACK | tcp_state::CLOSING)
        && state.flags & (conn_flags::RST_RECEIVED | conn_flags::TIMED_OUT) == 0
        && snd_una == snd_nxt
    {
        state.flags |= conn_flags::FIN_ACKED;
    }
    // Payload after our FIN, to a socket that has stopped reading, makes
    // the kernel reset the connection: tcp_reset() runs (the reset tracepoint
    // fires) and the segment is never taken (rcv_nxt stays short of it).
    let aborted_on_data = state.flags & conn_flags::LATE_DATA != 0
        && matches!(old, tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2)
        && seq_after(state.late_data_end, rcv_nxt);
    let reason = close_reason_of(state.flags, old, aborted_on_data);
    emit(ctx, cookie, state, event_kind::CLOSED, reason, now_ns());
    let _ = CONNS.remove(cookie);
    let _ = SOCK_ROUTES.remove(cookie);
}

/// Keeps the RTT the connection had while it carried data: once the close
/// handshake begins, samples time FINs and their (often delayed) ACKs.
fn freeze_rtt(ctx: &SockOpsContext, state: &mut ConnState) {
    // SAFETY: sock_ops field reads.
    unsafe {
        state.closing_srtt_us = (*ctx.ops).srtt_us >> 3;
        state.closing_min_rtt_us = (*ctx.ops).rtt_min;
    }
    state.flags |= conn_flags::CLOSING;
}

/// The kernel's retransmission timer fired; its third argument says the
/// connection has run out of retries (or `TCP_USER_TIMEOUT`) and is about
/// to be closed with ETIMEDOUT, no reset sent.
fn on_retransmission_timeout(ctx: &SockOpsContext) {
    if ctx.arg(2) == 0 {
        return;
    }
    if let Some(state) = CONNS.get_ptr_mut(cookie_of(ctx)) {
        // SAFETY: a live map value; only this flag bit is written.
        unsafe { (*state).flags |= conn_flags::TIMED_OUT };
    }
}

/// A segment that passed the kernel's checks, on a socket that has sent its
/// FIN (see `on_state_change`): notes the peer's FIN and late payload.
fn on_segment_after_fin(ctx: &SockOpsContext) {
    let Some(state) = CONNS.get_ptr_mut(cookie_of(ctx)) else {
        return;
    };
    let ops = ctx.ops;
    // SAFETY: in this callback skb_data..skb_data_end is the segment's TCP
    // header, which the bounds check below keeps every read inside.
    unsafe {
        let data = (*ops).__bindgen_anon_3.skb_data as usize;
        let end = (*ops).__bindgen_anon_4.skb_data_end as usize;
        if data + 20 > end {
            return;
        }
        let seq = u32::from_be(core::ptr::read_unaligned((data + 4) as *const u32));
        let header_len = u32::from(*((data + 12) as *const u8) >> 4) * 4;
        let payload = (*ops).skb_len.saturating_sub(header_len);
        let end_seq = seq.wrapping_add(payload);
        if payload > 0 {
            (*state).late_data_end = end_seq;
            (*state).flags |= conn_flags::LATE_DATA;
        }
        if (*ops).skb_tcp_flags & TCP_FLAG_FIN != 0 {
            (*state).peer_fin_end = end_seq.wrapping_add(1);
            (*state).flags |= conn_flags::PEER_FIN_SEEN;
        }
    }
}

const TCP_FLAG_FIN: u32 = 0x01;

/// Every RTT sample of a watched socket: report a long-lived connection's
/// totals once per interval, until its own FIN is out. The ACK of that FIN
/// is an RTT sample too, taken before the state change that tells the FIN
/// apart from data: a report then would count it as a byte sent. The close
/// record carries the final totals.
fn on_rtt_sample(ctx: &SockOpsContext) {
    let interval = report_interval_ns();
    if interval == 0 {
        return;
    }
    let cookie = cookie_of(ctx);
    let Some(state) = CONNS.get_ptr_mut(cookie) else {
        return;
    };
    let now = now_ns();
    // SAFETY: a live map value of this socket.
    unsafe {
        let fin_out = matches!(
            u32::from((*state).last_state),
            tcp_state::FIN_WAIT1 | tcp_state::CLOSING | tcp_state::LAST_ACK
        );
        if (*state).flags & conn_flags::ESTABLISHED == 0
            || fin_out
            || now - (*state).last_report_ns < interval
        {
            return;
        }
        (*state).last_report_ns = now;
        emit(
            ctx,
            cookie,
            &*state,
            event_kind::PERIODIC,
            close_reason::NONE,
            now,
        );
    }
}

#[inline(always)]
fn emit(ctx: &SockOpsContext, cookie: u64, state: &ConnState, kind: u8, reason: u8, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        if let Some(drops) = DROPS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; per-CPU maps need no atomics.
            unsafe { *drops += 1 };
        }
        return;
    };
    let ops = ctx.ops;
    let ev = entry.as_mut_ptr();
    // Fields are written straight into the reserved record: a ConnEvent
    // built on the stack would push the program past the 512-byte stack.
    // SAFETY: `ev` points at a reserved record of ConnEvent's size; the
    // sock_ops reads become reads of the socket (zero where it is not a
    // full one).
    unsafe {
        let family = (*ops).family as u16;
        (*ev).kind = kind;
        (*ev).direction = state.direction;
        (*ev).close_reason = reason;
        let routed = if state.flags & conn_flags::ROUTED != 0 {
            event_flags::ROUTED
        } else {
            0
        };
        let isns = if state.flags & conn_flags::ESTABLISHED != 0 {
            event_flags::ISNS
        } else {
            0
        };
        (*ev).flags = routed | isns;
        (*ev).family = family;
        (*ev).local_port = (*ops).local_port as u16;
        (*ev).remote_port = remote_port((*ops).remote_port);
        (*ev)._pad0 = 0;
        // Both ctx fields are read whichever is used: the verifier refuses
        // a load through a pointer LLVM picked between ctx and map memory.
        let live_srtt = core::ptr::read_volatile(&raw const (*ops).srtt_us) >> 3;
        let live_min_rtt = core::ptr::read_volatile(&raw const (*ops).rtt_min);
        let frozen = state.flags & conn_flags::CLOSING != 0;
        (*ev).srtt_us = if frozen {
            state.closing_srtt_us
        } else {
            live_srtt
        };
        (*ev).min_rtt_us = if frozen {
            state.closing_min_rtt_us
        } else {
            live_min_rtt
        };
        if family == AF_INET {
            (*ev).local_addr = [(*ops).local_ip4, 0, 0, 0];
            (*ev).remote_addr = [(*ops).remote_ip4, 0, 0, 0];
        } else {
            (*ev).local_addr = read_addr_words(&raw const (*ops).local_ip6);
            (*ev).remote_addr = read_addr_words(&raw const (*ops).remote_ip6);
        }
        (*ev).cookie = cookie;
        (*ev).netns_cookie = bpf_get_netns_cookie(ops.cast());
        (*ev).ts_ns = now;
        (*ev).start_ns = state.start_ns;
        (*ev).connect_latency_ns =
            if state.direction == direction::OUTBOUND && state.established_ns != 0 {
                state.established_ns - state.start_ns
            } else {
                0
            };
        let fin_acked = u64::from(state.flags & conn_flags::FIN_ACKED != 0);
        let fin_received = u64::from(state.flags & conn_flags::FIN_RECEIVED != 0);
        (*ev).bytes_sent = (*ops)
            .bytes_acked
            .saturating_sub(state.base_acked + fin_acked);
        (*ev).bytes_received = (*ops)
            .bytes_received
            .saturating_sub(state.base_received + fin_received);
        (*ev).total_retrans = (*ops).total_retrans;
        (*ev).segs_in = (*ops).segs_in;
        (*ev).segs_out = (*ops).segs_out;
        (*ev).local_isn = state.local_isn;
        (*ev).remote_isn = state.remote_isn;
        core::ptr::copy_nonoverlapping(&raw const state.route, &raw mut (*ev).route, 1);
    }
    entry.submit(wakeup_flag());
}

/// Batched wake-ups: see `ProbeConfig::wakeup_bytes`.
#[inline(always)]
fn wakeup_flag() -> u64 {
    let threshold = CONFIG.get(0).map_or(0, |c| c.wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    // The record being submitted is counted as well: it is already reserved.
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(threshold) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// sock_ops keeps the remote port in network order; on little-endian
/// kernels it sits in the upper 16 bits (the kernel shifts it there).
#[inline(always)]
fn remote_port(raw: u32) -> u16 {
    #[cfg(target_endian = "little")]
    let port = (raw >> 16) as u16;
    #[cfg(target_endian = "big")]
    let port = raw as u16;
    u16::from_be(port)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
