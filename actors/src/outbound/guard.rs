//! The SSRF guard: which addresses a script's outbound request may reach.
//!
//! Pure functions, no sockets: [`classify`] puts an address into a refused
//! [`AddressClass`] (or none: a public address), [`AllowList`] is the
//! operator's exceptions (`--http-out-allow`), and [`check`] combines the two
//! for one socket address. [`target`] reads the host of a parsed URL. The
//! client (`client.rs`) calls [`check`] on every address it is about to
//! connect to, after its own resolution, so what was checked is what is
//! reached.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are classified by
//! the IPv4 address they carry: a kernel or a NAT64 gateway delivers them to
//! that address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// A refused kind of address, named in `http_blocked` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1, and the names `localhost` / `*.localhost`.
    Loopback,
    /// 0.0.0.0/8 and :: ("this host on this network").
    Unspecified,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (RFC 1918).
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// 169.254.0.0/16 (cloud metadata lives here) and fe80::/10.
    LinkLocal,
    /// 192.0.0.0/24, IETF protocol assignments (RFC 6890).
    IetfProtocol,
    /// 198.18.0.0/15, benchmarking networks (RFC 2544).
    Benchmarking,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 240.0.0.0/4, reserved for future use.
    Reserved,
    /// 255.255.255.255.
    Broadcast,
    /// fc00::/7 (RFC 4193), IPv6's private networks.
    UniqueLocal,
}

impl AddressClass {
    /// The snake_case name scripts see in the error message.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared_address_space",
            AddressClass::LinkLocal => "link_local",
            AddressClass::IetfProtocol => "ietf_protocol",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Broadcast => "broadcast",
            AddressClass::UniqueLocal => "unique_local",
        }
    }
}

/// The refused class of `ip`, or `None` for an address scripts may reach.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (10, _, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedAddressSpace,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 0, 0) => AddressClass::IetfProtocol,
        (192, 168, _) => AddressClass::Private,
        (198, 18..=19, _) => AddressClass::Benchmarking,
        (224..=239, _, _) => AddressClass::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

/// The NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
const NAT64_PREFIX: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let first = ip.segments()[0];
    if first & 0xfe00 == 0xfc00 {
        Some(AddressClass::UniqueLocal)
    } else if first & 0xffc0 == 0xfe80 {
        Some(AddressClass::LinkLocal)
    } else if first & 0xff00 == 0xff00 {
        Some(AddressClass::Multicast)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address delivers to: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, `::` and `::1` handled
/// before) and NAT64 (`64:ff9b::/96`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let tail = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    match segments[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0, 0] => Some(tail()),
        _ if segments[..6] == NAT64_PREFIX => Some(tail()),
        _ => None,
    }
}

/// One exception the operator opened.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowEntry {
    /// Exactly this address and port (`10.0.0.5:9000`, `[fd00::5]:443`).
    Exact(SocketAddr),
    /// Any port of any address in this network (`192.168.1.0/24`).
    Network { base: IpAddr, prefix_bits: u8 },
}

impl AllowEntry {
    fn parse(text: &str) -> Result<AllowEntry, String> {
        if let Some((base, prefix)) = text.split_once('/') {
            let base: IpAddr = base
                .parse()
                .map_err(|_| format!("{base:?} is not an IP address"))?;
            let width = if base.is_ipv4() { 32 } else { 128 };
            let prefix_bits: u8 = prefix
                .parse()
                .ok()
                .filter(|bits| *bits <= width)
                .ok_or_else(|| format!("the prefix length must be 0 to {width}"))?;
            if masked(base, prefix_bits) != base {
                return Err(format!(
                    "host bits are set; the network is {}/{prefix_bits}",
                    masked(base, prefix_bits)
                ));
            }
            return Ok(AllowEntry::Network { base, prefix_bits });
        }
        text.parse::<SocketAddr>()
            .map(AllowEntry::Exact)
            .map_err(|_| {
                "expected ip:port ([v6]:port for IPv6) or a network ip/prefix (any port)"
                    .to_string()
            })
    }

