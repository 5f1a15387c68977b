//! Routing at connect(): a TCP connection to a service address (VIP:port) is
//! sent to one of the service's backends before the SYN leaves, so there is
//! no proxy and no NAT in the path. getpeername() is rewritten back to the
//! VIP so the application sees the address it dialled.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so core's Atomic*
// types offer no fetch_add; the intrinsic compiles to BPF_ATOMIC|BPF_FETCH.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::SockAddrContext,
};
use kmesh_common::{
    AF_INET, AF_INET6, BACKEND_SEARCH_STEPS, BackendKey, BackendValue, MAX_BACKENDS, RouteDecision,
    ServiceKey, ServiceValue, map_capacity, policy, read_addr_words, refused,
};

const IPPROTO_TCP: u32 = 6;
/// Return value of a cgroup/sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;
/// ... and that fails it with EPERM.
const DENY: i32 = 0;
/// Third word of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), network order.
const V4_MAPPED_WORD: u32 = 0x0000_ffffu32.to_be();

/// BPF_F_NO_PREALLOC: replaced elements are freed after an RCU grace period,
/// so a connect() reading a service while the agent rewrites it never sees
/// a recycled element.
const NO_PREALLOC: u32 = 1;

#[map(name = "KM_SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(map_capacity::SERVICES, NO_PREALLOC);

#[map(name = "KM_BACKENDS")]
static BACKENDS: HashMap<BackendKey, BackendValue> =
    HashMap::pinned(map_capacity::BACKENDS, NO_PREALLOC);

/// Shared with the probe (same name, pinned): what connect() decided.
#[map(name = "KM_SOCK_ROUTES")]
static SOCK_ROUTES: LruHashMap<u64, RouteDecision> =
    LruHashMap::pinned(map_capacity::SOCK_ROUTES, 0);

/// connect()s refused, by `refused` slot, per CPU.
#[map(name = "KM_REFUSED")]
static REFUSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(refused::SLOTS, 0);

/// What connect() does with a destination.
enum Verdict {
    /// Not a service: the connection goes where it was dialled.
    PassThrough,
    Route(RouteDecision),
    /// A service that cannot be routed now (a `refused` slot): letting the
    /// connection through to the VIP would send it nowhere.
    Refuse(u32),
}

#[cgroup_sock_addr(connect4)]
pub fn route_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands a valid bpf_sock_addr to this program.
    unsafe {
        if (*sa).protocol != IPPROTO_TCP {
            return ALLOW;
        }
        let key = ServiceKey {
            addr: [(*sa).user_ip4, 0, 0, 0],
            port: port_from_ctx((*sa).user_port),
            family: AF_INET,
        };
        match decide(&ctx, &key) {
            Verdict::Route(decision) => {
                (*sa).user_ip4 = decision.backend_addr[0];
                (*sa).user_port = port_to_ctx(decision.backend_port);
            }
            Verdict::PassThrough => forget_stale_route(&ctx, &key),
            Verdict::Refuse(slot) => return refuse(slot),
        }
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn route_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    unsafe {
        if (*sa).protocol != IPPROTO_TCP {
            return ALLOW;
        }
        let ip = read_addr_words(&raw const (*sa).user_ip6);
        // A v6 socket dialling ::ffff:a.b.c.d reaches an IPv4 service.
        let v4_mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_WORD;
        let key = if v4_mapped {
            ServiceKey {
                addr: [ip[3], 0, 0, 0],
                port: port_from_ctx((*sa).user_port),
                family: AF_INET,
            }
        } else {
            ServiceKey {
                addr: ip,
                port: port_from_ctx((*sa).user_port),
                family: AF_INET6,
            }
        };
        match decide(&ctx, &key) {
            Verdict::Route(decision) => {
                let dst = if v4_mapped {
                    [0, 0, V4_MAPPED_WORD, decision.backend_addr[0]]
                } else {
                    decision.backend_addr
                };
                write_ip6(sa, dst);
                (*sa).user_port = port_to_ctx(decision.backend_port);
            }
            Verdict::PassThrough => forget_stale_route(&ctx, &key),
            Verdict::Refuse(slot) => return refuse(slot),
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn vip_getpeername4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.sock_addr.cast());
        if let Some(route) = SOCK_ROUTES.get_ptr(cookie) {
            (*sa).user_ip4 = (*route).orig_addr[0];
            (*sa).user_port = port_to_ctx((*route).orig_port);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn vip_getpeername6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.sock_addr.cast());
        if let Some(route) = SOCK_ROUTES.get_ptr(cookie) {
            let orig = if (*route).family == AF_INET {
                [0, 0, V4_MAPPED_WORD, (*route).orig_addr[0]]
            } else {
                (*route).orig_addr
            };
            write_ip6(sa, orig);
            (*sa).user_port = port_to_ctx((*route).orig_port);
        }
    }
    ALLOW
}

fn refuse(slot: u32) -> i32 {
    if let Some(count) = REFUSED.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; per-CPU maps need no atomics.
        unsafe { *count += 1 };
    }
    DENY
}

