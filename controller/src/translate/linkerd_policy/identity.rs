//! Linkerd identities and networks in the terms ztunnel matches: principals
//! (`<trust-domain>/ns/<ns>/sa/<sa>`) and CIDRs, the exceptions of a network subtracted.

use std::net::IpAddr;

use api::security::{Address, StringMatch, string_match::MatchType};

/// What ends a Linkerd workload identity before its identity domain.
const LINKERD_IDENTITY: &str = ".serviceaccount.identity.linkerd.";

fn matching(match_type: MatchType) -> StringMatch {
    StringMatch {
        match_type: Some(match_type),
    }
}

/// The principal of `sa` in `ns`.
pub(super) fn service_account(trust_domain: &str, ns: &str, sa: &str) -> StringMatch {
    matching(MatchType::Exact(format!("{trust_domain}/ns/{ns}/sa/{sa}")))
}

/// Every service account of `ns`.
pub(super) fn namespace(trust_domain: &str, ns: &str) -> StringMatch {
    matching(MatchType::Prefix(format!("{trust_domain}/ns/{ns}/sa/")))
}

/// Any authenticated client.
pub(super) fn any() -> StringMatch {
    matching(MatchType::Presence(()))
}

/// One entry of `MeshTLSAuthentication.identities`: `*` (any authenticated client), a Linkerd
/// identity `<sa>.<ns>.serviceaccount.identity.linkerd.<domain>` (`*` for `<sa>`: every
/// service account of `<ns>`; `*.serviceaccount...`: every one of the domain), or a SPIFFE ID.
/// Returns the match and, for an identity of another domain than the trust domain, a warning
/// (it can match no workload of this mesh).
pub(super) fn linkerd_identity(
    id: &str,
    trust_domain: &str,
) -> Result<(StringMatch, Option<String>), String> {
    if id == "*" {
        return Ok((any(), None));
    }
    if let Some(rest) = id.strip_prefix("spiffe://") {
        if rest.contains('*') || rest.is_empty() {
            return Err(format!("{id:?} is not a SPIFFE ID (no wildcard)"));
        }
        return Ok((matching(MatchType::Exact(rest.to_owned())), None));
    }
    let not_linkerd = || {
        format!(
            "{id:?} is not a Linkerd identity (<serviceaccount>.<namespace>{LINKERD_IDENTITY}\
             <domain>, `*`, or spiffe://...)"
        )
    };
    // `*.serviceaccount.identity.linkerd.<domain>` splits into `*` and the domain.
    let Some((head, domain)) = id.split_once(LINKERD_IDENTITY) else {
        return Err(not_linkerd());
    };
    if domain.is_empty() || domain.contains('*') {
        return Err(not_linkerd());
    }
    let warning = (domain != trust_domain).then(|| {
        format!(
            "warning: the identity domain {domain:?} of {id:?} is not the mesh's trust domain \
             {trust_domain:?}: it matches no workload of this mesh"
        )
    });
    let prefix = |rest: String| Ok((matching(MatchType::Prefix(rest)), warning.clone()));
    if head == "*" {
        return prefix(format!("{domain}/ns/"));
    }
    let Some((sa, ns)) = head.rsplit_once('.') else {
        return Err(not_linkerd());
    };
    if ns.is_empty() || ns.contains('*') || sa.is_empty() {
        return Err(not_linkerd());
    }
    if sa == "*" {
        return prefix(format!("{domain}/ns/{ns}/sa/"));
    }
    if sa.contains('*') {
        return Err(not_linkerd());
    }
    Ok((service_account(domain, ns, sa), warning))
}

/// A network: address family, address as a number, prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    v4: bool,
    bits: u128,
    len: u32,
}

impl Cidr {
    fn width(self) -> u32 {
        if self.v4 { 32 } else { 128 }
    }

    fn mask(self) -> u128 {
        let host = self.width() - self.len;
        let all = if self.v4 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }

    /// Whether `other` lies within this network.
    fn contains(self, other: Cidr) -> bool {
        self.v4 == other.v4 && self.len <= other.len && (other.bits & self.mask()) == self.bits
    }

    /// The two halves of a network (one bit longer).
    fn halves(self) -> [Cidr; 2] {
        let len = self.len + 1;
        let bit = 1u128 << (self.width() - len);
        [
            Cidr { len, ..self },
            Cidr {
                len,
                bits: self.bits | bit,
                ..self
            },
        ]
    }

    fn address(self) -> Address {
        let ip = if self.v4 {
            IpAddr::from((self.bits as u32).to_be_bytes())
        } else {
            IpAddr::from(self.bits.to_be_bytes())
        };
        Address {
            address: super::super::services::ip_bytes(ip),
            length: self.len,
        }
    }
}