    fn allows(&self, addr: SocketAddr) -> bool {
        match self {
            AllowEntry::Exact(exact) => {
                exact.port() == addr.port() && exact.ip().to_canonical() == addr.ip()
            }
            AllowEntry::Network { base, prefix_bits } => {
                let ip = addr.ip();
                base.is_ipv4() == ip.is_ipv4() && masked(ip, *prefix_bits) == *base
            }
        }
    }
}

/// `ip` with every bit past the first `prefix_bits` cleared.
fn masked(ip: IpAddr, prefix_bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_bits))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_bits))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// An entry of `--http-out-allow` that does not parse (a boot error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--http-out-allow entry {entry:?}: {reason}")]
pub struct AllowListError {
    pub entry: String,
    pub reason: String,
}

/// The operator's exceptions to the guard (`--http-out-allow`): exact
/// `ip:port` targets and networks (any port). Apps cannot change it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    /// Parses a comma-separated list; blanks around entries are ignored, an
    /// empty list allows nothing.
    pub fn parse(list: &str) -> Result<AllowList, AllowListError> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                AllowEntry::parse(entry).map_err(|reason| AllowListError {
                    entry: entry.to_string(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    fn allows(&self, addr: SocketAddr) -> bool {
        self.entries.iter().any(|entry| entry.allows(addr))
    }
}

/// Why the guard refused a target (`http_blocked`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{target} is a {} address", class.name())]
    Address { class: AddressClass, target: String },
    #[error("scheme {scheme:?} is not allowed (http and https only)")]
    Scheme { scheme: String },
}

/// Whether a script may connect to `addr`: a public address, or one the
/// operator opened. Mapped IPv6 forms are matched against the allow list by
/// the IPv4 address they carry.
pub fn check(addr: SocketAddr, allow: &AllowList) -> Result<(), Refusal> {
    let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    match classify(addr.ip()) {
        None => Ok(()),
        Some(_) if allow.allows(canonical) => Ok(()),
        Some(class) => Err(Refusal::Address {
            class,
            target: addr.to_string(),
        }),
    }
}

/// Where a URL points, as far as its text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP literal (after WHATWG parsing: `2130706433`, `0x7f000001`,
    /// `0177.0.0.1` and `127.1` are all 127.0.0.1 here).
    Ip(SocketAddr),
    /// A name to resolve, and the port to connect to.
    Name { host: String, port: u16 },
}

