//! Which proxies have loaded the served trust bundle: every xDS client subscribed to it has
//! ACKed the version being served. Clients that do not subscribe (node agents, proxies that
//! learn roots only from their certificates) are counted apart.

use serde::Serialize;

use crate::xds::ClientStatus;

/// How far the served trust bundle has reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Subscribed clients that ACKed the served version.
    pub current: usize,
    /// Subscribed clients that did not (yet), by node id (or identity before it named itself).
    pub stale: Vec<String>,
    /// Connected clients that do not subscribe to the trust bundle.
    pub not_subscribed: usize,
}

impl Progress {
    /// Whether every subscribed client holds the served bundle.
    pub fn complete(&self) -> bool {
        self.stale.is_empty()
    }
}

/// The progress of `version` of `type_url` among `clients`.
pub fn of(clients: &[ClientStatus], type_url: &str, version: &str) -> Progress {
    let mut progress = Progress::default();
    for client in clients {
        match client.types.get(type_url) {
            None => progress.not_subscribed += 1,
            Some(status) if status.acked.as_deref() == Some(version) => progress.current += 1,
            Some(_) => progress.stale.push(if client.node.is_empty() {
                client.identity.clone()
            } else {
                client.node.clone()
            }),
        }
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::TypeStatus;

    fn client(node: &str, acked: Option<&str>) -> ClientStatus {
        let mut status = ClientStatus {
            node: node.into(),
            identity: format!("spiffe://cluster.local/ns/istio-system/sa/{node}"),
            ..Default::default()
        };
        if let Some(acked) = acked {
            let state = TypeStatus {
                sent: Some("v2".into()),
                acked: (!acked.is_empty()).then(|| acked.to_owned()),
                nacked: None,
            };
            status.types.insert("bundle".into(), state);
        }
        status
    }

    #[test]
    fn counts_current_stale_and_unsubscribed_clients() {
        let clients = [
            client("ztunnel-node1", Some("v2")),
            client("ztunnel-node2", Some("v1")),
            client("waypoint", Some("")),
            client("agent-node1", None),
        ];
        let progress = of(&clients, "bundle", "v2");
        assert_eq!(progress.current, 1);
        assert_eq!(progress.stale, ["ztunnel-node2", "waypoint"]);
        assert_eq!(progress.not_subscribed, 1);
        assert!(!progress.complete());
        assert!(of(&clients[..1], "bundle", "v2").complete());
        assert!(of(&[], "bundle", "v2").complete());
    }
}
