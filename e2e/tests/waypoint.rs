//! The waypoint on the sandbox, through real ztunnels: each scenario of `examples/l7` in a
//! sandbox of its own (unique names, so the tests run in parallel), built from
//! `examples/l7/base` with the scenario's folder applied on top, driven with
//! `meshctl app load` from the shop's client pods (raw bytes, where a request must be
//! malformed, with bash's `/dev/tcp`), and judged by counts: which version
//! answered, which statuses came back, how many requests each echo server saw, and what the
//! waypoint's metrics say. Only the delay scenario looks at latency, since latency is what it
//! adds.

#[path = "waypoint/grpc.rs"]
mod grpc;
#[path = "waypoint/limits.rs"]
mod limits;
#[path = "waypoint/linkerd_l7.rs"]
mod linkerd_l7;
#[path = "waypoint/outlier.rs"]
mod outlier;
#[path = "waypoint/rotation.rs"]
mod rotation;
#[path = "waypoint/routes.rs"]
mod routes;
#[path = "waypoint/shop.rs"]
mod shop;
#[path = "waypoint/stat.rs"]
mod stat;
#[path = "waypoint/stat_prometheus.rs"]
mod stat_prometheus;
#[path = "waypoint/tap.rs"]
mod tap;
#[path = "waypoint/tcproute.rs"]
mod tcproute;
#[path = "waypoint/top.rs"]
mod top;
#[path = "waypoint/websocket.rs"]
mod websocket;
#[path = "waypoint/xfcc.rs"]
mod xfcc;

use e2e::{Options, SETTLE, Sandbox, eventually};
use meshctl::app::load_report::LoadReport;
use shop::{
    API_GATEWAY, CLIENT, NS, ORDERS, RequestCounts, apply_example, by_deployment, load,
    replies_from, served, served_settled, waypoint_log,
};

/// Requests of a weighted-split run.
const SPLIT_REQUESTS: u64 = 2000;
/// Expected share of v2 in a 90/10 split.
const CANARY_SHARE: f64 = 0.10;
/// Allowed deviation of the observed share: over 2000 requests one standard deviation of a
/// 10 % share is 0.67 %, so 3 % is more than four of them.
const SHARE_TOLERANCE: f64 = 0.03;

fn url(path: &str) -> String {
    format!("{ORDERS}{path}")
}

/// Fails with the report and the waypoint's log.
fn explain(sb: &Sandbox, what: &str, report: &LoadReport) -> String {
    format!(
        "{what}\nreport: statuses {:?}, by pod {:?}, errors {:?}\n--- waypoint log\n{}",
        report.statuses,
        report.by_pod,
        report.errors,
        waypoint_log(sb)
    )
}

/// Waits until a probe run of `probe` satisfies `done` (the scenario's config has reached the
/// waypoint), failing with the last report.
fn wait_for(
    sb: &Sandbox,
    what: &str,
    probe: impl Fn() -> LoadReport,
    done: impl Fn(&LoadReport) -> bool,
) {
    let mut last = None;
    let ok = eventually(SETTLE, || {
        let report = probe();
        let ok = done(&report);
        last = Some(report);
        ok
    });
    if !ok {
        let report = last.expect("at least one probe ran");
        panic!("{}", explain(sb, &format!("never saw {what}"), &report));
    }
}

/// Asserts that `report` splits 90/10 between orders-v1 and orders-v2 within tolerance.
fn assert_canary_split(sb: &Sandbox, report: &LoadReport) {
    assert_eq!(
        report.count(200),
        SPLIT_REQUESTS,
        "{}",
        explain(sb, "every request succeeds", report)
    );
    let versions = by_deployment(report);
    let v1 = versions.get("orders-v1").copied().unwrap_or_default();
    let v2 = versions.get("orders-v2").copied().unwrap_or_default();
    assert_eq!(
        v1 + v2,
        SPLIT_REQUESTS,
        "only v1 and v2 answer: {versions:?}"
    );
    let share = v2 as f64 / SPLIT_REQUESTS as f64;
    assert!(
        (share - CANARY_SHARE).abs() <= SHARE_TOLERANCE,
        "v2 got {:.1} % of {SPLIT_REQUESTS} requests, expected {:.0} % ± {:.0} % ({versions:?})",
        share * 100.0,
        CANARY_SHARE * 100.0,
        SHARE_TOLERANCE * 100.0
    );
}

