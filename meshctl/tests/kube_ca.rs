//! `meshctl ca` in Kubernetes mode against a fake API server that keeps Secrets as a real
//! one does: the built binary writes its request into the rotation Secret and prints the
//! answer found there, and with `--wait` follows the recorded phases to the end. The leader's
//! part (answering, advancing the phases) is played by the fake, as the controller's own tests
//! (controller/tests/ca_rotation_kube.rs) run the real one.

mod kube_cluster;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube_cluster::*;
use serde_json::{Value, json};
use test_support::fake_kube::{Reply, Request, Routes, not_found};
use test_support::fake_objects::Objects;

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const ROTATION: &str = "/api/v1/namespaces/istio-system/secrets/mesh-ca-rotation";

/// How the fake leader answers a request: `None` accepts it (recording phase 1).
type Verdict = fn(&Value) -> Option<String>;

/// The Secrets, the roots ConfigMap, and a leader answering requests with `verdict`.
struct Fake {
    objects: Objects,
    routes: Routes,
    verdict: Verdict,
    /// Reads of an accepted rotation's record: from the third on (the first two are
    /// meshctl's wait for the answer and its first status), each finds the next phase.
    reads: std::sync::atomic::AtomicUsize,
}

fn decode(secret: &Value, key: &str) -> Option<Value> {
    let bytes = STANDARD.decode(secret["data"][key].as_str()?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn encode(value: &Value) -> Value {
    Value::String(STANDARD.encode(serde_json::to_vec(value).unwrap()))
}

impl Fake {
    fn answer(&self, request: &Request) -> Reply {
        if request.method == "GET" && request.path == ROTATION {
            self.advance();
        }
        let reply = self
            .routes
            .answer(request)
            .or_else(|| self.objects.answer(request))
            .unwrap_or_else(not_found);
        if request.method != "GET"
            && let Reply::Json(200 | 201, stored) = &reply
            && let Some(asked) = decode(stored, "request.json")
        {
            self.lead(stored.clone(), &asked);
        }
        reply
    }

    /// Moves an accepted rotation's record one phase on (published, reissuing, then idle
    /// and completed) once meshctl has read it twice, as a leader would between its reads.
    fn advance(&self) {
        let Some(mut secret) = self.objects.get(ROTATION) else {
            return;
        };
        let Some(mut record) = decode(&secret, "rotation.json") else {
            return;
        };
        let next = match record["phase"].as_str() {
            Some("published") => "reissuing",
            Some("reissuing") => "idle",
            _ => return,
        };
        if self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            return;
        }
        record["phase"] = json!(next);
        if next == "idle" {
            record["completed_at"] = json!(2);
        }
        secret["data"]["rotation.json"] = encode(&record);
        self.put(secret);
    }

    fn put(&self, secret: Value) {
        let written = self.objects.answer(&Request {
            method: "PUT".into(),
            path: ROTATION.into(),
            query: String::new(),
            content_type: "application/json".into(),
            body: secret,
        });
        assert!(matches!(written, Some(Reply::Json(200, _))), "{written:?}");
    }

    /// Answers `asked` as the leader does: in the same write, the answer (and, accepted,
    /// the phase-1 record), the request removed.
    fn lead(&self, mut secret: Value, asked: &Value) {
        let rejected = (self.verdict)(asked);
        let data = secret["data"].as_object_mut().unwrap();
        data.retain(|key, _| !key.starts_with("request."));
        let answer = json!({"id": asked["id"], "accepted": rejected.is_none(),
                            "rejected": rejected.clone().unwrap_or_default(), "at": 1});
        data.insert("answer.json".into(), encode(&answer));
        if rejected.is_none() {
            let record = json!({"phase": "published", "since": 1, "old_roots": "",
                                "new_roots": "", "reissue_within_ms": asked["reissue_within_ms"],
                                "longest_leaf_secs": 0, "drop_after": 0, "completed_at": 0});
            data.insert("rotation.json".into(), encode(&record));
        }
        self.put(secret);
    }
}

fn serve(verdict: Verdict) -> (Cluster, Arc<Fake>) {
    let fake = Arc::new(Fake {
        objects: Objects::new(&[SECRETS]),
        routes: Routes::new().json(ROOT_CONFIGMAP, root_config_map(365 * DAY)),
        verdict,
        reads: Default::default(),
    });
    let serving = fake.clone();
    (Cluster::serve_with(move |r| serving.answer(r)), fake)
}

/// The requests meshctl wrote to the rotation Secret, decoded.
fn written_requests(cluster: &Cluster) -> Vec<Value> {
    cluster
        .fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "POST" || r.method == "PUT")
        .filter_map(|r| decode(&r.body, "request.json"))
        .collect()
}

