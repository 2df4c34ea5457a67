//! How the election is run: which Lease, who this replica is, and its timings.

use std::time::Duration;

/// The Lease the controller's replicas compete for, in the controller's namespace.
pub const LEASE_NAME: &str = "mesh-controller-leader";

/// Settings of the leader election, with Kubernetes' defaults (as kube-controller-manager's
/// `--leader-elect-*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderSettings {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease: the controller's own.
    pub namespace: String,
    /// `holderIdentity` of this replica: its pod name.
    pub identity: String,
    /// How long followers wait after the last renewal they observed before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal before it steps down.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderSettings {
    /// The defaults for `identity` in `namespace`: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            lease_name: LEASE_NAME.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Refuses timings under which two replicas could both lead: the leader must step down
    /// (renew deadline) before followers consider the lease expired (lease duration), and
    /// must get to retry within the deadline.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader election identity is empty (set POD_NAME)".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err("--leader-elect-lease-duration must be at least 1s".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than \
                 --leader-elect-lease-duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-elect-retry-period ({:?}) must be above zero and shorter than \
                 --leader-elect-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// `leaseDurationSeconds` as written in the Lease: whole seconds, rounded up.
    pub fn lease_duration_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(millis).unwrap_or(i32::MAX)
    }
}

/// This replica's identity: `POD_NAME` (the downward API), else the host name (a pod's host
/// name is its name).
pub fn identity_from_env() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}
