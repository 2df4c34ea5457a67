//! The certificates of a proxy's `/config_dump` in the mesh's own shape, whichever node proxy
//! wrote it. The mesh's proxies list `{identity, state, error, certificate: {serial_number,
//! not_before, not_after, expired, root_serial, issuer_serial}}`; Istio's ztunnel lists
//! `{identity, state, certChain, rootCerts}` with each certificate's PEM, decimal serial and
//! validity, and a state such as `Available` or `Unavailable: <why>`. Its entries are read from
//! their PEM into the same fields, so `check`, `proxy-status` and the dashboard judge both alike.

use std::time::SystemTime;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use hbone::cert::{certificate_validity, certificates_from_pem, issuing_root, serial_hex};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

/// The dump's certificate entries, each in the mesh's shape.
pub fn certificates(dump: &Value) -> Vec<Value> {
    dump["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            if entry.get("certChain").is_some() {
                from_istio(entry)
            } else {
                entry.clone()
            }
        })
        .collect()
}

/// The DER certificates of a list of `{pem}` objects (unreadable ones left out). Istio's
/// ztunnel writes each PEM base64-encoded (its bytes' JSON form).
fn ders(list: &Value) -> Vec<CertificateDer<'static>> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["pem"].as_str())
        .filter_map(|text| {
            let pem = if text.starts_with("-----BEGIN") {
                text.to_owned()
            } else {
                String::from_utf8(BASE64_STANDARD.decode(text).ok()?).ok()?
            };
            certificates_from_pem(&pem, "certificate").ok()
        })
        .flatten()
        .collect()
}

/// One entry of Istio's ztunnel in the mesh's shape.
fn from_istio(entry: &Value) -> Value {
    let (state, error) = match entry["state"].as_str().unwrap_or_default() {
        "Available" => ("available", None),
        "Initializing" => ("pending", None),
        // "Unavailable: <why>", or anything else it may say.
        other => {
            let why = other.split_once(':').map_or(other, |(_, why)| why.trim());
            ("failed", Some(why.to_owned()))
        }
    };
    let chain = ders(&entry["certChain"]);
    let roots = ders(&entry["rootCerts"]);
    let first = &entry["certChain"][0];
    let certificate = chain.first().map(|leaf| {
        let expired = certificate_validity(leaf).is_ok_and(|(_, end)| end <= SystemTime::now());
        let root = issuing_root(&chain, &roots);
        json!({
            "serial_number": serial_hex(leaf),
            "not_before": first["validFrom"],
            "not_after": first["expirationTime"],
            "expired": expired,
            "chain_length": chain.len(),
            "roots": roots.len(),
            "root_serial": root.and_then(|r| serial_hex(r)),
            "issuer_serial": chain.get(1).or(root).and_then(|c| serial_hex(c)),
        })
    });
    json!({
        "identity": entry["identity"],
        "state": state,
        "error": error,
        "certificate": certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbone::Authority;
    use hbone::cert::certificate_to_pem;

    /// A workload certificate of `identity` from a fresh root: chain and root as DER.
    fn issued(identity: &str) -> (Vec<CertificateDer<'static>>, CertificateDer<'static>) {
        let day = std::time::Duration::from_secs(86_400);
        let authority = Authority::generate_root("cluster.local", day).unwrap();
        let cert = authority.issue(&identity.parse().unwrap(), day).unwrap();
        (cert.chain().to_vec(), authority.roots()[0].clone())
    }

    /// Certificates as Istio's ztunnel lists them: PEM, base64-encoded.
    fn pem_list(certs: &[CertificateDer<'_>]) -> Value {
        Value::Array(
            certs
                .iter()
                .map(|c| BASE64_STANDARD.encode(certificate_to_pem(c)))
                .map(|pem| {
                    json!({"pem": pem, "serialNumber": "1",
                                "validFrom": "2026-12-07T00:00:00Z",
                                "expirationTime": "2026-12-08T00:00:00Z"})
                })
                .collect(),
        )
    }

    #[test]
    fn istios_entries_are_read_from_their_pem() {
        let (chain, root) = issued("spiffe://cluster.local/ns/mesh/sa/web");
        let (_, other_root) = issued("spiffe://cluster.local/ns/mesh/sa/web");
        let dump = json!({"certificates": [
            {"identity": "spiffe://cluster.local/ns/mesh/sa/web", "state": "Available",
             "certChain": pem_list(&chain), "rootCerts": pem_list(&[other_root.clone(), root.clone()])},
            {"identity": "spiffe://cluster.local/ns/mesh/sa/db",
             "state": "Unavailable: the CA refused", "certChain": [], "rootCerts": []},
            {"identity": "spiffe://cluster.local/ns/mesh/sa/new", "state": "Initializing",
             "certChain": [], "rootCerts": []},
        ]});
        let entries = certificates(&dump);
        let web = &entries[0];
        assert_eq!(web["state"], "available");
        assert_eq!(
            web["certificate"]["serial_number"],
            json!(serial_hex(&chain[0]))
        );
        assert_eq!(web["certificate"]["root_serial"], json!(serial_hex(&root)));
        assert_eq!(web["certificate"]["not_after"], "2026-12-08T00:00:00Z");
        assert_eq!(web["certificate"]["expired"], false);
        assert_eq!(web["certificate"]["roots"], 2);
        assert_eq!(entries[1]["state"], "failed");
        assert_eq!(entries[1]["error"], "the CA refused");
        assert!(entries[1]["certificate"].is_null());
        assert_eq!(entries[2]["state"], "pending");
    }

    #[test]
    fn the_meshs_own_entries_pass_unchanged() {
        let entry = json!({"identity": "spiffe://cluster.local/ns/a/sa/b", "state": "available",
                           "certificate": {"serial_number": "0a", "root_serial": "01"}});
        let dump = json!({"certificates": [entry.clone()]});
        assert_eq!(certificates(&dump), [entry]);
        assert!(certificates(&json!({})).is_empty());
    }
}
