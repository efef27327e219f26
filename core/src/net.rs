//! Who the client is: CIDR ranges and the `TrustedProxies` rule (DESIGN.md §6 "Client
//! address"). Behind a proxy the TCP peer is the proxy; its `X-Forwarded-For` names the
//! client, but only a trusted proxy's word counts, since anyone can send the header.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// An address range such as `10.0.0.0/8`, `192.0.2.7` (one address) or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => masked(u128::from(u32::from(net)), u128::from(u32::from(ip)), 32, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

fn masked(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    let host_bits = u32::from(bits - prefix);
    let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
    (net & mask) == (ip & mask)
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a CIDR range like 10.0.0.0/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The client address of a request that reached us from `peer`: when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy; otherwise (or when that entry is not an address) the peer.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    // Several headers are one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in entries.iter().rev() {
        match parse_forwarded_ip(entry) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return ip,
            None => break,
        }
    }
    canonical(peer)
}

/// An `X-Forwarded-For` entry: an address, possibly `[v6]` or `v4:port`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).and_then(|e| e.parse().ok()).map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains(ip("10.200.3.4")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped addresses are IPv4");
        let one: Cidr = "192.0.2.7".parse().expect("cidr");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_trusted_proxy_may_name_the_client() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1, 203.0.113.5"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        // The right-most entry that is not a trusted proxy.
        assert_eq!(client_address(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"));
        // No header, or nothing but proxies, or garbage: the peer.
        assert_eq!(client_address(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.5, not-an-ip"));
        assert_eq!(client_address(ip("127.0.0.1"), &junk, &trusted), ip("127.0.0.1"));
        let mut v6 = HeaderMap::new();
        v6.insert("x-forwarded-for", HeaderValue::from_static("[2001:db8::7], 10.0.0.2"));
        assert_eq!(client_address(ip("127.0.0.1"), &v6, &trusted), ip("2001:db8::7"));
        // Nobody trusted: always the peer.
        assert_eq!(client_address(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
    }
}
