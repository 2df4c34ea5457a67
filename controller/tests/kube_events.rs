//! Kubernetes Events about the problems of objects, against a fake API server on a loopback
//! socket: what is POSTed for a cluster the controller reads (source → translation → Event
//! writer), and, round by round, that a standing problem is told once, a fixed one is
//! forgotten, a persisting one updates its series, the rate limit refuses past its burst, and
//! a 403 is counted without holding up status conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use controller::admin::Readiness;
use controller::events::{EventMetrics, EventResult, EventSettings, EventWriter, Limits, Tally};
use controller::model::{Index, ObjectKey, Problem};
use controller::pipeline::{self, Outputs};
use controller::source::kube::{Observed, ObservedMap, WatchedKind};
use controller::source::{KubeSettings, KubeSource};
use controller::status;
use controller::translate::{TranslateOptions, Translator};
use serde_json::{Value, json};
use test_support::fake_kube::{FakeKube, Reply, Request, Routes, forbidden, list, not_found};
use tokio::sync::watch;

/// A safety net against a hung test, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/";
const DENY_NOTE: &str = "spec.action: unknown action \"ALOW\" (ALLOW, DENY, AUDIT, CUSTOM); the \
     policy denies every request to its workloads until it is fixed";
const TELEMETRY_NOTE: &str = "no Service of namespace shop is served by a waypoint: its tracing \
     and metrics have no effect (ztunnel reads only accessLogging, mesh-wide, namespace-wide or by selector)";

/// What the fake serves: lists by path; Events and statuses accepted, or Events refused, or
/// Events gone (expired) when their series is updated.
#[derive(Default)]
struct Cluster {
    lists: Routes,
    refuse_events: bool,
    events_expired: bool,
}

impl Cluster {
    fn answer(&self, seen: &Request) -> Reply {
        if let Some(reply) = self.lists.answer(seen) {
            return reply;
        }
        let event = seen.path.starts_with(EVENTS);
        match seen.method.as_str() {
            "POST" if event && self.refuse_events => {
                forbidden("create", "events.events.k8s.io", "shop")
            }
            "POST" if event => Reply::Json(201, seen.body.clone()),
            "PATCH" if event && self.events_expired => not_found(),
            "PATCH" if event || seen.path.ends_with("/status") => Reply::Json(
                200,
                json!({"apiVersion": "v1", "kind": "Object", "metadata": {"name": "x"}}),
            ),
            _ => not_found(),
        }
    }
}

/// The fake serving `cluster`, and a client for it.
fn start(cluster: Cluster) -> (FakeKube, kube::Client) {
    let server = FakeKube::serve(move |request| cluster.answer(request));
    let url = server.url().parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    (server, client)
}

/// The requests about Events the fake received, with `method`.
fn event_requests(server: &FakeKube, method: &str) -> Vec<Request> {
    server
        .seen()
        .into_iter()
        .filter(|r| r.method == method && r.path.starts_with(EVENTS))
        .collect()
}

fn settings(limits: Limits) -> EventSettings {
    EventSettings {
        limits,
        settle: Duration::ZERO,
        ..EventSettings::new("controller-5f7c9-abcde")
    }
}

fn metadata(name: &str, uid: &str) -> Value {
    json!({"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "3", "generation": 1})
}

/// `body` without what changes from run to run (name, time), which is checked for form.
fn stable(mut body: Value) -> Value {
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let regarding = body["regarding"]["name"].as_str().unwrap_or_default();
    assert!(name.starts_with(&format!("{regarding}.")), "{name}");
    let time = body["eventTime"].as_str().unwrap_or_default();
    assert!(
        time.len() == 27 && time.ends_with('Z') && &time[19..20] == ".",
        "{time}"
    );
    let map = body.as_object_mut().expect("an object");
    map.remove("eventTime");
    map["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("name");
    body
}

fn expected(
    kind: &str,
    api_version: &str,
    name: &str,
    uid: &str,
    reason: &str,
    note: &str,
) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"namespace": "shop"},
        "reportingController": "istio.io/mesh-controller",
        "reportingInstance": "controller-5f7c9-abcde",
        "action": "Translate",
        "reason": reason,
        "regarding": {"apiVersion": api_version, "kind": kind, "namespace": "shop", "name": name, "uid": uid},
        "note": note,
        "type": "Warning",
    })
}

