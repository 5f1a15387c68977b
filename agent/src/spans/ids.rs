//! Trace and span ids that both ends of a TCP connection derive alike, from
//! what both ends' kernels know without telling each other: the two initial
//! sequence numbers and the server's address. The agent on the client's node
//! and the one on the server's node thus emit the CLIENT span and its SERVER
//! child in one trace, with no packet touched and no agent-to-agent talk.
//!
//! The construction is a contract between agents of every version on every
//! node (docs/metrics.md, "Trace and span ids"); changing one byte of it
//! splits the traces of a mixed fleet. It is:
//!
//! ```text
//! input  = "kmesh-rs/tcp-id1"               16 ASCII bytes (domain tag, version 1)
//!        || client ISN                        4 bytes, big-endian
//!        || server ISN                        4 bytes, big-endian
//!        || server IP                        16 bytes: IPv6, or IPv4 mapped (::ffff:a.b.c.d)
//!        || server port                       2 bytes, big-endian
//! digest = SHA-256(input)                     32 bytes
//! trace id         = digest[0..16]
//! CLIENT span id   = digest[16..24]
//! SERVER span id   = digest[24..32]           (its parent: the CLIENT span id)
//! ```
//!
//! An all-zero id (invalid in OpenTelemetry; odds 2^-64 and 2^-128) has its
//! last byte set to 1. The client's address is left out so a source NAT
//! between the nodes (which rewrites it) does not split the trace.
use std::net::{IpAddr, SocketAddr};

use kmesh_common::{ConnEvent, direction, event_flags};
use opentelemetry::trace::{SpanId, TraceId};
use sha2::{Digest, Sha256};

use crate::addr::socket_addr;

const TAG: &[u8; 16] = b"kmesh-rs/tcp-id1";

/// The ids of one connection's trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionIds {
    pub trace_id: TraceId,
    pub client_span: SpanId,
    pub server_span: SpanId,
}

/// What identifies a connection on both nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub client_isn: u32,
    pub server_isn: u32,
    pub server: SocketAddr,
}

impl ConnectionKey {
    /// The key of an established connection's record, from either end;
    /// `None` when the record carries no ISNs (a connect that failed).
    pub fn of(ev: &ConnEvent) -> Option<Self> {
        if ev.flags & event_flags::ISNS == 0 {
            return None;
        }
        let local = socket_addr(ev.local_addr, ev.family, ev.local_port);
        let remote = socket_addr(ev.remote_addr, ev.family, ev.remote_port);
        Some(if ev.direction == direction::INBOUND {
            Self {
                client_isn: ev.remote_isn,
                server_isn: ev.local_isn,
                server: local,
            }
        } else {
            Self {
                client_isn: ev.local_isn,
                server_isn: ev.remote_isn,
                server: remote,
            }
        })
    }

    pub fn ids(&self) -> ConnectionIds {
        let ip = match self.server.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut h = Sha256::new();
        h.update(TAG);
        h.update(self.client_isn.to_be_bytes());
        h.update(self.server_isn.to_be_bytes());
        h.update(ip);
        h.update(self.server.port().to_be_bytes());
        let d: [u8; 32] = h.finalize().into();
        ConnectionIds {
            trace_id: TraceId::from_bytes(non_zero(d[..16].try_into().expect("16 bytes"))),
            client_span: SpanId::from_bytes(non_zero(d[16..24].try_into().expect("8 bytes"))),
            server_span: SpanId::from_bytes(non_zero(d[24..].try_into().expect("8 bytes"))),
        }
    }
}

fn non_zero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::Record;

    fn key(client_isn: u32, server_isn: u32, server: &str) -> ConnectionKey {
        ConnectionKey {
            client_isn,
            server_isn,
            server: server.parse().unwrap(),
        }
    }

    /// The contract: these bytes give these ids on every node, in every
    /// agent version. A change here splits the traces of a mixed fleet.
    /// The vector was computed apart from this code, with Python:
    /// `hashlib.sha256(b"kmesh-rs/tcp-id1" + struct.pack(">II", 0x01020304,
    /// 0xa0b0c0d0) + IPv6Address("::ffff:10.1.2.3").packed +
    /// struct.pack(">H", 8080)).hexdigest()`.
    #[test]
    fn a_fixed_key_gives_fixed_ids() {
        let ids = key(0x0102_0304, 0xa0b0_c0d0, "10.1.2.3:8080").ids();
        assert_eq!(
            ids.trace_id.to_string(),
            "af3ca8dd57222e675f70aea64b027689",
            "{ids:?}"
        );
        assert_eq!(ids.client_span.to_string(), "e2a26e607799a59c", "{ids:?}");
        assert_eq!(ids.server_span.to_string(), "04280a9a3bc2bf88", "{ids:?}");
    }

    #[test]
    fn every_part_of_the_key_changes_the_ids() {
        let base = key(1, 2, "10.1.2.3:8080").ids();
        for other in [
            key(2, 2, "10.1.2.3:8080"),
            key(1, 3, "10.1.2.3:8080"),
            key(2, 1, "10.1.2.3:8080"),
            key(1, 2, "10.1.2.4:8080"),
            key(1, 2, "10.1.2.3:8081"),
        ] {
            let ids = other.ids();
            assert_ne!(ids.trace_id, base.trace_id, "{other:?}");
            assert_ne!(ids.client_span, base.client_span, "{other:?}");
            assert_ne!(ids.server_span, base.server_span, "{other:?}");
        }
        assert_ne!(base.client_span, base.server_span);
    }

    /// A dual-stack server socket sees its IPv4 address as ::ffff:a.b.c.d.
    #[test]
    fn an_ipv4_server_and_its_mapped_form_give_the_same_ids() {
        assert_eq!(
            key(7, 9, "10.1.2.3:80").ids(),
            key(7, 9, "[::ffff:10.1.2.3]:80").ids()
        );
    }

    fn event(dir: u8, local: &str, remote: &str, isns: (u32, u32)) -> ConnEvent {
        Record::bare()
            .sockets(dir, local, remote)
            .isns(isns.0, isns.1)
            .build()
    }

    #[test]
    fn both_ends_derive_one_key_and_a_failed_connect_none() {
        let client = event(
            direction::OUTBOUND,
            "10.0.0.1:40000",
            "10.0.0.2:80",
            (11, 22),
        );
        let server = event(
            direction::INBOUND,
            "10.0.0.2:80",
            "10.0.0.1:40000",
            (22, 11),
        );
        // The client's address differs on the server's side behind a source NAT.
        let natted = event(
            direction::INBOUND,
            "10.0.0.2:80",
            "192.0.2.7:1234",
            (22, 11),
        );
        let k = ConnectionKey::of(&client).unwrap();
        assert_eq!(k, key(11, 22, "10.0.0.2:80"));
        assert_eq!(ConnectionKey::of(&server), Some(k));
        assert_eq!(ConnectionKey::of(&natted), Some(k));
        let failed = ConnEvent { flags: 0, ..client };
        assert_eq!(ConnectionKey::of(&failed), None);
    }
}
