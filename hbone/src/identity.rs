//! SPIFFE workload identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string does not start with `spiffe://`.
    #[error("identity {0:?} does not start with spiffe://")]
    Scheme(String),
    /// The trust domain is empty, too long or has characters SPIFFE forbids.
    #[error("identity {0:?} has an invalid trust domain")]
    TrustDomain(String),
    /// The path is not exactly `/ns/<namespace>/sa/<service-account>`.
    #[error("identity {0:?} does not have the path /ns/<namespace>/sa/<service-account>")]
    Path(String),
    /// The namespace or service account is not a valid Kubernetes name.
    #[error("identity {0:?} has an invalid namespace or service account name")]
    Name(String),
}

/// A workload's identity: the service account it runs as, in a trust domain.
///
/// Parsing is strict: anything that is not a canonical SPIFFE ID of the Istio shape is refused,
/// so that two spellings can never name the same principal in policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// The URI scheme of every SPIFFE ID.
const SCHEME: &str = "spiffe://";
/// SPIFFE caps the trust domain at 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Kubernetes names (RFC 1123 subdomains) are at most 253 bytes.
const MAX_NAME_LEN: usize = 253;

impl Identity {
    /// Builds an identity from its parts, validating each of them.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let display = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        if !valid_trust_domain(trust_domain) {
            return Err(IdentityError::TrustDomain(display));
        }
        if !valid_name(namespace) || !valid_name(service_account) {
            return Err(IdentityError::Name(display));
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, for example `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace of the service account.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account name.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::Scheme(s.to_owned()))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::Path(s.to_owned()))?;
        if !valid_trust_domain(trust_domain) {
            return Err(IdentityError::TrustDomain(s.to_owned()));
        }
        let mut segments = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(IdentityError::Path(s.to_owned()));
        };
        if !valid_name(namespace) || !valid_name(service_account) {
            return Err(IdentityError::Name(s.to_owned()));
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// SPIFFE trust domains: lowercase letters, digits, `.`, `-` and `_`.
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= MAX_TRUST_DOMAIN_LEN
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Kubernetes object names (RFC 1123 subdomain): lowercase alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric.
fn valid_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            name.len() <= MAX_NAME_LEN
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "orders");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
        assert_eq!(
            Identity::new("cluster.local", "shop", "orders").unwrap(),
            id
        );
    }

    #[test]
    fn refuses_malformed_identities() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "scheme"),
            ("spiffe://", "path"),
            ("spiffe://cluster.local", "path"),
            ("spiffe:///ns/a/sa/b", "trust domain"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain"),
            ("spiffe://cluster local/ns/a/sa/b", "trust domain"),
            ("spiffe://cluster.local/ns/a/sa/", "name"),
            ("spiffe://cluster.local/ns//sa/b", "name"),
            ("spiffe://cluster.local/ns/a/sa/b/", "path"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "path"),
            ("spiffe://cluster.local/sa/b/ns/a", "path"),
            ("spiffe://cluster.local/ns/A/sa/b", "name"),
            ("spiffe://cluster.local/ns/-a/sa/b", "name"),
            ("spiffe://cluster.local/ns/a/sa/b-", "name"),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", "name"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Identity>().expect_err(input);
            let matches = match why {
                "scheme" => matches!(err, IdentityError::Scheme(_)),
                "path" => matches!(err, IdentityError::Path(_)),
                "trust domain" => matches!(err, IdentityError::TrustDomain(_)),
                _ => matches!(err, IdentityError::Name(_)),
            };
            assert!(matches, "{input}: expected {why} error, got {err:?}");
        }
    }

    #[test]
    fn new_validates_parts() {
        assert!(Identity::new("cluster.local", "", "b").is_err());
        assert!(Identity::new("", "a", "b").is_err());
        assert!(Identity::new("td", "a", "b.c-d").is_ok());
    }
}
