use std::collections::BTreeMap;

use test_support::capture::logged;

use super::*;

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict parser of the text exposition format's sample and comment lines: fails the test on
/// anything it does not understand, so malformed output cannot pass.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, (String, String)>) {
    let mut samples = Vec::new();
    let mut meta: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            meta.entry(name.into()).or_default().0 = help.into();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            meta.entry(name.into()).or_default().1 = kind.into();
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_at(line.find(' ').expect("sample has a value")),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            loop {
                let start = chars.clone().next().expect("label set closes").0;
                let (eq, _) = chars.find(|&(_, c)| c == '=').expect("label has =");
                let key = body[start..eq].trim_start_matches(',').to_owned();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'));
                let mut value = String::new();
                loop {
                    match chars.next().expect("value closes") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c}"),
                        },
                        (_, '"') => break,
                        (_, c) => value.push(c),
                    }
                }
                assert!(labels.insert(key, value).is_none(), "duplicate label");
                match chars.next().expect("label set continues") {
                    (_, ',') => continue,
                    (i, '}') => {
                        rest = &body[i + 1..];
                        break;
                    }
                    (_, c) => panic!("unexpected {c}"),
                }
            }
        }
        let value: f64 = rest.trim().parse().expect("numeric value");
        samples.push((name.to_owned(), labels, value));
    }
    (samples, meta)
}

fn labels(reporter: Reporter) -> ConnectionLabels {
    ConnectionLabels {
        reporter: Some(reporter),
        source_workload: "client".into(),
        source_workload_namespace: "shop".into(),
        source_principal: "spiffe://cluster.local/ns/shop/sa/client".into(),
        destination_workload: "orders".into(),
        destination_workload_namespace: "shop".into(),
        destination_principal: "spiffe://cluster.local/ns/shop/sa/orders".into(),
        destination_service: "orders.shop.svc.cluster.local".into(),
        connection_security_policy: "mutual_tls".into(),
        ..Default::default()
    }
}

fn record(labels: ConnectionLabels, sent: u64, received: u64) -> ConnectionRecord {
    ConnectionRecord {
        labels,
        source: "10.0.0.1:40000".parse().unwrap(),
        destination: "10.0.0.2:8080".parse().unwrap(),
        bytes_sent: sent,
        bytes_received: received,
        duration: Duration::from_millis(1500),
        error: None,
    }
}

fn value(samples: &[Sample], name: &str, reporter: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && l.get("reporter").map(String::as_str) == Some(reporter))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn render_parses_and_counts() {
    let metrics = Metrics::new();
    let source = labels(Reporter::Source);
    let destination = labels(Reporter::Destination);
    metrics.connection_opened(&source);
    metrics.connection_opened(&source);
    metrics.connection_opened(&destination);
    metrics.connection_closed(&record(source.clone(), 100, 2000));
    metrics.connection_closed(&record(destination, 100, 2000));

    let (samples, meta) = parse(&metrics.render());
    for name in [OPENED, CLOSED, SENT, RECEIVED] {
        let (help, kind) = &meta[name];
        assert!(!help.is_empty(), "{name} has HELP");
        assert_eq!(kind, "counter", "{name}");
    }
    assert_eq!(meta[BUILD].1, "gauge");
    assert_eq!(value(&samples, OPENED, "source"), 2.0);
    assert_eq!(value(&samples, OPENED, "destination"), 1.0);
    assert_eq!(value(&samples, CLOSED, "source"), 1.0);
    // Istio's convention: "received" is the request direction (client → server).
    assert_eq!(value(&samples, RECEIVED, "source"), 100.0);
    assert_eq!(value(&samples, SENT, "source"), 2000.0);
    assert_eq!(value(&samples, RECEIVED, "destination"), 100.0);
    assert_eq!(value(&samples, SENT, "destination"), 2000.0);

    let (_, set, _) = samples
        .iter()
        .find(|(n, l, _)| n == OPENED && l["reporter"] == "source")
        .unwrap();
    let expected = [
        "reporter",
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_service",
        "destination_service_namespace",
        "destination_service_name",
        "destination_workload",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_cluster",
        "request_protocol",
        "response_flags",
        "connection_security_policy",
    ];
    assert_eq!(set.len(), expected.len());
    for key in expected {
        assert!(set.contains_key(key), "missing label {key}");
    }
    assert_eq!(set["source_principal"], source.source_principal);
    assert_eq!(set["source_app"], "unknown", "empty values read unknown");
    assert_eq!(set["request_protocol"], "tcp");
    assert_eq!(set["response_flags"], "-");
    assert_eq!(set["connection_security_policy"], "mutual_tls");
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    let odd = ConnectionLabels {
        source_workload: "a\"b\\c\nd".into(),
        response_flags: "DENY".into(),
        ..Default::default()
    };
    metrics.connection_opened(&odd);
    let (samples, _) = parse(&metrics.render());
    let (_, set, v) = samples.iter().find(|(n, _, _)| n == OPENED).unwrap();
    assert_eq!(*v, 1.0);
    assert_eq!(set["source_workload"], "a\"b\\c\nd");
    assert_eq!(set["reporter"], "unknown");
    assert_eq!(set["response_flags"], "DENY");
    assert_eq!(set["connection_security_policy"], "unknown");
}

