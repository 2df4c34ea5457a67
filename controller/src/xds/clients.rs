//! Who is connected over xDS and how far each client is synced: for every type, the version
//! last sent, the version the client last ACKed and its last NACK. Served at the admin
//! endpoint's `/debug/syncz` (as istiod serves it) for `meshctl proxy-status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The connected clients, shared by the streams (which update their own entry) and the admin
/// endpoint (which reads them all).
#[derive(Clone, Default)]
pub struct Clients {
    entries: Arc<Mutex<BTreeMap<u64, ClientStatus>>>,
}

/// One connected client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientStatus {
    /// `node.id` of its requests (`ztunnel~<ip>~<pod>.<ns>~...`, `router~...`); empty until
    /// its first request names it.
    pub node: String,
    /// The identity it authenticated as.
    pub identity: String,
    /// When it connected, seconds since the epoch.
    pub connected_at: u64,
    /// By type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// How far one type is synced with one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// The system version of the last response sent.
    pub sent: Option<String>,
    /// The system version of the last response the client ACKed.
    pub acked: Option<String>,
    /// The error of the client's last NACK, cleared by its next ACK.
    pub nacked: Option<String>,
}

impl Clients {
    /// Adds a client that authenticated as `identity`; it leaves when the returned entry drops.
    pub fn connect(&self, identity: &str) -> ClientEntry {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.lock().insert(
            id,
            ClientStatus {
                identity: identity.to_owned(),
                connected_at,
                ..ClientStatus::default()
            },
        );
        ClientEntry {
            clients: self.clone(),
            id,
        }
    }

    /// Every connected client, in order of connection.
    pub fn list(&self) -> Vec<ClientStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ClientStatus>> {
        // A panic while holding it leaves a consistent map: every update is one assignment.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One stream's entry in [`Clients`].
pub struct ClientEntry {
    clients: Clients,
    id: u64,
}

impl ClientEntry {
    fn update(&self, change: impl FnOnce(&mut ClientStatus)) {
        if let Some(status) = self.clients.lock().get_mut(&self.id) {
            change(status);
        }
    }

    /// The client named itself.
    pub fn named(&self, node: &str) {
        self.update(|s| s.node = node.to_owned());
    }

    /// A response of `type_url` at `version` was sent.
    pub fn sent(&self, type_url: &str, version: &str) {
        self.update(|s| {
            s.types.entry(type_url.to_owned()).or_default().sent = Some(version.to_owned());
        });
    }

    /// The client ACKed the response of `type_url` at `version`.
    pub fn acked(&self, type_url: &str, version: &str) {
        self.update(|s| {
            let state = s.types.entry(type_url.to_owned()).or_default();
            state.acked = Some(version.to_owned());
            state.nacked = None;
        });
    }

    /// The client NACKed the last response of `type_url`, saying `error`.
    pub fn nacked(&self, type_url: &str, error: &str) {
        self.update(|s| {
            s.types.entry(type_url.to_owned()).or_default().nacked = Some(error.to_owned());
        });
    }
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_listed_while_connected_with_what_it_acked_and_nacked() {
        let clients = Clients::default();
        let entry = clients.connect("spiffe://cluster.local/ns/istio-system/sa/ztunnel");
        entry.named("ztunnel~10.0.0.1~ztunnel-node1.istio-system~istio-system.svc.cluster.local");
        entry.sent("address", "v1");
        entry.acked("address", "v1");
        entry.sent("address", "v2");
        entry.nacked("address", "bad workload");
        let listed = clients.list();
        assert_eq!(listed.len(), 1);
        let address = &listed[0].types["address"];
        assert_eq!(address.sent.as_deref(), Some("v2"));
        assert_eq!(address.acked.as_deref(), Some("v1"));
        assert_eq!(address.nacked.as_deref(), Some("bad workload"));
        entry.acked("address", "v2");
        assert_eq!(clients.list()[0].types["address"].nacked, None);
        drop(entry);
        assert!(clients.list().is_empty());
    }
}
