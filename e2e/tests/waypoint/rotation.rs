//! CA rotation under load: HTTP through the waypoint at a fixed rate and long-lived TCP
//! connections between pods on different nodes for the whole test, leaf certificates living
//! seconds, one complete `meshctl ca rotate-root`, a second one with the controller restarted
//! in phase 3, then `meshctl ca replace` with a plugged-in intermediate of an offline root and
//! with a second intermediate of the same root. Not one request may fail and every connection
//! must still carry data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::manifests::tcp_echo_pod;
use e2e::mesh::{captured, certificate_serials, in_netns, ztunnel_dump, ztunnel_metrics};
use e2e::metrics::metric_sum;
use e2e::{Component, Options, SETTLE, Sandbox, eventually, json};
use hbone::Authority;
use hbone::cert::{certificates_from_pem, serial_hex};
use meshctl::app::load_report::LoadReport;
use test_support::TempDir;

use super::shop::{self, CLIENT, NS, ORDERS};

/// Leaf lifetime of every workload and of the waypoint, seconds.
const LEAF_TTL: &str = "6";
/// How long one rotation may take: the controller waits 20 s after a start before it
/// believes its list of proxies, then a leaf lifetime for phase 4.
const ROTATION: Duration = Duration::from_secs(120);
const ECHO_PORT: u16 = 9000;

fn meshctl_json(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = sb
        .run(&args)
        .unwrap_or_else(|e| panic!("meshctl {args:?}: {e}"));
    json(String::from_utf8_lossy(&out.stdout).trim())
}

fn ca_status(sb: &Sandbox) -> serde_json::Value {
    meshctl_json(sb, &["ca", "status", "-o", "json"])
}

/// The controller's `/metrics`, from the host through the forwarded admin port.
fn controller_metrics(sb: &Sandbox) -> String {
    let addr: SocketAddr = sb
        .controller_admin_url()
        .trim_start_matches("http://")
        .parse()
        .expect("admin address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(test_support::raw_http::try_get(addr, "/metrics"))
        .map(|reply| reply.body)
        .unwrap_or_default()
}

/// Long-lived connections from the client pod to the TCP echo pod on the other node.
struct Held(Vec<TcpStream>);

impl Held {
    fn open(sb: &Sandbox, target: SocketAddr, count: usize) -> Self {
        let netns = sb.netns_path(&format!("{NS}.client"));
        let streams = in_netns(&netns, || {
            (0..count)
                .map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(5)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap()
        .expect("connections to the echo pod");
        for stream in &streams {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut banner = String::new();
            BufReader::new(stream).read_line(&mut banner).unwrap();
            assert_eq!(banner.trim(), "tcp-echo", "the echo pod's banner");
        }
        Held(streams)
    }

    /// Sends a line on every connection and reads it back.
    fn ping(&mut self, round: u64) {
        for (i, stream) in self.0.iter_mut().enumerate() {
            let line = format!("round {round} on connection {i}\n");
            stream
                .write_all(line.as_bytes())
                .expect("write on a held connection");
            let mut echoed = vec![0; line.len()];
            stream
                .read_exact(&mut echoed)
                .unwrap_or_else(|e| panic!("connection {i} in round {round}: {e}"));
            assert_eq!(echoed, line.as_bytes());
        }
    }
}

/// What the test watches while the load runs: every certificate serial seen per identity,
/// the rotation phases seen, and the connections pinged.
struct Watch<'a> {
    sb: &'a Sandbox,
    held: Held,
    serials: BTreeMap<String, BTreeSet<String>>,
    phases: Vec<u64>,
    round: u64,
}

impl Watch<'_> {
    /// One round of checks; the `ca status` it read.
    fn tick(&mut self) -> serde_json::Value {
        self.round += 1;
        self.held.ping(self.round);
        for node in ["node1", "node2"] {
            for (identity, serial) in certificate_serials(self.sb, node) {
                self.serials.entry(identity).or_default().insert(serial);
            }
        }
        let status = ca_status(self.sb);
        if let Some(phase) = status["phase_number"].as_u64()
            && self.phases.last() != Some(&phase)
        {
            self.phases.push(phase);
        }
        std::thread::sleep(Duration::from_millis(500));
        status
    }

    /// Ticks until `ca status` satisfies `done`.
    fn until(
        &mut self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let status = self.tick();
            if done(&status) {
                return status;
            }
            assert!(start.elapsed() < ROTATION, "never saw {what}: {status:#}");
        }
    }
}

