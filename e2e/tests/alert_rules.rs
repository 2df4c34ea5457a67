//! The certificate and root rotation alerts of `manifests/prometheus-rules.yaml`, evaluated by Prometheus's own
//! `promtool` on series named as the proxies and the controller export them: each alert fires
//! on the failure it is for and stays quiet on the healthy series beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use controller::ca::metrics::{
    BUNDLE_PROXIES, CHAIN_EXPIRY, REFUSED, ROOT_EXPIRY, ROOTS, ROTATION_PHASE, ROTATION_SINCE,
};
use proxy_core::identity::metrics::{EXPIRATION, EXPIRY, ISSUED, REQUESTS, ROOT_EXPIRATION};
use test_support::TempDir;

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/prometheus-rules.yaml")
}

/// The PrometheusRule's `spec`: a plain rules file.
fn rules_file(dir: &TempDir) -> PathBuf {
    let text = std::fs::read_to_string(manifest()).expect("the rules manifest");
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    path
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) is installed by scripts/host-packages.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn every_metric_the_rules_use_is_one_the_mesh_exports() {
    let text = std::fs::read_to_string(manifest()).unwrap();
    let proxies = [EXPIRY, EXPIRATION, ISSUED, REQUESTS, ROOT_EXPIRATION];
    for family in proxies {
        assert!(
            text.contains(&format!("(ztunnel|waypoint)_{family}")),
            "{family} unused"
        );
    }
    for family in [ROOT_EXPIRY, CHAIN_EXPIRY, ROOTS] {
        assert!(text.contains(family), "{family} unused");
    }
    // And no other family: every name the rules match is one of those.
    let word = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("(ztunnel|waypoint)_") {
        let name = word(&text[at + "(ztunnel|waypoint)_".len()..]);
        assert!(
            proxies.contains(&name.as_str()),
            "the rules use {name:?}, which nothing exports"
        );
    }
    for family in [BUNDLE_PROXIES, ROTATION_PHASE, ROTATION_SINCE] {
        assert!(text.contains(family), "{family} unused");
    }
    let controller = [
        ROOT_EXPIRY,
        CHAIN_EXPIRY,
        ROOTS,
        REFUSED,
        BUNDLE_PROXIES,
        ROTATION_PHASE,
        ROTATION_SINCE,
    ];
    for prefix in ["citadel_", "controller_"] {
        for (at, _) in text.match_indices(prefix) {
            let name = word(&text[at..]);
            assert!(
                controller.contains(&name.as_str()),
                "the rules use {name:?}, which nothing exports"
            );
        }
    }
}