/// Picks a backend for `key` if it is a service, and records the decision
/// under the socket's cookie for getpeername() and the probe.
#[inline(always)]
unsafe fn decide(ctx: &SockAddrContext, key: &ServiceKey) -> Verdict {
    // The agent points a service at a new generation of backends and keeps
    // the old one until its next update, so a backend missing here means
    // the service changed since it was read: read it again, once.
    for _ in 0..2 {
        let Some(svc) = SERVICES.get_ptr_mut(key) else {
            return Verdict::PassThrough;
        };
        // SAFETY: map values stay valid for the program's run (NO_PREALLOC + RCU).
        let (service_id, generation, count, total, pol) = unsafe {
            (
                (*svc).service_id,
                (*svc).generation,
                (*svc).backend_count,
                (*svc).total_weight,
                (*svc).policy,
            )
        };
        if count == 0 || count > MAX_BACKENDS {
            return Verdict::Refuse(refused::NO_BACKENDS);
        }
        let index = match pol {
            policy::ROUND_ROBIN => {
                // SAFETY: the cursor is a u64 inside a live map value; the
                // kernel's atomic add keeps concurrent connect()s from
                // sharing a turn.
                let turn = unsafe {
                    atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(
                        &raw mut (*svc).rr_cursor,
                        1,
                    )
                };
                turn.checked_rem(u64::from(count)).unwrap_or(0) as u32
            }
            policy::WEIGHTED if total > 0 => {
                match weighted_pick(service_id, generation, count, total) {
                    Some(index) => index,
                    None => continue,
                }
            }
            _ => random_below(count),
        };
        let key_of_backend = BackendKey {
            service_id,
            generation,
            index,
        };
        if let Some(backend) = unsafe { BACKENDS.get(key_of_backend) } {
            return Verdict::Route(record(ctx, key, backend, service_id, index, pol));
        }
    }
    Verdict::Refuse(refused::BACKEND_MISSING)
}

/// The decision for a connect() to `key` routed to `backend`, recorded
/// under the socket's cookie for getpeername() and the probe.
#[inline(always)]
fn record(
    ctx: &SockAddrContext,
    key: &ServiceKey,
    backend: &BackendValue,
    service_id: u32,
    index: u32,
    pol: u32,
) -> RouteDecision {
    let decision = RouteDecision {
        orig_addr: key.addr,
        backend_addr: backend.addr,
        orig_port: key.port,
        backend_port: backend.port,
        family: key.family,
        _pad0: 0,
        service_id,
        backend_index: index,
        policy: pol,
        _pad1: 0,
        connect_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // If the decision cannot be stored the connection is still routed; it
    // only loses getpeername() rewriting and its route labels.
    let _ = SOCK_ROUTES.insert(cookie, decision, 0);
    decision
}

/// Drops what an earlier connect() of this socket decided, for one that
/// dials `dest`, no service: a connect() that failed before any SYN (no
/// route, no local port) leaves its decision behind, and the socket
/// connecting again elsewhere must neither answer getpeername() with that
/// VIP nor be labelled with its service. A decision whose backend is `dest`
/// stays: it is this very connect()'s, made by the program that ran before
/// this one (an agent taking over attaches its programs beside the old
/// ones, and both run).
#[inline(always)]
fn forget_stale_route(ctx: &SockAddrContext, dest: &ServiceKey) {
    // SAFETY: the kernel hands a valid bpf_sock_addr to this program.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let Some(route) = SOCK_ROUTES.get_ptr(cookie) else {
        return;
    };
    // SAFETY: a live map value, read before it may be removed.
    let current =
        unsafe { (*route).backend_addr == dest.addr && (*route).backend_port == dest.port };
    if !current {
        let _ = SOCK_ROUTES.remove(&cookie);
    }
}

/// First backend whose cumulative weight exceeds a uniform draw below the
/// total: a binary search, so the cost is log2(backends) map lookups.
#[inline(always)]
fn weighted_pick(service_id: u32, generation: u32, count: u32, total: u32) -> Option<u32> {
    let draw = wide_random_below(total);
    let (mut lo, mut hi) = (0u32, count - 1);
    for _ in 0..BACKEND_SEARCH_STEPS {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let backend = unsafe {
            BACKENDS.get(BackendKey {
                service_id,
                generation,
                index: mid,
            })
        }?;
        if backend.cumulative_weight > draw {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// A uniform draw below `n` from 64 random bits: 32 bits modulo a total
/// near 2^32 favour the low values (at 3 * 2^30, the first 2^30 values come
/// twice as often); 64 bits leave a bias below 2^-32.
#[inline(always)]
fn wide_random_below(n: u32) -> u32 {
    // SAFETY: helpers without arguments.
    let bits =
        unsafe { (u64::from(bpf_get_prandom_u32()) << 32) | u64::from(bpf_get_prandom_u32()) };
    bits.checked_rem(u64::from(n)).unwrap_or(0) as u32
}

/// A draw below `n` for small `n` (a backend count, at most 256), where
/// the bias of 32 bits modulo `n` is below 2^-24.
#[inline(always)]
fn random_below(n: u32) -> u32 {
    // checked_rem, not `%`: a panic path would leave a call to the panic
    // handler as the program's last instruction, which the verifier rejects.
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_prandom_u32() }.checked_rem(n).unwrap_or(0)
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port_from_ctx(user_port: u32) -> u16 {
    u16::from_be(user_port as u16)
}

#[inline(always)]
fn port_to_ctx(port: u16) -> u32 {
    port.to_be() as u32
}

// The verifier wants fixed-offset 4-byte accesses to user_ip6; volatile
// keeps LLVM from merging or splitting them.
#[inline(always)]
unsafe fn write_ip6(sa: *mut bpf_sock_addr, ip: [u32; 4]) {
    unsafe {
        let p = &raw mut (*sa).user_ip6;
        core::ptr::write_volatile(&raw mut (*p)[0], ip[0]);
        core::ptr::write_volatile(&raw mut (*p)[1], ip[1]);
        core::ptr::write_volatile(&raw mut (*p)[2], ip[2]);
        core::ptr::write_volatile(&raw mut (*p)[3], ip[3]);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
