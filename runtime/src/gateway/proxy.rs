//! Trusted reverse proxies (`--trusted-proxies`): whose `X-Forwarded-*`
//! headers the gateway believes.
//!
//! TLS usually ends in a proxy (Caddy, nginx) in front of PiCloud, so every
//! request arrives from the proxy's address. The proxy says who the client
//! was in `X-Forwarded-For`, but any client can send that header too: it is
//! honoured only when the connection comes from a configured proxy. The
//! client is then the right-most address of the chain that is not itself a
//! trusted proxy (addresses further left were written by the client and
//! prove nothing). From any other peer the `X-Forwarded-*` headers are
//! removed before routing, so neither the gateway nor a script can be fooled
//! by them.
//!
//! [`forwarded`] is the pure decision; `server.rs` calls it once per request
//! and records the answer as a [`Forwarded`] request extension.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The most entries of `--trusted-proxies`.
pub const TRUSTED_PROXIES_MAX: usize = 64;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Why `--trusted-proxies` did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyListError {
    #[error("{entry:?} is not an IP address or a CIDR block such as 10.0.0.0/8")]
    Entry { entry: String },
    #[error("{count} trusted proxies listed; at most {TRUSTED_PROXIES_MAX} are allowed")]
    TooMany { count: usize },
}

/// One address block: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    address: IpAddr,
    prefix_bits: u8,
}

impl Block {
    fn parse(entry: &str) -> Option<Block> {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let bits_max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|bits| *bits <= bits_max)?,
            None => bits_max,
        };
        Some(Block {
            address: address.to_canonical(),
            prefix_bits: if address.to_canonical().is_ipv4() && !address.is_ipv4() {
                // `::ffff:a.b.c.d/n` is the IPv4 block of its last n-96 bits.
                prefix_bits.saturating_sub(96)
            } else {
                prefix_bits
            },
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u32),
            IpAddr::V6(v6) => (u128::from(v6), 128u32),
        };
        let (mine, width) = bits(self.address);
        let (theirs, their_width) = bits(ip.to_canonical());
        if width != their_width {
            return false;
        }
        let prefix = u32::from(self.prefix_bits);
        if prefix == 0 {
            return true;
        }
        let shift = width - prefix;
        (mine >> shift) == (theirs >> shift)
    }
}

/// The parsed `--trusted-proxies` (empty: no proxy is trusted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR blocks.
    pub fn parse(list: &str) -> Result<TrustedProxies, ProxyListError> {
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.len() > TRUSTED_PROXIES_MAX {
            return Err(ProxyListError::TooMany {
                count: entries.len(),
            });
        }
        let blocks = entries
            .into_iter()
            .map(|entry| {
                Block::parse(entry).ok_or_else(|| ProxyListError::Entry {
                    entry: entry.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }
}

/// What a trusted proxy told about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The client: the right-most untrusted address of `X-Forwarded-For`.
    pub client: IpAddr,
    /// `X-Forwarded-Host`, when the proxy sent one: the host the client
    /// asked for (domain routing uses it over `Host`).
    pub host: Option<String>,
}

/// The request's forwarded client and host when `peer` is a trusted proxy;
/// `None` otherwise (the caller then drops the `X-Forwarded-*` headers).
pub fn forwarded(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Option<Forwarded> {
    if !trusted.contains(peer) {
        return None;
    }
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let host = headers
        .get(X_FORWARDED_HOST)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty());
    Some(Forwarded {
        client: client_from_chain(peer, &chain, trusted),
        host,
    })
}

/// Walks `X-Forwarded-For` from the right: each trusted hop is skipped, the
/// first untrusted address is the client. An entry that is not an address
/// ends the walk at the last hop known good (a proxy would not write it);
/// a chain of only trusted hops names its left-most one.
fn client_from_chain(peer: IpAddr, chain: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    for entry in chain.iter().rev() {
        let Some(ip) = parse_hop(entry) else {
            return client;
        };
        client = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, maybe with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:80`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn the_list_parses_addresses_and_blocks_and_refuses_the_rest() {
        let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,fd00::/8").expect("parses");
        assert!(trusted.contains(ip("127.0.0.1")));
        assert!(!trusted.contains(ip("127.0.0.2")));
        assert!(trusted.contains(ip("10.200.1.1")));
        assert!(trusted.contains(ip("::ffff:10.1.2.3")));
        assert!(!trusted.contains(ip("11.0.0.1")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        assert_eq!(TrustedProxies::parse(""), Ok(TrustedProxies::default()));
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
        for bad in ["localhost", "10.0.0.0/33", "::1/129", "1.2.3", "10.0.0.0/x"] {
            assert!(
                matches!(
                    TrustedProxies::parse(bad),
                    Err(ProxyListError::Entry { .. })
                ),
                "{bad:?} accepted"
            );
        }
        let many = vec!["10.0.0.1"; TRUSTED_PROXIES_MAX + 1].join(",");
        assert!(matches!(
            TrustedProxies::parse(&many),
            Err(ProxyListError::TooMany { .. })
        ));
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let trusted = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").expect("parses");
        let proxy = ip("127.0.0.1");
        // (X-Forwarded-For lines, the client the gateway uses)
        let cases: [(&[&str], &str); 7] = [
            (&["203.0.113.7"], "203.0.113.7"),
            // A client's own claim on the left is not believed.
            (&["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
            // Trusted hops on the right are skipped, across header lines.
            (&["203.0.113.7, 10.1.1.1", "10.2.2.2"], "203.0.113.7"),
            (&["[2001:db8::1]:443"], "2001:db8::1"),
            (&["203.0.113.7:5555"], "203.0.113.7"),
            // Garbage ends the walk at the last good hop.
            (&["203.0.113.7, junk, 10.1.1.1"], "10.1.1.1"),
            (&[], "127.0.0.1"),
        ];
        for (lines, client) in cases {
            let pairs: Vec<_> = lines.iter().map(|line| (X_FORWARDED_FOR, *line)).collect();
            let answer = forwarded(proxy, &headers(&pairs), &trusted).expect("trusted peer");
            assert_eq!(answer.client, ip(client), "{lines:?}");
        }
        let all_trusted = headers(&[(X_FORWARDED_FOR, "10.9.9.9, 10.1.1.1")]);
        let answer = forwarded(proxy, &all_trusted, &trusted).expect("trusted");
        assert_eq!(answer.client, ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
        let sent = headers(&[
            (X_FORWARDED_FOR, "203.0.113.7"),
            (X_FORWARDED_HOST, "shop.example.org"),
        ]);
        let none = TrustedProxies::default();
        assert_eq!(forwarded(ip("127.0.0.1"), &sent, &none), None);
        let other = TrustedProxies::parse("10.0.0.1").expect("parses");
        assert_eq!(forwarded(ip("127.0.0.1"), &sent, &other), None);
        let local = TrustedProxies::parse("127.0.0.1").expect("parses");
        let answer = forwarded(ip("127.0.0.1"), &sent, &local).expect("trusted");
        assert_eq!(answer.host.as_deref(), Some("shop.example.org"));
    }
}