/// Probe for a split: 200 requests, where the base's even balance would give v2 about half
/// and a 90/10 split about 20.
fn wait_for_split(sb: &Sandbox) {
    wait_for(
        sb,
        "the 90/10 split",
        || load(sb, CLIENT, &url("/"), 200, &["-c", "8"]),
        |r| r.count(200) == 200 && replies_from(r, "orders-v2") < 60,
    );
}

#[test]
fn a_waypoint_gateway_deploys_a_waypoint_pod_and_service_and_removing_it_removes_them() {
    // Checks only what the sandbox and the controller make of the Gateway, so the
    // ztunnels are not needed.
    let sb = Sandbox::up_with(
        &shop::example("base").display().to_string(),
        Options {
            ztunnel: false,
            ..Options::default()
        },
    )
    .expect("sandbox up");
    let waypoint_pods = || -> Vec<e2e::PodInfo> {
        sb.pods()
            .expect("pods")
            .into_iter()
            .filter(|p| {
                p.labels.get("gateway.networking.k8s.io/gateway-name") == Some(&"waypoint".into())
            })
            .collect()
    };
    let pods = waypoint_pods();
    assert_eq!(pods.len(), 1, "one waypoint replica: {pods:?}");
    let pod = &pods[0];
    assert_eq!(pod.namespace, NS);
    assert!(pod.name.starts_with("waypoint-"), "{}", pod.name);
    assert_eq!(pod.labels["istio.io/dataplane-mode"], "none");

    let cluster = meshctl::sandbox::host::state::peek(&sb.state_dir()).expect("sandbox state");
    let record = &cluster.pods[&format!("{NS}/{}", pod.name)];
    assert_eq!(record.service_account, "waypoint");
    let service = cluster
        .find("Service", Some(NS), "waypoint")
        .expect("a Service named after the Gateway");
    let ports: Vec<(String, u64)> = service.object.value["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(ports.contains(&("mesh".into(), 15008)), "{ports:?}");

    // The waypoint's own token, mapped to its identity without a node.
    let info = sb.controller_info().expect("controller info");
    let token_file = info.tokens_dir.join("waypoint-shop.waypoint");
    let token = std::fs::read_to_string(&token_file).expect("waypoint token file");
    let tokens = std::fs::read_to_string(sb.state_dir().join("tokens.yaml")).expect("tokens.yaml");
    let map: std::collections::BTreeMap<String, serde_json::Value> =
        serde_yaml_ng::from_str(&tokens).expect("tokens.yaml parses");
    assert_eq!(
        map[token.trim()]["identity"],
        "spiffe://cluster.local/ns/shop/sa/waypoint"
    );
    assert!(map[token.trim()].get("node").is_none());

    // The controller points the bound services at the waypoint's Service.
    let waypoint_of_orders = || {
        let dump = sb.config_dump().expect("config dump");
        dump["type.googleapis.com/istio.workload.Address"]["shop/orders.shop.svc.cluster.local"]
            ["resource"]["service"]["waypoint"]["hostname"]
            .as_str()
            .map(String::from)
    };
    assert!(
        eventually(SETTLE, || waypoint_of_orders().as_deref()
            == Some("shop/waypoint.shop.svc.cluster.local")),
        "orders uses the waypoint: {:?}",
        waypoint_of_orders()
    );

    sb.delete(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: shop}\n",
    )
    .expect("deleting the Gateway");
    assert!(waypoint_pods().is_empty(), "the waypoint pod is gone");
    let cluster = meshctl::sandbox::host::state::peek(&sb.state_dir()).expect("sandbox state");
    for kind in ["Deployment", "Service", "ServiceAccount"] {
        assert!(
            cluster.find(kind, Some(NS), "waypoint").is_none(),
            "{kind} waypoint is gone"
        );
    }
    assert!(!token_file.exists(), "the waypoint's token is revoked");
}

#[test]
fn the_app_behind_the_waypoint_sees_the_original_client_ip() {
    let sb = shop::up();
    let client_ip = sb.pod_ip("client").expect("client pod");
    let out = sb
        .try_http(CLIENT, &url("/who"), 5000)
        .expect("request through the waypoint");
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the echo server answers JSON");
    let seen = reply["client"].as_str().unwrap_or_default();
    let waypoint_ip = sb
        .pods()
        .expect("pods")
        .into_iter()
        .find(|p| {
            p.labels.get("gateway.networking.k8s.io/gateway-name") == Some(&"waypoint".into())
        })
        .map(|p| p.ip.to_string())
        .unwrap_or_default();
    assert!(
        seen.starts_with(&format!("{client_ip}:")),
        "orders saw {seen}; the client is {client_ip}, the waypoint {waypoint_ip}"
    );
}

