//! The names inside node certificates: a node's id lives in its
//! certificate's common name (`picloud-node-<id>`), so a peer's identity comes
//! out of the verified handshake. Both the CA (which issues and checks
//! certificates) and the TLS verifiers (which read the peer's id) use these;
//! they sit below both so neither depends on the other.

use picloud_storage::NodeId;
use rustls::pki_types::CertificateDer;

const NODE_COMMON_NAME_PREFIX: &str = "picloud-node-";

/// The common name a node certificate carries: `picloud-node-<id>`.
pub fn node_common_name(node_id: NodeId) -> String {
    format!("{NODE_COMMON_NAME_PREFIX}{node_id}")
}

/// The node id in a `picloud-node-<id>` common name (canonical decimal only).
pub fn parse_node_common_name(common_name: &str) -> Option<NodeId> {
    let digits = common_name.strip_prefix(NODE_COMMON_NAME_PREFIX)?;
    let id: NodeId = digits.parse().ok()?;
    // Reject "+1", "01" and the like so one id has exactly one name.
    (id.to_string() == digits).then_some(id)
}

/// The node id in a certificate's `picloud-node-<id>` common name.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, String> {
    let name = common_name(cert)?;
    parse_node_common_name(&name)
        .ok_or_else(|| format!("certificate common name {name:?} is not picloud-node-<id>"))
}

/// The first common name (OID 2.5.4.3) of a certificate's subject.
///
/// webpki parses the certificate and hands back the subject's raw DER; the
/// small reader below walks `SET OF SEQUENCE { OID, value }` in it. It is
/// only ever used on certificates that already passed verification (or that
/// we issued), and it is bounds-checked throughout: malformed input is an
/// error, never a panic.
pub fn common_name(cert: &CertificateDer<'_>) -> Result<String, String> {
    const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let mut rdns = parsed.subject();
    while !rdns.is_empty() {
        let (set_tag, set, rest) = der_read(rdns).ok_or("malformed subject")?;
        rdns = rest;
        if set_tag != 0x31 {
            return Err("malformed subject: expected a SET".into());
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (seq_tag, attribute, rest) = der_read(attributes).ok_or("malformed subject")?;
            attributes = rest;
            if seq_tag != 0x30 {
                return Err("malformed subject: expected a SEQUENCE".into());
            }
            let (oid_tag, oid, rest) = der_read(attribute).ok_or("malformed subject")?;
            if oid_tag != 0x06 || oid != COMMON_NAME_OID {
                continue;
            }
            let (value_tag, value, _) = der_read(rest).ok_or("malformed subject")?;
            // UTF8String, PrintableString or IA5String: all read as UTF-8.
            if !matches!(value_tag, 0x0c | 0x13 | 0x16) {
                return Err(format!(
                    "common name has unsupported string tag {value_tag:#x}"
                ));
            }
            return String::from_utf8(value.to_vec())
                .map_err(|_| "common name is not UTF-8".to_string());
        }
    }
    Err("certificate has no common name".into())
}

/// Reads one DER TLV: (tag, value, rest). Single-byte tags and definite
/// lengths up to four bytes, which is all an X.509 name uses.
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < length {
        return None;
    }
    let (value, rest) = input.split_at(length);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ca::ClusterCa;

    #[test]
    fn der_reader_rejects_truncated_and_overlong_input() {
        assert_eq!(
            der_read(&[0x30, 0x01, 0xaa, 0xbb]),
            Some((0x30, &[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(der_read(&[0x30, 0x05, 0xaa]), None);
        assert_eq!(der_read(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_read(&[0x30, 0x82, 0x00]), None);
        assert_eq!(der_read(&[0x30]), None);
        assert_eq!(der_read(&[]), None);
    }

    #[test]
    fn common_name_of_an_issued_certificate_is_the_node_name() {
        let ca = ClusterCa::create().expect("ca");
        let cert = ca.issue_node_cert(12, &[]).expect("issue");
        let der = cert.cert_der().expect("der");
        assert_eq!(common_name(&der).expect("cn"), "picloud-node-12");
        assert_eq!(node_id_of(&der).expect("id"), 12);
        // The CA's own certificate is not a node certificate.
        assert!(node_id_of(ca.cert_der()).is_err());
    }

    #[test]
    fn node_common_names_parse_only_in_canonical_form() {
        assert_eq!(parse_node_common_name(&node_common_name(42)), Some(42));
        for bad in [
            "picloud-node-",
            "picloud-node-01",
            "picloud-node-+1",
            "node-1",
            "picloud-node-1x",
        ] {
            assert_eq!(parse_node_common_name(bad), None, "{bad}");
        }
    }
}
