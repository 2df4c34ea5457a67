//! Server names: the DNS names and IP addresses a server's certificate may carry beside its
//! SPIFFE identity, for clients that verify a server by name (as Istio's ztunnel verifies its
//! control plane: `istiod.istio-system.svc`, or the IP it dialled) rather than by identity.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls_pki_types::DnsName;

/// A DNS name or an IP address to put in a certificate's subject alternative names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServingName {
    /// A DNS name, lowercase (names compare case-insensitively).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

/// Why a text is not a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a DNS name nor an IP address")]
pub struct InvalidServingName(pub String);

impl FromStr for ServingName {
    type Err = InvalidServingName;

    /// An IP address when the text parses as one, else a DNS name as TLS clients accept
    /// it (no scheme, no port, no trailing dot).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let invalid = || InvalidServingName(text.to_owned());
        if text.ends_with('.') {
            return Err(invalid());
        }
        DnsName::try_from(text).map_err(|_| invalid())?;
        Ok(Self::Dns(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for ServingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        assert_eq!(
            "Istiod.Istio-System.svc".parse(),
            Ok(ServingName::Dns("istiod.istio-system.svc".into()))
        );
        assert_eq!(
            "172.18.255.1".parse(),
            Ok(ServingName::Ip([172, 18, 255, 1].into()))
        );
        assert_eq!(
            "fd00::1".parse::<ServingName>().unwrap().to_string(),
            "fd00::1"
        );
        for bad in ["", "https://istiod", "istiod:15012", "istiod.", "a b"] {
            assert_eq!(
                bad.parse::<ServingName>(),
                Err(InvalidServingName(bad.into())),
                "{bad:?}"
            );
        }
    }
}