/// Runs chunks of 100 requests at 20 per second through the waypoint until `stop`.
fn steady_load(sb: &Sandbox, stop: &AtomicBool) -> Vec<LoadReport> {
    let url = format!("{ORDERS}/steady");
    let mut reports = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        reports.push(shop::load(
            sb,
            CLIENT,
            &url,
            100,
            &["-c", "2", "--rate", "20"],
        ));
    }
    reports
}

/// The serial of the root every certificate a ztunnel holds was issued by.
fn issuing_roots(sb: &Sandbox) -> BTreeSet<String> {
    dumped(sb, "root_serial")
}

/// The values of `field` of every certificate the ztunnels hold.
fn dumped(sb: &Sandbox, field: &str) -> BTreeSet<String> {
    ["node1", "node2"]
        .iter()
        .flat_map(|node| {
            let dump = ztunnel_dump(sb, node);
            let certificates = dump["certificates"].as_array().cloned().unwrap_or_default();
            certificates
                .iter()
                .map(|c| {
                    c["certificate"][field]
                        .as_str()
                        .unwrap_or("none")
                        .to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Writes an intermediate of `root` named `name` in Istio's plug-in layout into a new folder.
fn plug_in_folder(root: &Authority, name: &str) -> (TempDir, String) {
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (key, cert) = root.issue_intermediate(name, now - day, now + day).unwrap();
    let dir = TempDir::new("e2e-plug-in");
    dir.write("ca-key.pem", &key);
    dir.write("ca-cert.pem", &cert);
    dir.write("cert-chain.pem", format!("{cert}{}", root.root_pem()));
    dir.write("root-cert.pem", root.root_pem());
    let der = certificates_from_pem(&cert, "intermediate")
        .unwrap()
        .remove(0);
    (dir, serial_hex(&der).unwrap())
}

/// The serial of the certificate that signed each certificate the ztunnels hold.
fn issuers(sb: &Sandbox) -> BTreeSet<String> {
    dumped(sb, "issuer_serial")
}

/// Sandbox, TCP echo pod on the node other than the client's; the client's node and the echo
/// pod's address.
fn setup() -> (Sandbox, String, SocketAddr) {
    let options = Options {
        ztunnel_args: vec![format!("--cert-ttl-secs={LEAF_TTL}")],
        waypoint_args: vec![format!("--cert-ttl-secs={LEAF_TTL}")],
        ..Options::default()
    };
    let sb = shop::up_with(options);
    let client_node = sb.pod("client").unwrap().node;
    let echo_node = if client_node == "node1" {
        "node2"
    } else {
        "node1"
    };
    sb.apply(&tcp_echo_pod(NS, "tcp-echo", echo_node, ECHO_PORT))
        .unwrap();
    assert!(
        eventually(SETTLE, || captured(&sb, echo_node)
            .contains(&format!("{NS}/tcp-echo"))),
        "the echo pod is captured"
    );
    let echo = SocketAddr::from((sb.pod_ip("tcp-echo").unwrap(), ECHO_PORT));
    (sb, client_node, echo)
}

/// Starts a rotation with `args` and waits for it to complete; the final status.
fn rotate(watch: &mut Watch<'_>, what: &str, args: &[&str]) -> serde_json::Value {
    let before = ca_status(watch.sb)["completed_at"].as_u64().unwrap_or(0);
    let started = meshctl_json(watch.sb, args);
    assert_eq!(started["phase_number"], 1, "{what}: {started:#}");
    watch.until(what, |s| {
        s["phase_number"] == 0 && s["completed_at"].as_u64() > Some(before)
    })
}

/// Two root rotations (the controller restarted in phase 3 of the second), then two
/// plugged-in intermediates of an offline root, the second replacing the first.
fn rotations(watch: &mut Watch<'_>) {
    let sb = watch.sb;
    let rotate_root = ["ca", "rotate-root", "--reissue-within", "2s", "-o", "json"];
    let done = rotate(watch, "the first root rotation", &rotate_root);
    let first_root = done["roots"][0][0].as_str().unwrap().to_owned();
    assert_eq!(done["roots"].as_array().unwrap().len(), 1, "{done:#}");
    assert!(
        eventually(SETTLE, || issuing_roots(sb)
            == BTreeSet::from([first_root.clone()])),
        "every certificate chains to the new root: {:?}",
        issuing_roots(sb)
    );

    // A longer window keeps phase 3 open while `check` runs and the controller restarts.
    let slow = ["ca", "rotate-root", "--reissue-within", "15s", "-o", "json"];
    meshctl_json(sb, &slow);
    watch.until("phase 3 of the second rotation", |s| s["phase_number"] == 3);
    let check = sb.command().args(["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("a CA rotation is in phase 3"),
        "check names the rotation: {text}"
    );
    sb.restart(&Component::Controller).unwrap();
    let resumed = ca_status(sb);
    assert_eq!(
        resumed["phase_number"], 3,
        "resumed in phase 3: {resumed:#}"
    );
    let done = watch.until("the second rotation complete", |s| {
        s["phase_number"] == 0 && s["completed_at"].as_u64() >= resumed["since"].as_u64()
    });
    assert_ne!(
        done["roots"][0][0].as_str().unwrap(),
        first_root,
        "a second new root"
    );
    let completed = controller_metrics(sb);
    assert_eq!(
        metric_sum(
            &completed,
            "controller_ca_root_rotations_completed_total",
            &[]
        ),
        1.0,
        "the second rotation, completed after the restart"
    );

    let offline = Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap();
    let offline_serial = serial_hex(&offline.roots()[0]).unwrap();
    for name in ["intermediate one", "intermediate two"] {
        let (folder, serial) = plug_in_folder(&offline, name);
        let path = folder.path().display().to_string();
        let args = [
            "ca",
            "replace",
            &path,
            "--reissue-within",
            "2s",
            "-o",
            "json",
        ];
        let done = rotate(watch, name, &args);
        assert_eq!(done["roots"].as_array().unwrap().len(), 1, "{done:#}");
        assert!(
            eventually(SETTLE, || issuers(sb) == BTreeSet::from([serial.clone()])),
            "every certificate is issued by {name}: {:?}",
            issuers(sb)
        );
        assert_eq!(issuing_roots(sb), BTreeSet::from([offline_serial.clone()]));
    }
}

#[test]
fn roots_and_intermediates_rotate_under_load_without_a_failed_request_or_a_dropped_connection() {
    let (sb, client_node, echo) = setup();
    let mut watch = Watch {
        sb: &sb,
        held: Held::open(&sb, echo, 3),
        serials: BTreeMap::new(),
        phases: Vec::new(),
        round: 0,
    };
    let stop = AtomicBool::new(false);
    let reports = std::thread::scope(|s| {
        let load = s.spawn(|| steady_load(&sb, &stop));
        rotations(&mut watch);
        for _ in 0..4 {
            let _ = watch.tick();
        }
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });

    // Not one request failed, and the connections held all along still carry data.
    let sent: u64 = reports
        .iter()
        .map(|r| r.statuses.values().sum::<u64>())
        .sum();
    let ok: u64 = reports.iter().map(|r| r.count(200)).sum();
    let errors: Vec<_> = reports.iter().flat_map(|r| r.errors.clone()).collect();
    let counts: BTreeMap<&String, usize> =
        watch.serials.iter().map(|(i, s)| (i, s.len())).collect();
    eprintln!(
        "{sent} requests, {} pings on {} held connections, phases {:?}, certificates per identity {counts:?}",
        watch.round,
        watch.held.0.len(),
        watch.phases
    );
    assert!(
        sent >= 600,
        "the load ran through every rotation: {sent} requests"
    );
    assert_eq!(
        (ok, errors.len()),
        (sent, 0),
        "every request answered 200: {errors:?}"
    );
    watch.held.ping(u64::MAX);

    // Leaves rotated at least three times per workload; the phases were each seen.
    for identity in [
        "spiffe://cluster.local/ns/shop/sa/client",
        "spiffe://cluster.local/ns/shop/sa/orders",
    ] {
        let seen = watch.serials.get(identity).map_or(0, BTreeSet::len);
        assert!(seen >= 4, "{identity}: {seen} certificates seen");
    }
    assert!(
        watch.phases.windows(3).any(|w| w == [1, 3, 0]),
        "phases seen: {:?}",
        watch.phases
    );
    assert_metrics(&sb, &client_node);
}

/// The controller's rotation families at rest, and the client ztunnel's renewals.
fn assert_metrics(sb: &Sandbox, client_node: &str) {
    let metrics = controller_metrics(sb);
    let family = |name: &str, labels: &[(&str, &str)]| metric_sum(&metrics, name, labels);
    assert_eq!(family("controller_ca_rotation_phase", &[]), 0.0);
    assert_eq!(
        family("controller_ca_root_rotations_completed_total", &[]),
        3.0
    );
    let proxies = "controller_trust_bundle_proxies";
    assert_eq!(family(proxies, &[("state", "stale")]), 0.0);
    assert!(family(proxies, &[("state", "current")]) >= 3.0);
    let renewed = ztunnel_metrics(sb, client_node).map_or(0.0, |m| {
        metric_sum(
            &m,
            "ztunnel_certificate_requests_total",
            &[("result", "success")],
        )
    });
    assert!(
        renewed >= 8.0,
        "the client's ztunnel renewed certificates: {renewed}"
    );
}
