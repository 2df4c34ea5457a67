//! Refusing CA material that cannot sign what workloads will trust, before it signs anything:
//! a key that is not the certificate's, a certificate outside its validity or not a CA, a
//! chain that does not lead, signature by signature, to one of the roots.

use std::time::SystemTime;

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::{ASN1Time, FromDer};

use crate::cert::CertError;

/// Checks that `key` belongs to `chain[0]`, that every certificate of `chain` is a CA valid at
/// `now` and signed by the next one, and that the last is a root of `roots` or signed by one.
pub(super) fn signing_material(
    key: &KeyPair,
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<(), CertError> {
    let refuse = |why: String| Err(CertError::CaMaterial(why));
    let parsed = parse_all(chain)?;
    let root_certs = parse_all(roots)?;
    let own = &parsed[0];
    if key.subject_public_key_info() != own.public_key().raw {
        return refuse(format!(
            "the signing key does not belong to the CA certificate ({})",
            own.subject()
        ));
    }
    let at = ASN1Time::from_timestamp(unix(now)).map_err(|e| CertError::X509(e.to_string()))?;
    for cert in &parsed {
        let validity = cert.validity();
        if at < validity.not_before {
            return refuse(format!(
                "{} is not valid before {}",
                cert.subject(),
                validity.not_before
            ));
        }
        if at > validity.not_after {
            return refuse(format!(
                "{} expired at {}",
                cert.subject(),
                validity.not_after
            ));
        }
        if !cert.is_ca() {
            return refuse(format!(
                "{} is not a CA certificate (basicConstraints)",
                cert.subject()
            ));
        }
    }
    for pair in parsed.windows(2) {
        if !signs(&pair[1], &pair[0]) {
            return refuse(format!(
                "{} is not signed by {}, which follows it in the chain",
                pair[0].subject(),
                pair[1].subject()
            ));
        }
    }
    // `parse_all` refuses an empty chain: the last is there.
    let top = &parsed[parsed.len() - 1];
    if root_certs.iter().any(|root| signs(root, top)) {
        Ok(())
    } else {
        refuse(format!(
            "the chain does not lead to the roots: no root signed {} (issuer {})",
            top.subject(),
            top.issuer()
        ))
    }
}

/// Whether `issuer` signed `cert` (a self-signed root signs itself).
fn signs(issuer: &X509Certificate<'_>, cert: &X509Certificate<'_>) -> bool {
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn parse_all<'a>(
    ders: &'a [CertificateDer<'static>],
) -> Result<Vec<X509Certificate<'a>>, CertError> {
    if ders.is_empty() {
        return Err(CertError::Empty("CA certificate chain"));
    }
    ders.iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, cert)| cert)
                .map_err(|e| CertError::X509(e.to_string()))
        })
        .collect()
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::PKCS_ECDSA_P256_SHA256;

    use super::*;
    use crate::Authority;
    use crate::cert::certificates_from_pem;

    const HOUR: Duration = Duration::from_secs(3600);

    fn new_root() -> Authority {
        Authority::generate_root("cluster.local", 24 * HOUR).unwrap()
    }

    /// Loads an intermediate of `parent` valid from `start` for `ttl`, with `roots`.
    fn plug_in(
        parent: &Authority,
        start: SystemTime,
        ttl: Duration,
        roots: &str,
    ) -> Result<Authority, CertError> {
        let (key, chain) = parent
            .issue_intermediate("mesh intermediate", start, start + ttl)
            .unwrap();
        Authority::from_pem(&key, &chain, roots)
    }

    fn roots_pem(ca: &Authority) -> String {
        ca.roots_pem().concat()
    }

    #[test]
    fn a_valid_intermediate_of_the_root_signs() {
        let root = new_root();
        let now = SystemTime::now();
        let ca = plug_in(&root, now - HOUR, HOUR * 2, &roots_pem(&root)).unwrap();
        assert_eq!(ca.chain().len(), 1);
        let id = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = ca.issue(&id, Duration::from_secs(60)).unwrap();
        assert_eq!(cert.issuing_root(), Some(&root.roots()[0]));
        // Two levels down: the chain carries both intermediates.
        let (key, chain) = ca
            .issue_intermediate("second", now - HOUR, now + HOUR)
            .unwrap();
        let deeper = Authority::from_pem(&key, &chain, &roots_pem(&root)).unwrap();
        assert_eq!(deeper.chain().len(), 2);
    }

    #[test]
    fn a_key_that_is_not_the_certificate_s_is_refused() {
        let root = new_root();
        let now = SystemTime::now();
        let (_, chain) = root
            .issue_intermediate("mesh intermediate", now - HOUR, now + HOUR)
            .unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let err = Authority::from_pem(&other, &chain, &roots_pem(&root)).unwrap_err();
        assert!(
            err.to_string().contains("the signing key does not belong"),
            "{err}"
        );
    }

    #[test]
    fn an_expired_or_not_yet_valid_intermediate_is_refused() {
        let root = new_root();
        let now = SystemTime::now();
        let expired = plug_in(&root, now - 3 * HOUR, HOUR, &roots_pem(&root)).unwrap_err();
        assert!(expired.to_string().contains("expired at"), "{expired}");
        let early = plug_in(&root, now + HOUR, HOUR, &roots_pem(&root)).unwrap_err();
        assert!(early.to_string().contains("is not valid before"), "{early}");
    }

    #[test]
    fn a_chain_that_does_not_lead_to_the_roots_is_refused() {
        let root = new_root();
        let stranger = new_root();
        let now = SystemTime::now();
        let err = plug_in(&root, now - HOUR, HOUR * 2, &roots_pem(&stranger)).unwrap_err();
        assert!(
            err.to_string()
                .contains("the chain does not lead to the roots"),
            "{err}"
        );
        // Both roots published (a rotation): it leads to one of them.
        let both = format!("{}{}", roots_pem(&stranger), roots_pem(&root));
        assert!(plug_in(&root, now - HOUR, HOUR * 2, &both).is_ok());
    }

    #[test]
    fn a_leaf_is_not_a_ca() {
        let root = new_root();
        let id = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let leaf = root.issue(&id, Duration::from_secs(600)).unwrap();
        let key = KeyPair::try_from(leaf.private_key().secret_der())
            .unwrap()
            .serialize_pem();
        let chain = crate::cert::certificate_to_pem(&leaf.chain()[0]);
        let err = Authority::from_pem(&key, &chain, &roots_pem(&root)).unwrap_err();
        assert!(err.to_string().contains("is not a CA certificate"), "{err}");
        assert!(certificates_from_pem(&chain, "leaf").is_ok());
    }
}