/// Series over an hour, one sample a minute, and what must (and must not) fire.
const TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  # A 4000 s certificate not renewed (its time left runs down), and one renewed.
  - series: 'ztunnel_certificate_expiry_seconds{identity="spiffe://cluster.local/ns/shop/sa/stuck",instance="node1",job="ztunnel"}'
    values: '4000-60x60'
  - series: 'ztunnel_certificate_expiration_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/stuck",instance="node1",job="ztunnel"}'
    values: '4000x60'
  - series: 'ztunnel_certificate_issued_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/stuck",instance="node1",job="ztunnel"}'
    values: '0x60'
  - series: 'waypoint_certificate_expiry_seconds{identity="spiffe://cluster.local/ns/shop/sa/waypoint",instance="wp",job="waypoint"}'
    values: '3000x60'
  - series: 'waypoint_certificate_expiration_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/waypoint",instance="wp",job="waypoint"}'
    values: '4000x60'
  - series: 'waypoint_certificate_issued_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/waypoint",instance="wp",job="waypoint"}'
    values: '0x60'
  # One proxy failing every minute, one that failed once long ago.
  - series: 'ztunnel_certificate_requests_total{result="failure",instance="node1",job="ztunnel"}'
    values: '0+1x60'
  - series: 'waypoint_certificate_requests_total{result="failure",instance="wp",job="waypoint"}'
    values: '1x60'
  # A root with 30 days left (less than 60, more than 7); a signer with 10 days left.
  - series: 'citadel_server_root_cert_expiry_timestamp{instance="controller",job="controller"}'
    values: '2592000x60'
  - series: 'citadel_server_cert_chain_expiry_timestamp{instance="controller",job="controller"}'
    values: '864000x60'
  # The controller publishes root aa; node1 still trusts bb beside it.
  - series: 'controller_ca_root_expiration_timestamp_seconds{serial="aa",instance="controller",job="controller"}'
    values: '2592000x60'
  - series: 'ztunnel_trust_bundle_root_expiration_timestamp_seconds{serial="aa",instance="node1",job="ztunnel"}'
    values: '2592000x60'
  - series: 'ztunnel_trust_bundle_root_expiration_timestamp_seconds{serial="bb",instance="node1",job="ztunnel"}'
    values: '2592000x60'
  # Two proxies stale for 20 minutes, then current; a rotation in phase 1 since time 0.
  - series: 'controller_trust_bundle_proxies{state="stale",instance="controller",job="controller"}'
    values: '2x20 0x40'
  - series: 'controller_ca_rotation_phase{instance="controller",job="controller"}'
    values: '1x90'
  - series: 'controller_ca_rotation_phase_start_timestamp_seconds{instance="controller",job="controller"}'
    values: '0x90'
  alert_rule_test:
  - eval_time: 10m
    alertname: MeshTrustBundleNotLoaded
  - eval_time: 18m
    alertname: MeshTrustBundleNotLoaded
    exp_alerts:
    - exp_labels: {severity: warning, state: stale, instance: controller, job: controller}
      exp_annotations:
        summary: "2 proxies have not loaded the served trust bundle"
        description: "They are listed by `meshctl ca status`; see `meshctl proxy-status` for NACKs or disconnections."
  - eval_time: 40m
    alertname: MeshTrustBundleNotLoaded
  - eval_time: 50m
    alertname: MeshRootRotationStuck
  - eval_time: 70m
    alertname: MeshRootRotationStuck
    exp_alerts:
    - exp_labels: {severity: warning, instance: controller, job: controller}
      exp_annotations:
        summary: "The root rotation has waited in phase 1 for 1h 10m 0s"
        description: "The new root is published but not signing yet: `meshctl ca status` says which proxies it waits for."
  - eval_time: 40m
    alertname: MeshCertificateNotRenewed
  - eval_time: 58m
    alertname: MeshCertificateNotRenewed
    exp_alerts:
    - exp_labels: {severity: critical, identity: "spiffe://cluster.local/ns/shop/sa/stuck", instance: node1, job: ztunnel}
      exp_annotations:
        summary: "Certificate of spiffe://cluster.local/ns/shop/sa/stuck on node1 is not being renewed"
        description: "8m 40s left and no renewal: see the proxy's log ('certificate request failed') and `meshctl proxy-config certs`."
  - eval_time: 5m
    alertname: MeshCertificateRenewalsFailing
  - eval_time: 20m
    alertname: MeshCertificateRenewalsFailing
    exp_alerts:
    - exp_labels: {severity: warning, instance: node1, job: ztunnel}
      exp_annotations:
        summary: "Certificate requests from node1 keep failing"
        description: "The CA refuses or does not answer: see `meshctl check` and the controller's controller_ca_certificates_refused_total by reason."
  - eval_time: 10m
    alertname: MeshRootCertificateExpiringSoon
    exp_alerts:
    - exp_labels: {severity: warning, instance: controller, job: controller}
      exp_annotations:
        summary: "The mesh's CA root expires in 29d 23h 50m 0s"
        description: "Rotate the root before it expires: every workload certificate chains to it."
  - eval_time: 10m
    alertname: MeshSigningCertificateExpiringSoon
    exp_alerts:
    - exp_labels: {severity: warning, instance: controller, job: controller}
      exp_annotations:
        summary: "The CA's signing certificate expires in 9d 23h 50m 0s"
        description: "Replace the plugged-in intermediate (cacerts) before it expires."
  - eval_time: 10m
    alertname: MeshProxyTrustsRetiredRoot
  - eval_time: 30m
    alertname: MeshProxyTrustsRetiredRoot
    exp_alerts:
    - exp_labels: {severity: warning, serial: bb, instance: node1, job: ztunnel}
      exp_annotations:
        summary: "node1 trusts root bb, which the controller no longer publishes"
        description: "The proxy is on an old trust bundle: see `meshctl proxy-status`."
"#;

#[test]
fn promtool_accepts_the_rules_and_each_alert_fires_on_its_failure_only() {
    let dir = TempDir::new("e2e-alert-rules");
    rules_file(&dir);
    promtool(&["check", "rules", "rules.yaml"], dir.path());
    std::fs::write(dir.join("tests.yaml"), TESTS).unwrap();
    promtool(&["test", "rules", "tests.yaml"], dir.path());
}