/// The target of `url`: the scheme must be http or https; `localhost` and
/// names under it are refused without asking DNS (RFC 6761 reserves them
/// for the loopback whatever a resolver answers).
pub fn target(url: &Url) -> Result<Target, Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme {
            scheme: url.scheme().to_string(),
        });
    }
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        Some(Host::Ipv4(ip)) => Ok(Target::Ip(SocketAddr::new(IpAddr::V4(ip), port))),
        Some(Host::Ipv6(ip)) => Ok(Target::Ip(SocketAddr::new(IpAddr::V6(ip), port))),
        Some(Host::Domain(name)) => {
            let bare = name.strip_suffix('.').unwrap_or(name);
            if bare.eq_ignore_ascii_case("localhost")
                || bare.to_ascii_lowercase().ends_with(".localhost")
            {
                return Err(Refusal::Address {
                    class: AddressClass::Loopback,
                    target: name.to_string(),
                });
            }
            Ok(Target::Name {
                host: name.to_string(),
                port,
            })
        }
        // http(s) URLs always have a host; `url` refuses them otherwise.
        None => Err(Refusal::Scheme {
            scheme: url.scheme().to_string(),
        }),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(text: &str) -> Option<&'static str> {
        classify(text.parse().expect("test address")).map(AddressClass::name)
    }

    #[test]
    fn every_refused_range_has_its_class_and_public_addresses_pass() {
        let table: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("unspecified")),
            ("0.255.1.2", Some("unspecified")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("100.64.0.1", Some("shared_address_space")),
            ("100.127.255.255", Some("shared_address_space")),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link_local")),
            ("172.15.255.255", None),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.0.0.8", Some("ietf_protocol")),
            ("192.0.1.1", None),
            ("192.168.1.1", Some("private")),
            ("198.17.255.255", None),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.20.0.1", None),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.255", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.254", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fc00::1", Some("unique_local")),
            ("fdff:ffff::1", Some("unique_local")),
            ("fe80::1", Some("link_local")),
            ("febf::1", Some("link_local")),
            ("fec0::1", None),
            ("ff02::1", Some("multicast")),
            ("2606:4700::1111", None),
            // IPv4 carried in IPv6: the IPv4's class, or allowed when public.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link_local")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("::192.168.0.1", Some("private")),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link_local")),
            ("64:ff9b::8.8.8.8", None),
        ];
        for (address, expected) in table {
            assert_eq!(class_of(address), *expected, "{address}");
        }
    }

    #[test]
    fn allow_list_parses_exact_targets_and_networks() {
        let list = AllowList::parse(" 10.0.0.5:9000, 192.168.1.0/24,[fd00::5]:443,fd01::/16,")
            .expect("valid list");
        let allowed = |text: &str| check(text.parse().expect("test address"), &list).is_ok();
        assert!(allowed("10.0.0.5:9000"));
        assert!(!allowed("10.0.0.5:9001"), "exact entries open one port");
        assert!(!allowed("10.0.0.6:9000"));
        assert!(allowed("192.168.1.77:22"), "networks open every port");
        assert!(!allowed("192.168.2.1:80"));
        assert!(allowed("[fd00::5]:443"));
        assert!(!allowed("[fd00::6]:443"));
        assert!(allowed("[fd01:1234::1]:80"));
        assert!(
            allowed("[::ffff:10.0.0.5]:9000"),
            "mapped forms match by IPv4"
        );
        assert!(allowed("[::ffff:192.168.1.3]:1"));
        assert!(!allowed("127.0.0.1:9000"));
        assert!(allowed("8.8.8.8:53"), "public addresses need no entry");
        assert_eq!(AllowList::parse("").expect("empty"), AllowList::default());
    }

    #[test]
    fn bad_allow_entries_are_named() {
        for (list, entry) in [
            ("10.0.0.5", "10.0.0.5"),
            ("10.0.0.5:9000,example.com:80", "example.com:80"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("10.0.0.1/8", "10.0.0.1/8"),
            ("fd00::/129", "fd00::/129"),
            ("10.0.0.5:99999", "10.0.0.5:99999"),
            ("nonsense/8", "nonsense/8"),
        ] {
            let error = AllowList::parse(list).expect_err(list);
            assert_eq!(error.entry, entry, "{list}");
            assert!(error.to_string().contains(entry), "{error}");
        }
    }

    #[test]
    fn odd_spellings_parse_to_the_address_they_mean() {
        for spelling in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://LOCALHOST/",
            "http://localhost./",
            "http://app.localhost/",
        ] {
            let url = Url::parse(spelling).expect(spelling);
            let refusal = match target(&url) {
                Ok(Target::Ip(addr)) => check(addr, &AllowList::default()).expect_err(spelling),
                Ok(other) => panic!("{spelling} resolved to a name {other}"),
                Err(refusal) => refusal,
            };
            assert!(
                matches!(
                    refusal,
                    Refusal::Address {
                        class: AddressClass::Loopback,
                        ..
                    }
                ),
                "{spelling}: {refusal}"
            );
        }
    }

    #[test]
    fn only_http_and_https() {
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "gopher://example.com/",
        ] {
            let url = Url::parse(url).expect("test URL");
            assert!(matches!(target(&url), Err(Refusal::Scheme { .. })), "{url}");
        }
        let url = Url::parse("https://example.com/x").expect("test URL");
        assert_eq!(
            target(&url),
            Ok(Target::Name {
                host: "example.com".into(),
                port: 443
            })
        );
    }
}
