//! The certificate authority's handling of what callers send it:
//!
//! - [`CSR`]: a CSR (PEM, or DER which is wrapped in PEM) signed by `hbone::Authority` for a
//!   fixed identity; an issued chain must name exactly that identity;
//! - [`REQUEST`]: an `IstioCertificateRequest` (CSR, validity, `ImpersonatedIdentity`
//!   metadata) sent by an authenticated node proxy to the controller's `CaService`; an
//!   issued certificate must name the impersonated identity, which the node must host.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_server::IstioCertificateService;
use api::prost_types::value::Kind;
use controller::ca::auth::{Caller, StaticTokens};
use controller::ca::{CaService, CaSettings, CertificateAuthority, NodeDirectory, Origin};
use hbone::{Authority, Identity};
use prost::Message;

use crate::mutate::Shape;
use crate::target::Target;

/// CSRs in PEM or DER.
pub const CSR: Target = Target {
    name: "ca_csr",
    run: ca_csr,
    shape: Shape::Bytes,
    dictionary: &[
        b"spiffe://cluster.local/ns/shop/sa/reviews",
        b"spiffe://cluster.local/ns/shop/sa/",
        b"\x30\x82\xff\xff",
        b"\x30\x80",
        b"\x06\x03\x55\x1d\x11",
        b"\x86",
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
    ],
    max_len: 8 * 1024,
};

/// `IstioCertificateRequest` bodies.
pub const REQUEST: Target = Target {
    name: "ca_request",
    run: ca_request,
    shape: Shape::Protobuf,
    dictionary: &[
        b"ImpersonatedIdentity",
        b"spiffe://cluster.local/ns/shop/sa/reviews",
        b"spiffe://cluster.local/ns/istio-system/sa/ztunnel",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x80\xa3\x05",
    ],
    max_len: 8 * 1024,
};

/// The token the fuzzed requests carry: node1's ztunnel.
const NODE_TOKEN: &str = "node1-token";

fn trust_domain_root() -> Authority {
    Authority::generate_root("cluster.local", Duration::from_secs(365 * 24 * 3600))
        .expect("a root generates")
}

/// The identity [`ca_csr`] signs for.
pub fn csr_identity() -> Identity {
    Identity::new("cluster.local", "shop", "reviews").expect("a valid identity")
}

/// The identity in the leaf of `chain`.
fn leaf_identity(chain: &[String]) -> Identity {
    let leaf = chain.first().expect("a chain has a leaf");
    let certs = hbone::cert::certificates_from_pem(leaf, "leaf").expect("the leaf is PEM");
    hbone::tls::peer_identity(Some(&certs)).expect("the leaf names an identity")
}

/// Signs a CSR for [`csr_identity`].
pub fn ca_csr(data: &[u8]) {
    static AUTHORITY: OnceLock<Authority> = OnceLock::new();
    let authority = AUTHORITY.get_or_init(trust_domain_root);
    let pem = if data.starts_with(b"-----BEGIN") {
        String::from_utf8_lossy(data).into_owned()
    } else {
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()))
    };
    let identity = csr_identity();
    if let Ok(chain) = authority.sign_csr(&pem, &identity, Duration::from_secs(3600)) {
        assert!(chain.len() >= 2, "a chain without its root");
        assert_eq!(
            leaf_identity(&chain),
            identity,
            "issued for another identity"
        );
    }
}

/// Pods by node, as the CA's directory knows them: node1 runs shop/reviews and
/// shop/productpage.
struct Directory;

impl NodeDirectory for Directory {
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        node == "node1"
            && namespace == "shop"
            && matches!(service_account, "reviews" | "productpage")
    }
}

/// The caller of every request: node1's ztunnel.
fn node_identity() -> Identity {
    Identity::new("cluster.local", "istio-system", "ztunnel").expect("a valid identity")
}

fn ca_service() -> &'static CaService {
    static SERVICE: OnceLock<CaService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let ca = CertificateAuthority::from_loaded(
            trust_domain_root(),
            Origin::Ephemeral,
            "cluster.local",
        );
        let node = Caller {
            identity: node_identity(),
            node: Some("node1".into()),
        };
        let tokens = StaticTokens(HashMap::from([(NODE_TOKEN.to_owned(), node)]));
        let config = CaSettings::new("cluster.local").expect("a valid trust domain");
        CaService::new(Arc::new(ca), Arc::new(tokens), Arc::new(Directory), config)
    })
}

/// Sends a decoded `IstioCertificateRequest` as node1's ztunnel.
pub fn ca_request(data: &[u8]) {
    let Ok(body) = IstioCertificateRequest::decode(data) else {
        return;
    };
    let impersonated = body
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("ImpersonatedIdentity"))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {NODE_TOKEN}").parse().expect("ASCII"),
    );
    let answer = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(ca_service().create_certificate(request));
    let Ok(answer) = answer else {
        return;
    };
    let identity = leaf_identity(&answer.into_inner().cert_chain);
    // Its own identity, or one it asked for and hosts a pod of.
    if identity == node_identity() {
        return;
    }
    assert_eq!(
        Some(identity.to_string()),
        impersonated,
        "issued for another identity"
    );
    assert!(
        Directory.has_pod("node1", identity.namespace(), identity.service_account()),
        "issued for a pod that is not on the node"
    );
}