#[test]
fn canary_beta_users_always_reach_v2_others_split_90_10_over_http1_and_http2_and_metrics_count_every_request()
 {
    let sb = shop::up();
    apply_example(&sb, "canary");
    let beta = ["-H", "x-beta-user: true", "-c", "4"];
    wait_for(
        &sb,
        "beta users routed to v2",
        || load(&sb, CLIENT, &url("/"), 20, &beta),
        |r| replies_from(r, "orders-v2") == 20,
    );
    wait_for_split(&sb);

    let before = RequestCounts::read(&sb, "orders");
    let report = load(&sb, CLIENT, &url("/"), SPLIT_REQUESTS, &["-c", "8"]);
    assert_canary_split(&sb, &report);
    let beta_report = load(&sb, CLIENT, &url("/"), 200, &beta);
    assert_eq!(
        replies_from(&beta_report, "orders-v2"),
        200,
        "{}",
        explain(&sb, "beta users always reach v2", &beta_report)
    );
    assert_eq!(beta_report.count(200), 200);

    let counted = RequestCounts::read(&sb, "orders").since(&before);
    let sent = (SPLIT_REQUESTS + 200) as f64;
    assert_eq!(
        counted.requests, sent,
        "istio_requests_total counts every request: {counted:?}"
    );
    assert_eq!(counted.ok, sent, "... each with response_code 200");
    assert_eq!(
        counted.durations, sent,
        "istio_request_duration_milliseconds observes each"
    );
    assert_eq!(
        counted.request_sizes, sent,
        "istio_request_bytes observes each"
    );
    assert_eq!(
        counted.response_sizes, sent,
        "istio_response_bytes observes each"
    );

    // HTTP/2 with prior knowledge is detected on the connection and routed the same way.
    let h2 = load(
        &sb,
        CLIENT,
        &url("/"),
        200,
        &["--http2", "-H", "x-beta-user: true", "-c", "4"],
    );
    assert_eq!(
        replies_from(&h2, "orders-v2"),
        200,
        "{}",
        explain(&sb, "h2c beta users reach v2", &h2)
    );
}

#[test]
fn mirroring_returns_only_v1_while_v2_receives_a_copy_of_each_request() {
    let sb = shop::up();
    apply_example(&sb, "mirror");
    wait_for(
        &sb,
        "all traffic on v1",
        || load(&sb, CLIENT, &url("/"), 20, &["-c", "4"]),
        |r| replies_from(r, "orders-v1") == 20 && r.count(200) == 20,
    );
    let v2_before = served_settled(&sb, "orders-v2");
    let sent = 200;
    let report = load(&sb, CLIENT, &url("/mirrored"), sent, &["-c", "4"]);
    assert_eq!(
        report.count(200),
        sent,
        "{}",
        explain(&sb, "every request succeeds", &report)
    );
    assert_eq!(
        replies_from(&report, "orders-v1"),
        sent,
        "{}",
        explain(&sb, "only v1 answers", &report)
    );
    let mut copies = 0;
    let arrived = eventually(SETTLE, || {
        copies = served(&sb, "orders-v2") - v2_before;
        copies >= sent
    });
    assert!(arrived, "v2 received {copies} of {sent} mirrored requests");
    assert_eq!(
        served_settled(&sb, "orders-v2") - v2_before,
        sent,
        "one copy per request"
    );
}

#[test]
fn fault_injection_aborts_about_half_and_delays_by_the_configured_latency() {
    let sb = shop::up();
    apply_example(&sb, "fault");
    wait_for(
        &sb,
        "injected aborts",
        || load(&sb, CLIENT, &url("/"), 40, &["-c", "4"]),
        |r| r.count(503) > 0,
    );
    let v1_before = served_settled(&sb, "orders-v1");
    let v2_before = served_settled(&sb, "orders-v2");
    let sent = 400;
    let report = load(&sb, CLIENT, &url("/"), sent, &["-c", "4"]);
    let (aborted, ok) = (report.count(503), report.count(200));
    assert_eq!(
        aborted + ok,
        sent,
        "{}",
        explain(&sb, "only 200 and 503", &report)
    );
    let share = aborted as f64 / sent as f64;
    assert!(
        (0.35..=0.65).contains(&share),
        "{}",
        explain(
            &sb,
            &format!("about half aborted, got {aborted} of {sent}"),
            &report
        )
    );
    // Aborted requests never reach orders (and are not retried).
    let reached =
        served_settled(&sb, "orders-v1") - v1_before + served_settled(&sb, "orders-v2") - v2_before;
    assert_eq!(
        reached, ok,
        "orders saw exactly the requests that were not aborted"
    );

    // The delay scenario is about latency: every /slow request takes the configured 1 s more.
    let slow = load(&sb, CLIENT, &url("/slow"), 5, &["-c", "1"]);
    assert_eq!(
        slow.count(200),
        5,
        "{}",
        explain(&sb, "delayed requests succeed", &slow)
    );
    assert!(
        slow.latency_ms.p50 >= 1000.0,
        "delayed by at least 1 s: {:?}",
        slow.latency_ms
    );
}

