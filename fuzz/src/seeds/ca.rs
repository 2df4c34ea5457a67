//! CA seeds: CSRs made with rcgen (the identity the target signs for, others, several or no
//! SANs, other key types) and `IstioCertificateRequest`s as ztunnel sends them.

use std::collections::BTreeMap;

use api::ca::IstioCertificateRequest;
use api::prost_types::{Struct, Value, value::Kind};
use prost::Message;
use rcgen::{CertificateParams, KeyPair, SanType, SignatureAlgorithm};

const REVIEWS: &str = "spiffe://cluster.local/ns/shop/sa/reviews";

/// A CSR with `sans` (URIs, or DNS names when they hold no `:`), signed by a new key of
/// `alg`.
fn csr(sans: &[&str], alg: &'static SignatureAlgorithm) -> rcgen::CertificateSigningRequest {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| {
            if s.contains(':') {
                SanType::URI((*s).try_into().expect("an ASCII URI"))
            } else {
                SanType::DnsName((*s).try_into().expect("an ASCII name"))
            }
        })
        .collect();
    let key = KeyPair::generate_for(alg).expect("a key");
    params.serialize_request(&key).expect("a CSR")
}

/// CSRs: DER (the target wraps it in PEM), and one in PEM.
pub(super) fn csrs() -> BTreeMap<String, Vec<u8>> {
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let cases: [(&str, &[&str], &'static SignatureAlgorithm); 7] = [
        ("reviews-p256", &[REVIEWS], p256),
        ("reviews-p384", &[REVIEWS], &rcgen::PKCS_ECDSA_P384_SHA384),
        ("reviews-ed25519", &[REVIEWS], &rcgen::PKCS_ED25519),
        (
            "other-identity",
            &["spiffe://cluster.local/ns/shop/sa/ratings"],
            p256,
        ),
        (
            "two-sans",
            &[REVIEWS, "spiffe://cluster.local/ns/shop/sa/ratings"],
            p256,
        ),
        ("dns-san", &["reviews.shop.svc"], p256),
        ("no-san", &[], p256),
    ];
    let mut out: BTreeMap<String, Vec<u8>> = cases
        .iter()
        .map(|(name, sans, alg)| ((*name).to_owned(), csr(sans, alg).der().to_vec()))
        .collect();
    let pem = csr(&[REVIEWS], p256).pem().expect("PEM");
    out.insert("reviews-pem".to_owned(), pem.into_bytes());
    out
}

fn impersonating(identity: Kind) -> Option<Struct> {
    Some(Struct {
        fields: BTreeMap::from([(
            "ImpersonatedIdentity".to_owned(),
            Value {
                kind: Some(identity),
            },
        )]),
    })
}

/// Requests of node1's ztunnel, for its pods and others.
pub(super) fn requests() -> BTreeMap<String, Vec<u8>> {
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let pem = |sans: &[&str]| csr(sans, p256).pem().expect("PEM");
    let for_identity = |s: &str| impersonating(Kind::StringValue(s.to_owned()));
    let cases = [
        ("reviews", pem(&[REVIEWS]), 86_400, for_identity(REVIEWS)),
        (
            "not-on-node",
            pem(&["spiffe://cluster.local/ns/shop/sa/ratings"]),
            3600,
            for_identity("spiffe://cluster.local/ns/shop/sa/ratings"),
        ),
        (
            "csr-mismatch",
            pem(&[REVIEWS]),
            0,
            for_identity("spiffe://cluster.local/ns/shop/sa/productpage"),
        ),
        (
            "own-identity",
            pem(&["spiffe://cluster.local/ns/istio-system/sa/ztunnel"]),
            3600,
            None,
        ),
        (
            "too-long",
            pem(&[REVIEWS]),
            100 * 24 * 3600,
            for_identity(REVIEWS),
        ),
        ("negative", pem(&[REVIEWS]), -1, for_identity(REVIEWS)),
        (
            "not-a-string",
            pem(&[REVIEWS]),
            3600,
            impersonating(Kind::NumberValue(1.0)),
        ),
        (
            "foreign-domain",
            pem(&[REVIEWS]),
            3600,
            for_identity("spiffe://evil.local/ns/shop/sa/reviews"),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, csr, validity_duration, metadata)| {
            let request = IstioCertificateRequest {
                csr,
                validity_duration,
                metadata,
            };
            (name.to_owned(), request.encode_to_vec())
        })
        .collect()
}
