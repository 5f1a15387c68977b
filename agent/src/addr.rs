//! Addresses as the kernel maps hold them: four u32 words in network byte
//! order, IPv4 in word 0.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kmesh_common::{AF_INET, AF_INET6};

pub fn ip_to_words(ip: IpAddr) -> ([u32; 4], u16) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], AF_INET),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([word(0), word(4), word(8), word(12)], AF_INET6)
        }
    }
}

pub fn words_to_ip(words: [u32; 4], family: u16) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let v6 = Ipv6Addr::from(o);
        // A v6 socket talking to an IPv4 peer reports ::ffff:a.b.c.d.
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

pub fn socket_addr(words: [u32; 4], family: u16, port: u16) -> SocketAddr {
    SocketAddr::new(words_to_ip(words, family), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for s in ["10.96.0.10", "127.0.0.1", "fd00::10", "::1"] {
            let ip: IpAddr = s.parse().unwrap();
            let (w, f) = ip_to_words(ip);
            assert_eq!(words_to_ip(w, f), ip);
        }
    }

    #[test]
    fn v4_words_are_network_order_in_memory() {
        let (w, f) = ip_to_words("10.96.0.10".parse().unwrap());
        assert_eq!(f, AF_INET);
        assert_eq!(w[0].to_ne_bytes(), [10, 96, 0, 10]);
    }

    #[test]
    fn v4_mapped_v6_reads_as_v4() {
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let (w, f) = ip_to_words(ip);
        assert_eq!(words_to_ip(w, f), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