#[test]
fn retries_turn_upstream_503s_into_successes() {
    let sb = shop::up();
    apply_example(&sb, "retries");
    wait_for(
        &sb,
        "the retry route to the flaky v1",
        || load(&sb, CLIENT, &url("/"), 20, &["-c", "2"]),
        |r| replies_from(r, "orders-v1") == 20,
    );
    let served_before = served_settled(&sb, "orders-v1");
    let sent = 200u64;
    // A modest rate keeps retries well inside any retry budget.
    let report = load(&sb, CLIENT, &url("/"), sent, &["-c", "2", "--rate", "20"]);
    let failed = sent - report.count(200);
    // Four attempts fail together with probability 0.3^4 < 1 %: 2 expected, 8 tolerated.
    assert!(
        failed <= 8,
        "{}",
        explain(
            &sb,
            &format!("{failed} of {sent} requests still failed"),
            &report
        )
    );
    let attempts = served_settled(&sb, "orders-v1") - served_before;
    // About 1.43 attempts per request at a 30 % failure rate; without retries exactly 1.
    assert!(
        attempts as f64 >= sent as f64 * 1.2,
        "v1 saw {attempts} attempts for {sent} requests: failures were retried"
    );
}

#[test]
fn a_route_timeout_answers_504_when_the_upstream_is_slower() {
    let sb = shop::up();
    apply_example(&sb, "timeout");
    wait_for(
        &sb,
        "the 500 ms timeout",
        || load(&sb, CLIENT, &url("/?latency_ms=2000"), 1, &[]),
        |r| r.count(504) == 1,
    );
    let slow = load(&sb, CLIENT, &url("/?latency_ms=2000"), 4, &["-c", "2"]);
    assert_eq!(
        slow.count(504),
        4,
        "{}",
        explain(&sb, "slow answers time out", &slow)
    );
    let fast = load(&sb, CLIENT, &url("/"), 20, &["-c", "2"]);
    assert_eq!(
        fast.count(200),
        20,
        "{}",
        explain(&sb, "fast answers pass", &fast)
    );
}

#[test]
fn connection_pool_limits_shed_excess_concurrent_load_with_503() {
    let sb = shop::up();
    apply_example(&sb, "circuit-breaking");
    // 20 at once against a pool of one request in flight and one waiting, each held 300 ms.
    let burst = || load(&sb, CLIENT, &url("/?latency_ms=300"), 60, &["-c", "20"]);
    wait_for(&sb, "shed load", burst, |r| r.count(503) > 0);
    let report = burst();
    let (shed, ok) = (report.count(503), report.count(200));
    assert_eq!(
        shed + ok,
        60,
        "{}",
        explain(&sb, "only 200 and 503", &report)
    );
    assert!(
        shed >= 20,
        "{}",
        explain(&sb, "most of the burst is shed", &report)
    );
    assert!(
        ok >= 1,
        "{}",
        explain(&sb, "the pool still serves", &report)
    );
    // One at a time fits the pool.
    let serial = load(&sb, CLIENT, &url("/"), 10, &["-c", "1"]);
    assert_eq!(
        serial.count(200),
        10,
        "{}",
        explain(&sb, "no shedding without excess", &serial)
    );
}