#[tokio::test]
async fn problems_of_a_cluster_become_events_on_their_objects() {
    let lists = BTreeMap::from([
        (
            "/api/v1/namespaces",
            list(
                "Namespace",
                vec![json!({"metadata": {"name": "shop", "uid": "ns-1"}})],
            ),
        ),
        ("/api/v1/pods", list("Pod", vec![])),
        ("/api/v1/services", list("Service", vec![])),
        (
            "/apis/security.istio.io/v1/authorizationpolicies",
            list(
                "AuthorizationPolicy",
                vec![json!({"metadata": metadata("deny", "ap-1"), "spec": {"action": "ALOW"}})],
            ),
        ),
        (
            "/apis/telemetry.istio.io/v1/telemetries",
            list(
                "Telemetry",
                vec![json!({
                    "metadata": metadata("mesh-default", "tel-1"),
                    "spec": {"metrics": [{"overrides": [{"disabled": true}]}]},
                })],
            ),
        ),
    ]);
    let lists = lists
        .into_iter()
        .fold(Routes::new(), |r, (path, value)| r.json(path, value));
    let (server, client) = start(Cluster {
        lists,
        ..Cluster::default()
    });
    let (index_tx, index_rx) = watch::channel(Arc::new(Index::new()));
    let (observed_tx, observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
    let (problems_tx, problems_rx) = watch::channel(None);
    let (snapshots_tx, _snapshots) = watch::channel(None);
    let source = KubeSource::new(client.clone(), KubeSettings::default());
    tokio::spawn(source.run(index_tx, observed_tx));
    let outputs = Outputs {
        snapshots: snapshots_tx,
        problems: problems_tx,
        readiness: Readiness::default(),
    };
    let translator = Translator::new(TranslateOptions::default());
    tokio::spawn(pipeline::translate_loop(index_rx, outputs, translator));
    let metrics = Arc::new(EventMetrics::default());
    let writer = EventWriter::new(client, settings(Limits::default()), metrics);
    tokio::spawn(writer.run(problems_rx, observed_rx));

    let mut count = server.count();
    let two_posts = count.wait_for(|_| event_requests(&server, "POST").len() >= 2);
    let both = tokio::time::timeout(PATIENCE, two_posts).await.is_ok();
    assert!(both, "Events not written: {:?}", server.seen());
    let posts = event_requests(&server, "POST");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(
        posts
            .iter()
            .all(|p| p.path == "/apis/events.k8s.io/v1/namespaces/shop/events")
    );
    let mut bodies: Vec<Value> = posts.into_iter().map(|p| stable(p.body)).collect();
    bodies.sort_by_key(|b| b["regarding"]["kind"].to_string());
    assert_eq!(
        bodies,
        [
            expected(
                "AuthorizationPolicy",
                "security.istio.io/v1",
                "deny",
                "ap-1",
                "FailedClosed",
                DENY_NOTE
            ),
            expected(
                "Telemetry",
                "telemetry.istio.io/v1",
                "mesh-default",
                "tel-1",
                "ConfigurationWarning",
                TELEMETRY_NOTE
            ),
        ]
    );
}

fn observed(kind: &str, name: &str) -> (ObjectKey, Observed) {
    let watched = WatchedKind::by_kind(kind).expect("a watched kind");
    let observed = Observed {
        kind: watched,
        generation: 1,
        resource_version: "3".into(),
        uid: format!("uid-{name}"),
        status: Value::Null,
        parent_refs: Vec::new(),
        targeted: false,
    };
    (ObjectKey::new(kind, "shop", name), observed)
}

fn problem(kind: &str, name: &str, field: &str, message: &str) -> Problem {
    Problem::new(
        &format!("kubernetes:{kind}/shop/{name}"),
        kind,
        "shop",
        name,
    )
    .field(field)
    .message(message)
}

fn deny_problem() -> Problem {
    let message = DENY_NOTE
        .strip_prefix("spec.action: ")
        .expect("field first");
    problem("AuthorizationPolicy", "deny", "spec.action", message)
}

fn route_problem(name: &str) -> Problem {
    problem(
        "HTTPRoute",
        name,
        "spec.rules[0].backendRefs[0]",
        "no Service shop/reviewz; rule skipped",
    )
}

/// Tally of `(result, count)` pairs, the others 0.
fn tally(counts: &[(EventResult, u32)]) -> Vec<u32> {
    EventResult::ALL
        .iter()
        .map(|r| counts.iter().find(|(c, _)| c == r).map_or(0, |(_, n)| *n))
        .collect()
}

fn counts(t: Tally) -> Vec<u32> {
    EventResult::ALL.iter().map(|r| t.get(*r)).collect()
}

#[tokio::test]
async fn a_standing_problem_is_told_once_and_a_fixed_one_is_forgotten() {
    let (server, client) = start(Cluster::default());
    let objects: ObservedMap = [
        observed("AuthorizationPolicy", "deny"),
        observed("HTTPRoute", "r1"),
        observed("HTTPRoute", "r2"),
    ]
    .into();
    let mut writer = EventWriter::new(
        client,
        settings(Limits::default()),
        Arc::new(EventMetrics::default()),
    );

    let first = writer
        .write(&[deny_problem(), route_problem("r1")], &objects)
        .await;
    assert_eq!(counts(first), tally(&[(EventResult::Created, 2)]));
    // The same problems again, and one more: only the new one is told.
    let second = writer
        .write(
            &[deny_problem(), route_problem("r1"), route_problem("r2")],
            &objects,
        )
        .await;
    assert_eq!(counts(second), tally(&[(EventResult::Created, 1)]));
    let posts = event_requests(&server, "POST");
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[2].body["regarding"]["name"], "r2");
    assert_eq!(posts[2].body["reason"], "InvalidConfiguration");
    assert_eq!(
        posts[2].body["note"],
        "spec.rules[0].backendRefs[0]: no Service shop/reviewz; rule skipped"
    );

    // The policy is fixed: nothing is written, and it is forgotten...
    let fixed = writer
        .write(&[route_problem("r1"), route_problem("r2")], &objects)
        .await;
    assert_eq!(counts(fixed), tally(&[]));
    assert_eq!(event_requests(&server, "POST").len(), 3);
    // ...so breaking it again is a new Event.
    let again = writer
        .write(
            &[deny_problem(), route_problem("r1"), route_problem("r2")],
            &objects,
        )
        .await;
    assert_eq!(counts(again), tally(&[(EventResult::Created, 1)]));
    let posts = event_requests(&server, "POST");
    assert_eq!(posts.len(), 4);
    assert_eq!(posts[3].body["regarding"]["name"], "deny");
    assert_ne!(
        posts[3].body["metadata"]["name"],
        posts[0].body["metadata"]["name"]
    );
    // Problems of objects not (yet) observed, or not from the API, wait.
    let mut from_file = route_problem("r1");
    from_file.origin = "/etc/mesh/routes.yaml".into();
    let unseen = problem("HTTPRoute", "r3", "", "bad");
    assert_eq!(
        counts(writer.write(&[from_file, unseen], &objects).await),
        tally(&[])
    );
}

