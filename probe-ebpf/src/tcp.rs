//! What the probe works out of TCP itself: both ends' initial sequence
//! numbers, sequence-space order, and why a connection closed.
use aya_ebpf::programs::SockOpsContext;
use kmesh_common::{close_reason, conn_flags, direction, tcp_state};

/// Both ends' initial sequence numbers, at establishment, from what the
/// kernel has counted since (net/ipv4/tcp_input.c, tcp_minisocks.c,
/// tcp_fastopen.c, kernel 6.x):
///
/// - Active side (ACTIVE_ESTABLISHED, in `tcp_finish_connect` after the
///   SYN-ACK was processed): `snd_una` started at the ISN and `bytes_acked`
///   counts every sequence number acknowledged since, the SYN included and
///   Fast Open data the SYN-ACK acknowledged: local ISN = `snd_una -
///   bytes_acked`. `rcv_nxt` was set to the SYN-ACK's sequence + 1 without
///   counting it in `bytes_received` (0 here): remote ISN = `rcv_nxt - 1 -
///   bytes_received`.
/// - Passive side (PASSIVE_ESTABLISHED, on the handshake's last ACK, or at
///   the SYN of an accepted Fast Open, before its data is queued): the
///   child socket starts with `snd_una` = ISN + 1 and `rcv_nxt` = peer ISN
///   + 1, with both counters at 0; data riding on the last ACK is taken
///   after this callback. Local ISN = `snd_una - 1 - bytes_acked`, remote
///   ISN = `rcv_nxt - 1 - bytes_received`.
///
/// A SYN cookie is the server's ISN like any other, so cookies change
/// nothing. Sequence arithmetic wraps, hence the 32-bit truncations.
pub fn initial_sequence_numbers(ctx: &SockOpsContext, dir: u8) -> (u32, u32) {
    // SAFETY: sock_ops field reads of a full socket (an established one).
    let (snd_una, rcv_nxt, acked, received) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx.ops).snd_una),
            core::ptr::read_volatile(&raw const (*ctx.ops).rcv_nxt),
            core::ptr::read_volatile(&raw const (*ctx.ops).bytes_acked) as u32,
            core::ptr::read_volatile(&raw const (*ctx.ops).bytes_received) as u32,
        )
    };
    // The passive side's SYN is not in `bytes_acked`; the active side's is.
    let syn = u32::from(dir == direction::INBOUND);
    (
        snd_una.wrapping_sub(acked).wrapping_sub(syn),
        rcv_nxt.wrapping_sub(1).wrapping_sub(received),
    )
}

/// `a` comes after `b` in sequence space (RFC 1982 arithmetic, as the
/// kernel's `after()`).
#[inline(always)]
pub fn seq_after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// Why a connection reached CLOSE, from where it came from and what the
/// callbacks and tracepoints saw on the way.
pub fn close_reason_of(flags: u16, old_state: u32, aborted_on_data: bool) -> u8 {
    let reset = flags & conn_flags::RST_RECEIVED != 0;
    if flags & conn_flags::ESTABLISHED == 0 {
        return if reset {
            close_reason::CONNECT_REFUSED
        } else {
            close_reason::CONNECT_FAILED
        };
    }
    if flags & conn_flags::TIMED_OUT != 0 {
        return close_reason::TIMEOUT;
    }
    if aborted_on_data {
        return close_reason::RST_SENT;
    }
    if reset {
        return close_reason::RST_RECEIVED;
    }
    match old_state {
        // Straight to CLOSE from a data state, or before our FIN was
        // acknowledged, with no reset received and no timeout: this side
        // sent a reset (close with unread data, SO_LINGER 0, keepalive).
        tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT | tcp_state::FIN_WAIT1 => {
            close_reason::RST_SENT
        }
        _ => close_reason::FIN,
    }
}
