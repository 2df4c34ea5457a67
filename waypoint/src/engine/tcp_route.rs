//! A service port's TCP route (Gateway API TCPRoute): weighted backends, one picked per
//! connection; the share of backends that did not resolve is refused.

use api::waypoint as pb;

use super::compile::ConfigError;

/// One backend of a TCP route: a service and the port to reach it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpBackend {
    /// `<name>.<namespace>.svc.<domain>`.
    pub hostname: String,
    /// Namespace of the service.
    pub namespace: String,
    /// Service port; 0: the port the connection arrived on.
    pub port: u16,
}

/// What a connection on a routed port is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpChoice {
    /// This backend.
    Backend(TcpBackend),
    /// A backend that did not resolve: the connection is refused.
    Unresolved,
}

/// A compiled TCP route.
#[derive(Debug)]
pub(crate) struct TcpRouteEntry {
    /// The service port it applies to.
    pub port: u16,
    /// Backends with their weights (each > 0).
    backends: Vec<(TcpBackend, u64)>,
    /// The weight of the unresolved backends.
    unresolved: u64,
}

impl TcpRouteEntry {
    /// Compiles one route; `field` names it in errors.
    pub(crate) fn compile(r: &pb::TcpRoute, field: &str) -> Result<Self, ConfigError> {
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ConfigError(format!("{field}.port: {} is not a port", r.port)))?;
        let mut backends = Vec::new();
        for (i, d) in r.destinations.iter().enumerate() {
            let at = format!("{field}.destinations[{i}]");
            let dest = d
                .destination
                .as_ref()
                .ok_or_else(|| ConfigError(format!("{at}: no destination")))?;
            if d.weight == 0 {
                return Err(ConfigError(format!("{at}.weight: 0")));
            }
            let port = u16::try_from(dest.port)
                .map_err(|_| ConfigError(format!("{at}.port: {} out of range", dest.port)))?;
            let backend = TcpBackend {
                hostname: dest.hostname.clone(),
                namespace: dest.namespace.clone(),
                port,
            };
            backends.push((backend, u64::from(d.weight)));
        }
        let unresolved = u64::from(r.unresolved_weight);
        if backends.is_empty() && unresolved == 0 {
            return Err(ConfigError(format!("{field}: no backend and no weight")));
        }
        Ok(Self {
            port,
            backends,
            unresolved,
        })
    }

    /// A backend for one connection, at random in proportion to the weights.
    pub(crate) fn pick(&self) -> TcpChoice {
        let total = self.backends.iter().map(|(_, w)| w).sum::<u64>() + self.unresolved;
        self.pick_at(fastrand::u64(0..total))
    }

    /// The backend at `point` of the weights laid end to end (`point` < their sum).
    fn pick_at(&self, mut point: u64) -> TcpChoice {
        for (backend, weight) in &self.backends {
            if point < *weight {
                return TcpChoice::Backend(backend.clone());
            }
            point -= weight;
        }
        TcpChoice::Unresolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weights: &[(&str, u32)], unresolved: u32) -> pb::TcpRoute {
        pb::TcpRoute {
            port: 9000,
            destinations: weights
                .iter()
                .map(|(name, w)| pb::WeightedDestination {
                    destination: Some(pb::Destination {
                        hostname: format!("{name}.shop.svc.cluster.local"),
                        namespace: "shop".into(),
                        port: 9000,
                        ..Default::default()
                    }),
                    weight: *w,
                    ..Default::default()
                })
                .collect(),
            unresolved_weight: unresolved,
            ..Default::default()
        }
    }

    fn name(pick: TcpChoice) -> String {
        match pick {
            TcpChoice::Backend(b) => b.hostname[..2].to_string(),
            TcpChoice::Unresolved => "--".to_string(),
        }
    }

    #[test]
    fn weights_lay_backends_end_to_end_then_the_unresolved_share() {
        let entry = TcpRouteEntry::compile(&route(&[("v1", 3), ("v2", 1)], 2), "r").unwrap();
        let picks: Vec<String> = (0..6).map(|p| name(entry.pick_at(p))).collect();
        assert_eq!(picks, ["v1", "v1", "v1", "v2", "--", "--"]);
        assert_eq!(entry.port, 9000);
    }

    #[test]
    fn random_picks_stay_within_the_backends() {
        let entry = TcpRouteEntry::compile(&route(&[("v2", 1)], 0), "r").unwrap();
        assert!((0..100).all(|_| name(entry.pick()) == "v2"));
        let refused = TcpRouteEntry::compile(&route(&[], 1), "r").unwrap();
        assert_eq!(refused.pick(), TcpChoice::Unresolved);
    }

    #[test]
    fn bad_routes_are_refused_naming_the_field() {
        let err = TcpRouteEntry::compile(&route(&[("v1", 0)], 0), "services[0].tcp_routes[0]")
            .unwrap_err();
        assert_eq!(err.0, "services[0].tcp_routes[0].destinations[0].weight: 0");
        let err = TcpRouteEntry::compile(&route(&[], 0), "r").unwrap_err();
        assert_eq!(err.0, "r: no backend and no weight");
        let mut zero_port = route(&[("v1", 1)], 0);
        zero_port.port = 0;
        assert!(TcpRouteEntry::compile(&zero_port, "r").is_err());
    }
}
