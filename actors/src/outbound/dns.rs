//! A minimal DNS stub resolver for `--http-out-dns`: A and AAAA queries over
//! UDP to one server, answers parsed here.
//!
//! Only addresses are wanted, every one is checked by the guard afterwards,
//! and the operator chose the server, so a full resolver library is not
//! needed: the message format (RFC 1035 §4) is encoded and parsed by the two
//! pure functions below, which are table-tested. A reply counts only when it
//! comes from the server, carries the query's random id and its question.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// Record types asked for.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// Largest UDP reply read (EDNS is not used, so servers send at most 512
/// bytes; a larger buffer costs nothing).
const REPLY_BYTES_MAX: usize = 4096;
/// Time one query waits for its reply before it is sent again.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Times a query is sent before the lookup fails.
const QUERY_ATTEMPTS: usize = 2;

/// Why a lookup failed (`http_failed`).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS server {server} did not answer")]
    NoAnswer { server: SocketAddr },
    #[error("DNS server {server} answered with rcode {rcode} for {name}")]
    Rcode {
        server: SocketAddr,
        name: String,
        rcode: u8,
    },
    #[error("{name:?} is not a valid DNS name")]
    BadName { name: String },
    #[error("DNS: {0}")]
    Io(#[from] std::io::Error),
}

/// Every A and AAAA address of `name` according to `server` (NXDOMAIN and
/// empty answers give an empty list).
pub async fn lookup(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let (v4, v6) = tokio::join!(query(server, name, TYPE_A), query(server, name, TYPE_AAAA));
    let mut addresses = v4?;
    addresses.extend(v6?);
    Ok(addresses)
}

async fn query(server: SocketAddr, name: &str, record_type: u16) -> Result<Vec<IpAddr>, DnsError> {
    let id: u16 = rand::random();
    let message = encode_query(id, name, record_type).ok_or_else(|| DnsError::BadName {
        name: name.to_string(),
    })?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    // A connected socket drops datagrams from any other source.
    socket.connect(server).await?;
    let mut buffer = vec![0u8; REPLY_BYTES_MAX];
    for _ in 0..QUERY_ATTEMPTS {
        socket.send(&message).await?;
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
            let length = received?;
            match parse_reply(&buffer[..length], id, &message[12..]) {
                Some(Ok(addresses)) => return Ok(addresses),
                Some(Err(rcode)) => {
                    return Err(DnsError::Rcode {
                        server,
                        name: name.to_string(),
                        rcode,
                    });
                }
                // Not our reply: keep waiting for it.
                None => continue,
            }
        }
    }
    Err(DnsError::NoAnswer { server })
}

/// A recursive query for `name` (a trailing dot is allowed), or `None` when
/// the name cannot be encoded (an empty or over-long label).
pub fn encode_query(id: u16, name: &str, record_type: u16) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut message = Vec::with_capacity(18 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    // Flags: recursion desired. One question, no other records.
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&record_type.to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(message)
}

/// The addresses in a reply to the query with `id` and `question` (the
/// query's bytes after its header): `None` when the bytes are not that reply
/// (another id, not a response, another question, truncated), `Err(rcode)`
/// for a failure other than NXDOMAIN.
pub fn parse_reply(reply: &[u8], id: u16, question: &[u8]) -> Option<Result<Vec<IpAddr>, u8>> {
    let header = reply.get(..12)?;
    let is_response = header[2] & 0x80 != 0;
    if u16::from_be_bytes([header[0], header[1]]) != id || !is_response {
        return None;
    }
    if u16::from_be_bytes([header[4], header[5]]) != 1
        || reply.get(12..12 + question.len())? != question
    {
        return None;
    }
    match header[3] & 0x0f {
        0 => {}
        // NXDOMAIN: the name has no addresses.
        3 => return Some(Ok(Vec::new())),
        rcode => return Some(Err(rcode)),
    }
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12 + question.len();
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(reply, at)?;
        let fixed = reply.get(at..at + 10)?;
        let record_type = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = reply.get(at + 10..at + 10 + length)?;
        at += 10 + length;
        // A CNAME chain comes with the final name's addresses; every address
        // in the answer is kept (and checked by the guard).
        match (record_type, class, data.len()) {
            (TYPE_A, CLASS_IN, 4) => {
                let octets: [u8; 4] = data.try_into().ok()?;
                addresses.push(IpAddr::from(octets));
            }
            (TYPE_AAAA, CLASS_IN, 16) => {
                let octets: [u8; 16] = data.try_into().ok()?;
                addresses.push(IpAddr::from(octets));
            }
            _ => {}
        }
    }
    Some(Ok(addresses))
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length {
            0 => return Some(at + 1),
            // A compression pointer ends the name.
            0xc0..=0xff => return message.get(at + 1).map(|_| at + 2),
            1..=63 => at += 1 + usize::from(length),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(query: &[u8], rcode: u8, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2] |= 0x80;
        reply[3] = 0x80 | rcode;
        reply[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (record_type, data) in answers {
            // A pointer to the question's name at offset 12.
            reply.extend_from_slice(&[0xc0, 12]);
            reply.extend_from_slice(&record_type.to_be_bytes());
            reply.extend_from_slice(&CLASS_IN.to_be_bytes());
            reply.extend_from_slice(&[0, 0, 0, 0]);
            reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
            reply.extend_from_slice(data);
        }
        reply
    }

    #[test]
    fn a_query_is_encoded_label_by_label() {
        let query = encode_query(0x1234, "api.example.com.", TYPE_A).expect("valid name");
        assert_eq!(&query[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(
            &query[12..],
            b"\x03api\x07example\x03com\x00\x00\x01\x00\x01"
        );
        assert!(encode_query(1, "", TYPE_A).is_none());
        assert!(encode_query(1, "a..b", TYPE_A).is_none());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_none());
    }

    #[test]
    fn replies_are_matched_to_their_query_and_parsed() {
        let query = encode_query(7, "rebind.test", TYPE_A).expect("valid name");
        let question = &query[12..];
        let cname: &[u8] = &[0xc0, 12];
        let good = reply(
            &query,
            0,
            &[
                (5, cname),
                (TYPE_A, &[127, 0, 0, 2]),
                (TYPE_A, &[8, 8, 8, 8]),
            ],
        );
        assert_eq!(
            parse_reply(&good, 7, question),
            Some(Ok(vec![
                IpAddr::from([127, 0, 0, 2]),
                IpAddr::from([8, 8, 8, 8])
            ]))
        );
        let six = reply(&query, 0, &[(TYPE_AAAA, &Ipv6Addr::LOCALHOST.octets())]);
        assert_eq!(
            parse_reply(&six, 7, question),
            Some(Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]))
        );
        assert_eq!(parse_reply(&good, 8, question), None, "another id");
        assert_eq!(parse_reply(&query, 7, question), None, "not a response");
        let other = encode_query(7, "other.test", TYPE_A).expect("valid name");
        assert_eq!(
            parse_reply(&good, 7, &other[12..]),
            None,
            "another question"
        );
        assert_eq!(
            parse_reply(&good[..good.len() - 2], 7, question),
            None,
            "truncated"
        );
        assert_eq!(
            parse_reply(&reply(&query, 3, &[]), 7, question),
            Some(Ok(vec![]))
        );
        assert_eq!(
            parse_reply(&reply(&query, 2, &[]), 7, question),
            Some(Err(2))
        );
    }
}