#[test]
fn only_the_api_gateway_may_post_orders_and_others_get_403() {
    let sb = shop::up();
    apply_example(&sb, "authz");
    let post = ["-X", "POST", "-d", "{\"item\": 1}", "-c", "2"];
    wait_for(
        &sb,
        "POST denied to the client",
        || load(&sb, CLIENT, &url("/orders/1"), 4, &post),
        |r| r.count(403) == 4,
    );
    let cases: [(&str, &[&str], &str, u16); 5] = [
        (CLIENT, &post, "/orders/1", 403),
        (API_GATEWAY, &post, "/orders/1", 200),
        (API_GATEWAY, &post, "/orders", 200),
        (CLIENT, &["-c", "2"], "/orders", 200),
        (API_GATEWAY, &["-X", "DELETE", "-c", "2"], "/orders/1", 403),
    ];
    for (from, args, path, status) in cases {
        let report = load(&sb, from, &url(path), 10, args);
        assert_eq!(
            report.count(status),
            10,
            "{}",
            explain(&sb, &format!("{from} {args:?} {path} → {status}"), &report)
        );
    }
}

#[test]
fn a_deny_all_policy_on_the_waypoint_denies_every_request() {
    let sb = shop::up();
    let allowed = load(&sb, CLIENT, &url("/"), 10, &["-c", "2"]);
    assert_eq!(
        allowed.count(200),
        10,
        "{}",
        explain(&sb, "allowed before", &allowed)
    );
    apply_example(&sb, "deny-all");
    wait_for(
        &sb,
        "requests denied",
        || load(&sb, CLIENT, &url("/"), 4, &["-c", "2"]),
        |r| r.count(403) == 4,
    );
    for from in [CLIENT, API_GATEWAY] {
        for args in [&["-c", "2"][..], &["-X", "POST", "-d", "x", "-c", "2"][..]] {
            let report = load(&sb, from, &url("/orders"), 20, args);
            assert_eq!(
                report.count(403),
                20,
                "{}",
                explain(&sb, &format!("{from} denied"), &report)
            );
        }
    }
}

/// Waits for the 10-a-minute limit, then checks 30 requests in a row: the bucket holds 10
/// (drained by the probe, and refilled at most once while the run lasts), so at most 20 pass
/// and the rest are answered 429.
fn assert_rate_limited(sb: &Sandbox, form: &str) {
    let run = |n: u64| load(sb, CLIENT, &url("/"), n, &["-c", "1"]);
    wait_for(
        sb,
        &format!("the {form} rate limit"),
        || run(12),
        |r| r.count(429) > 0,
    );
    let report = run(30);
    let (limited, ok) = (report.count(429), report.count(200));
    assert_eq!(
        limited + ok,
        30,
        "{}",
        explain(sb, "only 200 and 429", &report)
    );
    assert!(
        limited >= 10,
        "{}",
        explain(sb, &format!("{form}: beyond the bucket is 429"), &report)
    );
}

#[test]
fn local_rate_limits_answer_429_beyond_the_bucket_by_annotation_and_by_envoyfilter() {
    let sb = shop::up();
    apply_example(&sb, "rate-limit/annotation");
    assert_rate_limited(&sb, "annotation");

    // Back to the base Service (no annotation): no limit at all, so 12 in a row all pass
    // (the old bucket would have refused at least two).
    apply_example(&sb, "base");
    wait_for(
        &sb,
        "the annotation's limit lifted",
        || load(&sb, CLIENT, &url("/"), 12, &["-c", "1"]),
        |r| r.count(200) == 12,
    );
    apply_example(&sb, "rate-limit/envoyfilter");
    assert_rate_limited(&sb, "EnvoyFilter");
}

#[test]
fn traffic_split_weights_900m_100m_split_like_the_virtual_service() {
    let sb = shop::up();
    apply_example(&sb, "traffic-split");
    wait_for_split(&sb);
    // The split routes to other Services: the metrics name the backend that served.
    let read = || {
        let (v1, v2) = (
            RequestCounts::read(&sb, "orders-v1"),
            RequestCounts::read(&sb, "orders-v2"),
        );
        (v1.requests + v2.requests, v2.requests)
    };
    let (all_before, v2_before) = read();
    let report = load(&sb, CLIENT, &url("/"), SPLIT_REQUESTS, &["-c", "8"]);
    assert_canary_split(&sb, &report);
    let (all_after, v2_after) = read();
    assert_eq!(
        all_after - all_before,
        SPLIT_REQUESTS as f64,
        "istio_requests_total counts every request"
    );
    assert_eq!(
        (v2_after - v2_before) as u64,
        replies_from(&report, "orders-v2"),
        "... under the backend that served it"
    );
}

#[test]
fn httproute_backend_weights_split_like_the_virtual_service() {
    let sb = shop::up();
    apply_example(&sb, "httproute");
    wait_for_split(&sb);
    let report = load(&sb, CLIENT, &url("/"), SPLIT_REQUESTS, &["-c", "8"]);
    assert_canary_split(&sb, &report);
}
