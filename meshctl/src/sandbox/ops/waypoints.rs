//! Waypoints in a running sandbox: the objects of every waypoint Gateway
//! ([`crate::sandbox::model::waypoints`]) stored beside it and removed with
//! it, a bearer token per waypoint, and the files a waypoint's pods may read.

use std::path::PathBuf;

use super::sandbox::{Change, Sandbox};
use super::tokens;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::state;
use crate::sandbox::model::cluster::Pod;
use crate::sandbox::model::waypoints::{gateways, is_generated, plan};

impl Sandbox {
    /// The files of the state folder pod `pod` may read: a waypoint's pods
    /// get their own token and the root certificate (what the projected
    /// service-account token and the `istio-ca-root-cert` ConfigMap of the
    /// template give them on Kubernetes); every other pod gets nothing. A
    /// waypoint pod is one of the Deployment generated for a waypoint
    /// Gateway (a user's object of that name is replaced by the generated
    /// one, so labels alone cannot claim a token).
    pub(crate) fn granted_files(&self, pod: &Pod) -> Vec<PathBuf> {
        let Some(owner) = &pod.owner else {
            return Vec::new();
        };
        let ns = pod.namespace.as_str();
        let gateway = gateways(&self.cluster)
            .into_iter()
            .any(|g| g.namespace == ns && g.name == owner.deployment);
        let generated = self.cluster.objects.iter().any(|a| {
            a.object.kind == "Deployment"
                && a.object.namespace.as_deref() == Some(ns)
                && a.object.name == owner.deployment
                && is_generated(&a.object)
        });
        if !(gateway && generated) {
            return Vec::new();
        }
        let layout = self.layout();
        vec![
            layout.waypoint_token_file(ns, &owner.deployment),
            layout.root_cert(),
        ]
    }

    /// Brings the waypoint objects and tokens in line with the Gateways:
    /// stores the generated ServiceAccount, Deployment and Service of every
    /// waypoint Gateway, removes those of Gateways that are gone, and issues
    /// (or revokes) the waypoints' tokens. A sandbox without a control plane
    /// runs no waypoints: nothing could configure them.
    pub(super) fn sync_waypoints(&mut self) -> Result<()> {
        let Some(control_ip) = self.cluster.control.as_ref().map(|c| c.ip) else {
            return Ok(());
        };
        let layout = self.layout();
        let gateways = gateways(&self.cluster);
        let binary = self.cfg.bin_dir.join("waypoint");
        if !gateways.is_empty() && !binary.is_file() {
            self.say(format!(
                "warning: {} not found: waypoint pods will fail (build it with \
                 `cargo build -p waypoint`, or point --bin-dir at the folder holding it)",
                binary.display()
            ));
        }
        // The token exists before the pod that reads it starts.
        let nodes: Vec<String> = self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let pairs: Vec<(String, String)> = gateways
            .iter()
            .map(|g| (g.namespace.clone(), g.name.clone()))
            .collect();
        tokens::sync_waypoints(&layout, &nodes, &pairs)?;

        let (wanted, stale) =
            plan(&self.cluster, &layout, control_ip).map_err(SandboxError::Invalid)?;
        let now = state::now();
        for object in stale {
            self.cluster
                .objects
                .retain(|a| !a.object.same_identity(&object));
            self.say(format!("{} deleted (waypoint)", object.resource_name()));
        }
        for mut object in wanted {
            if object.kind == "Service" {
                self.assign_cluster_ip(&mut object)?;
            }
            let name = object.resource_name();
            let change = self.store(object, now);
            if change != Change::Unchanged {
                self.say(format!("{name} {} (waypoint)", change.as_str()));
            }
        }
        Ok(())
    }
}