#[tokio::test]
async fn a_persisting_problem_updates_the_series_of_its_event() {
    let (server, client) = start(Cluster::default());
    let objects: ObservedMap = [observed("AuthorizationPolicy", "deny")].into();
    // Every round is past the interval.
    let limits = Limits {
        series_interval: Duration::ZERO,
        ..Limits::default()
    };
    let mut writer = EventWriter::new(client, settings(limits), Arc::new(EventMetrics::default()));
    writer.write(&[deny_problem()], &objects).await;
    let updated = writer.write(&[deny_problem()], &objects).await;
    assert_eq!(counts(updated), tally(&[(EventResult::Updated, 1)]));
    writer.write(&[deny_problem()], &objects).await;
    let name = event_requests(&server, "POST")[0].body["metadata"]["name"]
        .as_str()
        .expect("named")
        .to_string();
    let patches = event_requests(&server, "PATCH");
    assert_eq!(patches.len(), 2);
    for (patch, count) in patches.iter().zip([2, 3]) {
        assert_eq!(
            patch.path,
            format!("/apis/events.k8s.io/v1/namespaces/shop/events/{name}")
        );
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(patch.body["series"]["count"], count);
        let time = patch.body["series"]["lastObservedTime"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(time.len(), 27, "{time}");
    }
}

#[tokio::test]
async fn an_event_that_expired_is_created_anew() {
    let (server, client) = start(Cluster {
        events_expired: true,
        ..Cluster::default()
    });
    let objects: ObservedMap = [observed("AuthorizationPolicy", "deny")].into();
    let limits = Limits {
        series_interval: Duration::ZERO,
        ..Limits::default()
    };
    let mut writer = EventWriter::new(client, settings(limits), Arc::new(EventMetrics::default()));
    writer.write(&[deny_problem()], &objects).await;
    let renewed = writer.write(&[deny_problem()], &objects).await;
    assert_eq!(counts(renewed), tally(&[(EventResult::Created, 1)]));
    let posts = event_requests(&server, "POST");
    assert_eq!(
        (posts.len(), event_requests(&server, "PATCH").len()),
        (2, 1)
    );
    assert_ne!(
        posts[0].body["metadata"]["name"],
        posts[1].body["metadata"]["name"]
    );
    assert_eq!(posts[1].body["note"], DENY_NOTE);
}

#[tokio::test]
async fn the_rate_limit_refuses_past_its_burst_and_counts_it() {
    let (server, client) = start(Cluster::default());
    let names = ["r1", "r2", "r3", "r4"];
    let objects: ObservedMap = names.iter().map(|n| observed("HTTPRoute", n)).collect();
    let problems: Vec<Problem> = names.iter().map(|n| route_problem(n)).collect();
    // A burst of 2, and (for the length of a test) no refill.
    let limits = Limits {
        per_second: 1e-9,
        burst: 2,
        ..Limits::default()
    };
    let metrics = Arc::new(EventMetrics::default());
    let mut writer = EventWriter::new(client, settings(limits), metrics.clone());
    let first = writer.write(&problems, &objects).await;
    assert_eq!(
        counts(first),
        tally(&[(EventResult::Created, 2), (EventResult::RateLimited, 2)])
    );
    // The refused ones are tried again on the next round (and refused again).
    let second = writer.write(&problems, &objects).await;
    assert_eq!(counts(second), tally(&[(EventResult::RateLimited, 2)]));
    assert_eq!(event_requests(&server, "POST").len(), 2);
    assert_eq!(
        (
            metrics.get(EventResult::Created),
            metrics.get(EventResult::RateLimited)
        ),
        (2, 4)
    );
}

#[tokio::test]
async fn forbidden_events_are_counted_and_status_is_still_written() {
    let (server, client) = start(Cluster {
        refuse_events: true,
        ..Cluster::default()
    });
    let objects: ObservedMap = [
        observed("AuthorizationPolicy", "deny"),
        observed("HTTPRoute", "r1"),
    ]
    .into();
    let problems = vec![deny_problem(), route_problem("r1")];
    let metrics = Arc::new(EventMetrics::default());
    let mut writer = EventWriter::new(client.clone(), settings(Limits::default()), metrics.clone());
    // The first 403 ends the round: the API refuses every Event alike.
    let refused = writer.write(&problems, &objects).await;
    assert_eq!(counts(refused), tally(&[(EventResult::Failed, 1)]));
    assert_eq!(metrics.get(EventResult::Failed), 1);
    // Changes meanwhile do not ask again before the next interval.
    let changed = writer.write(&problems[..1], &objects).await;
    assert_eq!(counts(changed), tally(&[]));
    assert_eq!(event_requests(&server, "POST").len(), 1);

    // Side by side, as in the controller: the status writer is not held up.
    let (problems_tx, problems_rx) = watch::channel(None);
    let (observed_tx, observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
    tokio::spawn(status::run(
        client.clone(),
        problems_rx.clone(),
        observed_rx.clone(),
    ));
    let writer = EventWriter::new(client, settings(Limits::default()), metrics);
    tokio::spawn(writer.run(problems_rx, observed_rx));
    observed_tx.send_replace(Arc::new(objects));
    problems_tx.send_replace(Some(Arc::new(problems)));
    let mut count = server.count();
    let written = tokio::time::timeout(
        PATIENCE,
        count.wait_for(|_| {
            let seen = server.seen();
            let status = seen
                .iter()
                .any(|r| r.method == "PATCH" && r.path.ends_with("/deny/status"));
            status && event_requests(&server, "POST").len() >= 2
        }),
    )
    .await
    .is_ok();
    assert!(written, "{:?}", server.seen());
}
