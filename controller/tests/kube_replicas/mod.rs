//! Controller replicas (the binary) in Kubernetes mode against one fake API server, each
//! through a front end of its own so that the requests of each are told apart; shared by
//! the tests of leader election and of root rotation in Kubernetes mode.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use test_support::fake_kube::{FakeKube, Reply, Request};
use test_support::process::KillOnDrop;
use test_support::wait::within;
use test_support::{TempDir, raw_http};

/// The Lease collection of the root namespace.
pub const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";

/// One controller process, its own front end to the cluster, its admin and gRPC addresses.
pub struct Replica {
    /// Its pod name, and holder identity in the Lease.
    pub name: &'static str,
    /// Its front end to the cluster.
    pub front: FakeKube,
    /// Its admin endpoint.
    pub admin: SocketAddr,
    /// Its gRPC endpoint (xDS and the CA).
    pub xds: SocketAddr,
    /// The process, until killed.
    pub process: Option<KillOnDrop>,
    _dir: TempDir,
}

/// A free loopback port.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

impl Replica {
    /// Starts the controller as pod `name`, with a 2 s lease so that tests are quick, its
    /// requests answered by `answer`.
    pub fn start(
        name: &'static str,
        answer: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let front = FakeKube::serve(answer);
        let dir = TempDir::new(&format!("controller-{name}"));
        let kubeconfig = front.kubeconfig(dir.path());
        let (admin, xds) = (free_port(), free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args([
                "--kubernetes",
                &format!("--xds-addr={xds}"),
                &format!("--admin-addr={admin}"),
                "--leader-elect-lease-duration=2s",
                "--leader-elect-renew-deadline=1500ms",
                "--leader-elect-retry-period=200ms",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", name)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("controller starts");
        Self {
            name,
            front,
            admin,
            xds,
            process: Some(KillOnDrop(child)),
            _dir: dir,
        }
    }

    /// Every request but reads, as `METHOD path`, except those of the Lease (a replica that
    /// loses the race to create it has tried to).
    pub fn writes(&self) -> Vec<String> {
        self.front
            .seen()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with(LEASES))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Whether it sent `write` (`METHOD path`).
    pub fn has_written(&self, write: &str) -> bool {
        self.writes().iter().any(|w| w == write)
    }

    /// Waits until its `/ready` answers 200.
    pub async fn until_ready(&self) {
        within(&format!("{} ready", self.name), async {
            while !raw_http::try_get(self.admin, "/ready")
                .await
                .is_ok_and(|reply| reply.status == 200)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}