/// Parses `10.0.0.0/8`, `fd00::/8` or a single address; host bits are cleared.
fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let bad = || format!("{text:?} is not a CIDR");
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (
            ip.parse::<IpAddr>().map_err(|_| bad())?,
            Some(len.parse::<u32>().map_err(|_| bad())?),
        ),
        None => (text.parse::<IpAddr>().map_err(|_| bad())?, None),
    };
    let (v4, bits) = match ip {
        IpAddr::V4(a) => (true, u128::from(u32::from(a))),
        IpAddr::V6(a) => (false, u128::from(a)),
    };
    let width = if v4 { 32 } else { 128 };
    let len = len.unwrap_or(width);
    if len > width {
        return Err(bad());
    }
    let cidr = Cidr { v4, bits, len };
    Ok(Cidr {
        bits: bits & cidr.mask(),
        ..cidr
    })
}

/// `cidr` without the networks of `except`: the networks left, as few as the split allows.
fn subtract(cidr: Cidr, except: &[Cidr]) -> Vec<Cidr> {
    let mut left = vec![cidr];
    for e in except {
        left = left.into_iter().flat_map(|c| without(c, *e)).collect();
    }
    left
}

fn without(c: Cidr, e: Cidr) -> Vec<Cidr> {
    if e.contains(c) {
        Vec::new()
    } else if c.contains(e) {
        c.halves().into_iter().flat_map(|h| without(h, e)).collect()
    } else {
        vec![c]
    }
}

/// One network of a NetworkAuthentication (`cidr`, `except`) as the networks it admits.
/// Errors are (field suffix, message).
pub(super) fn network(cidr: &str, except: &[String]) -> Result<Vec<Address>, (String, String)> {
    let net = parse_cidr(cidr).map_err(|m| ("cidr".to_owned(), m))?;
    let except = except
        .iter()
        .enumerate()
        .map(|(i, e)| parse_cidr(e).map_err(|m| (format!("except[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(subtract(net, &except)
        .into_iter()
        .map(Cidr::address)
        .collect())
}

/// The controller's cluster networks, those that parse.
pub(super) fn cluster_networks(cidrs: &[String]) -> Vec<Address> {
    cidrs
        .iter()
        .filter_map(|c| parse_cidr(c.trim()).ok())
        .map(Cidr::address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> StringMatch {
        matching(MatchType::Exact(s.into()))
    }

    #[test]
    fn linkerd_identities_become_principals_of_the_trust_domain() {
        let td = "cluster.local";
        let id = |s: &str| linkerd_identity(s, td).map(|(m, _)| m);
        assert_eq!(
            id("web.shop.serviceaccount.identity.linkerd.cluster.local"),
            Ok(exact("cluster.local/ns/shop/sa/web"))
        );
        assert_eq!(
            id("*.shop.serviceaccount.identity.linkerd.cluster.local"),
            Ok(namespace(td, "shop"))
        );
        assert_eq!(
            id("*.serviceaccount.identity.linkerd.cluster.local"),
            Ok(matching(MatchType::Prefix("cluster.local/ns/".into())))
        );
        assert_eq!(id("*"), Ok(any()));
        assert_eq!(
            id("spiffe://cluster.local/ns/a/sa/b"),
            Ok(exact("cluster.local/ns/a/sa/b"))
        );
        for bad in [
            "web.shop",
            "w*b.shop.serviceaccount.identity.linkerd.x",
            "",
            "a*",
        ] {
            assert!(id(bad).is_err(), "{bad}");
        }
        let (m, warning) =
            linkerd_identity("a.b.serviceaccount.identity.linkerd.east.example", td).unwrap();
        assert_eq!(m, exact("east.example/ns/b/sa/a"));
        assert!(warning.is_some_and(|w| w.contains("matches no workload")));
    }

    #[test]
    fn exceptions_are_subtracted_from_a_network() {
        let nets = network("10.0.0.0/8", &["10.1.0.0/16".into()]).unwrap();
        let text: Vec<String> = nets
            .iter()
            .map(|a| format!("{:?}/{}", a.address, a.length))
            .collect();
        // 10/8 minus 10.1/16: eight networks from /9 down to /16, none holding 10.1.x.x.
        assert_eq!(nets.len(), 8, "{text:?}");
        let holds = |ip: [u8; 4]| {
            nets.iter().any(|a| {
                let c = parse_cidr(&format!(
                    "{}.{}.{}.{}/{}",
                    a.address[0], a.address[1], a.address[2], a.address[3], a.length
                ))
                .unwrap();
                c.contains(parse_cidr(&format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])).unwrap())
            })
        };
        assert!(holds([10, 2, 3, 4]));
        assert!(holds([10, 0, 0, 1]));
        assert!(!holds([10, 1, 2, 3]));
        assert!(!holds([11, 0, 0, 1]));
        assert_eq!(
            network("10.0.0.0/8", &["10.0.0.0/7".into()]),
            Ok(Vec::new())
        );
        assert_eq!(
            network("10.0.0.0/33", &[]).map_err(|e| e.0),
            Err("cidr".to_owned())
        );
        assert_eq!(
            network("10.0.0.0/8", &["nope".into()]).map_err(|e| e.0),
            Err("except[0]".to_owned())
        );
        assert_eq!(network("fd00::/8", &[]).map(|n| n.len()), Ok(1));
    }
}