#[test]
fn rotate_root_writes_its_request_and_prints_the_leaders_refusal() {
    let (cluster, _) = serve(|_| Some("a root rotation is already in phase Published".into()));
    let run = cluster.meshctl(&["ca", "rotate-root", "--new-root-ttl", "30d"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "the controller refused the request: a root rotation is already in phase Published"
        ),
        "{run:?}"
    );
    let requests = written_requests(&cluster);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["kind"], "rotate-root");
    assert_eq!(requests[0]["new_root_ttl_secs"], 30 * 24 * 3600);
    assert_eq!(requests[0]["reissue_within_ms"], 60_000);
    // Created, as no rotation Secret existed.
    assert!(
        cluster
            .fake
            .seen()
            .iter()
            .any(|r| r.method == "POST" && r.path == SECRETS)
    );

    // `status` then shows the idle record and the refusal.
    let run = cluster.meshctl(&["ca", "status"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    run.line("PHASE");
    assert_eq!(
        run.line("LAST REQUEST"),
        "LAST REQUEST  refused: a root rotation is already in phase Published"
    );
}

#[test]
fn replace_sends_the_folders_files_and_prints_phase_1_once_accepted() {
    let (cluster, fake) = serve(|_| None);
    let folder = test_support::TempDir::new("meshctl-kube-ca-replace");
    folder.write("root-cert.pem", "CERT");
    folder.write("root-key.pem", "KEY");
    let path = folder.path().to_str().unwrap();
    let run = cluster.meshctl(&[
        "ca",
        "replace",
        path,
        "--reissue-within",
        "2m",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let status: Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    assert_eq!(status["phase_number"], 1);
    assert_eq!(status["reissue_within_ms"], 120_000);
    assert_eq!(status["roots"].as_array().map(Vec::len), Some(1));

    let sent = cluster
        .fake
        .seen()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == SECRETS)
        .expect("the request written");
    assert_eq!(
        decode(&sent.body, "request.json").unwrap()["kind"],
        "replace"
    );
    let file = |key: &str| {
        STANDARD
            .decode(sent.body["data"][key].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(file("request.root-cert.pem"), b"CERT");
    assert_eq!(file("request.root-key.pem"), b"KEY");
    assert_eq!(sent.body["type"], "ambient-mesh.io/ca-rotation");
    // Answered: the request's keys are gone.
    let stored = fake.objects.get(ROTATION).expect("the Secret");
    assert!(stored["data"].get("request.json").is_none());
}

#[test]
fn rotate_root_wait_prints_each_phase_as_it_begins_until_the_rotation_completes() {
    let (cluster, fake) = serve(|_| None);
    let run = cluster.meshctl(&["ca", "rotate-root", "--wait", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let phases: Vec<u64> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON status per line"))
        .map(|status| status["phase_number"].as_u64().expect("a phase"))
        .collect();
    assert_eq!(phases, [1, 3, 0], "{run:?}");
    let record = decode(&fake.objects.get(ROTATION).unwrap(), "rotation.json").unwrap();
    assert_eq!(
        (record["phase"].as_str(), record["completed_at"].as_u64()),
        (Some("idle"), Some(2))
    );
}