#[test]
fn registries_are_independent() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.connection_opened(&labels(Reporter::Source));
    let (samples, _) = parse(&b.render());
    assert_eq!(value(&samples, OPENED, "source"), 0.0);
    let (samples, _) = parse(&a.render());
    assert_eq!(value(&samples, OPENED, "source"), 1.0);
}

#[test]
fn counts_from_many_threads() {
    let metrics = Metrics::new();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                let mut l = labels(Reporter::Source);
                l.source_workload = format!("client-{}", i % 2);
                for _ in 0..250 {
                    metrics.connection_opened(&l);
                    metrics.connection_closed(&record(l.clone(), 1, 2));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (samples, _) = parse(&metrics.render());
    assert_eq!(value(&samples, OPENED, "source"), 1000.0);
    assert_eq!(value(&samples, CLOSED, "source"), 1000.0);
    assert_eq!(value(&samples, RECEIVED, "source"), 1000.0);
    assert_eq!(value(&samples, SENT, "source"), 2000.0);
    let series = samples.iter().filter(|(n, _, _)| n == OPENED).count();
    assert_eq!(series, 2);
}

fn log_of(record: &ConnectionRecord) -> String {
    let metrics = Metrics::new();
    logged(|| metrics.connection_closed(record))
}

#[test]
fn access_log_line() {
    let mut r = record(labels(Reporter::Source), 100, 2000);
    r.error = Some("upstream reset".into());
    let line = log_of(&r);
    assert_eq!(line.lines().count(), 1, "{line}");
    for part in [
        "INFO",
        "access",
        "connection complete",
        "src.addr=10.0.0.1:40000",
        "dst.addr=10.0.0.2:8080",
        "src.workload=\"client\"",
        "dst.workload=\"orders\"",
        "src.identity=\"spiffe://cluster.local/ns/shop/sa/client\"",
        "dst.identity=\"spiffe://cluster.local/ns/shop/sa/orders\"",
        "direction=\"outbound\"",
        "bytes_sent=100",
        "bytes_recv=2000",
        "duration=1500ms",
        "error=\"upstream reset\"",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }

    // The destination side logs from the server's point of view; without mutual TLS no
    // identity is claimed.
    let mut inbound = record(labels(Reporter::Destination), 100, 2000);
    inbound.labels.connection_security_policy = String::new();
    let line = log_of(&inbound);
    assert!(line.contains("direction=\"inbound\""), "{line}");
    assert!(line.contains("bytes_sent=2000"), "{line}");
    assert!(line.contains("bytes_recv=100"), "{line}");
    assert!(!line.contains("identity"), "{line}");
    assert!(!line.contains("error"), "{line}");

    // A waypoint takes the receiving side's view too.
    let line = log_of(&record(labels(Reporter::Waypoint), 100, 2000));
    assert!(line.contains("direction=\"inbound\""), "{line}");
    assert!(line.contains("bytes_sent=2000"), "{line}");
}

#[test]
fn waypoints_report_as_waypoint() {
    let metrics = Metrics::new();
    metrics.connection_closed(&record(labels(Reporter::Waypoint), 3, 4));
    let (samples, _) = parse(&metrics.render());
    assert_eq!(value(&samples, CLOSED, "waypoint"), 1.0);
    assert_eq!(value(&samples, RECEIVED, "waypoint"), 3.0);
    assert_eq!(value(&samples, SENT, "waypoint"), 4.0);
}

#[test]
fn limits_render_per_listener_and_reason_under_the_component() {
    let metrics = Metrics::for_component("waypoint");
    let hbone = metrics.connection_limits(HBONE_LISTENER);
    hbone.record(hbone::Limit::Idle);
    hbone.record(hbone::Limit::PerPeerLimit);
    metrics
        .connection_limits("http")
        .record(hbone::Limit::HeaderTimeout);
    assert!(Arc::ptr_eq(
        &hbone,
        &metrics.connection_limits(HBONE_LISTENER)
    ));

    let (samples, meta) = parse(&metrics.render());
    let get = |name: &str, listener: &str, reason: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l["listener"] == listener && l["reason"] == reason)
            .map(|(_, _, v)| *v)
    };
    let closed = "waypoint_connections_closed_total";
    let refused = "waypoint_connections_refused_total";
    assert_eq!(meta[closed].1, "counter");
    assert_eq!(meta[refused].1, "counter");
    assert_eq!(get(closed, "hbone", "idle"), Some(1.0));
    assert_eq!(get(closed, "hbone", "tls_handshake_timeout"), Some(0.0));
    assert_eq!(get(closed, "http", "header_timeout"), Some(1.0));
    assert_eq!(get(refused, "hbone", "per_peer_limit"), Some(1.0));
    assert_eq!(
        get(closed, "hbone", "per_peer_limit"),
        None,
        "a refusal is not a close"
    );
    assert!(
        Metrics::new()
            .render()
            .contains("ztunnel_connections_closed_total{listener=\"hbone\",reason=\"idle\"} 0"),
        "a ztunnel names them after itself, at zero from the start"
    );
}
