//! Root rotation in Kubernetes mode: controller replicas (the binary) against one fake API
//! server that keeps Secrets and the Lease as a real one does. A rotation is asked for as
//! `meshctl ca` asks, through the rotation Secret; the leader answers and runs the phases,
//! recording each in the Secret before `istio-ca-secret` and the `istio-ca-root-cert`
//! ConfigMaps follow; a leader killed mid-rotation is replaced by one that resumes; a
//! follower signs with the new material; refused material changes nothing; a plug-in CA
//! (`cacerts`) is never written, and every replica follows its owner's edits. Phase 2 is met
//! by having no subscribed proxies.

mod kube_replicas;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::ca::rotation::{Phase, State};
use controller::ca::rotation_secret::{
    ANSWER, AnswerRecord, NEXT, RECORD, REQUEST, REQUEST_FILES, ROTATION_SECRET, RequestRecord,
};
use hbone::cert::certificates_from_pem;
use hbone::{Authority, CertificateRequest, Identity};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube_replicas::{LEASES, Replica};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use test_support::control_plane::channel_to;
use test_support::fake_kube::{Reply, Request, Routes, list, not_found};
use test_support::fake_objects::Objects;
use test_support::grpc::create_certificate;
use test_support::raw_http;
use test_support::wait::eventually;

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/mesh-controller-leader";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The token of `shop/web`, whose pod asks the follower for a certificate.
const WEB_TOKEN: &str = "web-token";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

type Roots = Vec<CertificateDer<'static>>;

/// The cluster every replica sees: a namespace, the Lease and the Secrets kept as a real API
/// server keeps them, the trust bundle ConfigMaps as last applied, TokenReview for `web`.
struct Cluster {
    lists: Routes,
    objects: Objects,
    configmaps: Mutex<BTreeMap<String, Value>>,
    /// The Events created.
    events: Mutex<Vec<Value>>,
}

impl Cluster {
    fn new() -> Arc<Self> {
        let lists = Routes::new()
            .json(
                "/api/v1/namespaces",
                list("Namespace", vec![json!({"metadata": {"name": "shop"}})]),
            )
            .json("/api/v1/pods", list("Pod", vec![]))
            .json("/api/v1/services", list("Service", vec![]));
        Arc::new(Self {
            lists,
            objects: Objects::new(&[LEASES, SECRETS]),
            configmaps: Mutex::default(),
            events: Mutex::default(),
        })
    }

    fn answer(&self, request: &Request) -> Reply {
        if let Some(reply) = self
            .lists
            .answer(request)
            .or_else(|| self.objects.answer(request))
        {
            return reply;
        }
        match request.method.as_str() {
            "POST" if request.path == TOKEN_REVIEWS => {
                let mut review = request.body.clone();
                review["status"] = match review["spec"]["token"].as_str() {
                    Some(WEB_TOKEN) => json!({
                        "authenticated": true, "audiences": ["istio-ca"],
                        "user": {"username": "system:serviceaccount:shop:web",
                                 "groups": ["system:serviceaccounts"]},
                    }),
                    _ => json!({"authenticated": false, "error": "invalid bearer token"}),
                };
                Reply::Json(201, review)
            }
            "PATCH" if request.content_type == "application/apply-patch+yaml" => {
                if request.path.contains("/configmaps/") {
                    let mut applied = self.configmaps.lock().expect("not poisoned");
                    applied.insert(request.path.clone(), request.body.clone());
                }
                Reply::Json(200, request.body.clone())
            }
            "POST" if request.path.ends_with("/events") => {
                let mut events = self.events.lock().expect("not poisoned");
                events.push(request.body.clone());
                Reply::Json(201, request.body.clone())
            }
            "PATCH" if request.path.ends_with("/status") => {
                Reply::Json(200, json!({"apiVersion": "v1", "kind": "Object"}))
            }
            _ => not_found(),
        }
    }

    fn start(self: &Arc<Self>, name: &'static str) -> Replica {
        let serving = self.clone();
        Replica::start(name, move |request| serving.answer(request))
    }

    fn holder(&self) -> Option<String> {
        let lease = self.objects.get(LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        let stored = self.objects.get(&format!("{SECRETS}/{name}"))?;
        Some(serde_json::from_value(stored).expect("a Secret"))
    }

    fn data(&self, name: &str) -> BTreeMap<String, String> {
        self.secret(name)
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, String::from_utf8(v).expect("text")))
            .collect()
    }

    /// The rotation's record (idle without one).
    fn record(&self) -> State {
        self.data(ROTATION_SECRET)
            .get(RECORD)
            .map(|text| serde_json::from_str(text).expect("a record"))
            .unwrap_or_default()
    }

    fn answer_to(&self, id: &str) -> Option<AnswerRecord> {
        let text = self.data(ROTATION_SECRET).get(ANSWER)?.clone();
        let answer: AnswerRecord = serde_json::from_str(&text).expect("an answer");
        (answer.id == id).then_some(answer)
    }

    /// `istio-ca-secret`: its signing root, and every root it publishes.
    fn ca_roots(&self) -> (Roots, Roots) {
        let data = self.data("istio-ca-secret");
        let signing = certificates_from_pem(&data["ca-cert.pem"], "signing").expect("PEM");
        let mut roots = signing.clone();
        let extra = data.get("root-cert.pem").cloned().unwrap_or_default();
        for root in certificates_from_pem(&extra, "roots").unwrap_or_default() {
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        (signing, roots)
    }

    /// The roots of the `istio-ca-root-cert` ConfigMap last applied in `namespace`.
    fn configmap_roots(&self, namespace: &str) -> Roots {
        let path = format!("/api/v1/namespaces/{namespace}/configmaps/istio-ca-root-cert");
        let applied = self.configmaps.lock().expect("not poisoned");
        let pem = applied.get(&path).map_or("", |cm| {
            cm["data"]["root-cert.pem"].as_str().unwrap_or_default()
        });
        certificates_from_pem(pem, "roots").unwrap_or_default()
    }

    /// Writes `body` as a client would (`POST` to a collection, `PUT` of an item).
    fn write(&self, path: &str, method: &str, body: Value) {
        let written = self.objects.answer(&Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: "application/json".into(),
            body,
        });
        assert!(
            matches!(written, Some(Reply::Json(200 | 201, _))),
            "{written:?}"
        );
    }

    /// Writes a request into the rotation Secret as `meshctl ca` does: at the version read,
    /// or creating the Secret.
    fn ask(&self, request: RequestRecord, files: &[(&str, String)]) {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let path = format!("{SECRETS}/{ROTATION_SECRET}");
        let existing = self.secret(ROTATION_SECRET);
        let mut secret = existing.clone().unwrap_or_else(|| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(ROTATION_SECRET.into()),
                ..Default::default()
            },
            ..Secret::default()
        });
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.retain(|key, _| !key.starts_with(REQUEST_FILES));
        let text = serde_json::to_string(&request).expect("JSON");
        data.insert(REQUEST.into(), bytes(&text));
        for (name, text) in files {
            data.insert(format!("{REQUEST_FILES}{name}"), bytes(text));
        }
        let (method, target) = match existing {
            Some(_) => ("PUT", path),
            None => ("POST", SECRETS.to_owned()),
        };
        self.write(
            &target,
            method,
            serde_json::to_value(&secret).expect("JSON"),
        );
    }
}

fn rotate_root(id: &str, reissue_within: Duration) -> RequestRecord {
    RequestRecord {
        id: id.into(),
        kind: "rotate-root".into(),
        new_root_ttl_secs: 30 * 24 * 3600,
        reissue_within_ms: reissue_within.as_millis() as u64,
    }
}

fn pem_roots(pem: &str) -> Roots {
    certificates_from_pem(pem, "roots").expect("PEM roots")
}

/// The phase a replica's `/debug/ca` shows.
async fn debug_phase(replica: &Replica) -> Option<u64> {
    let reply = raw_http::try_get(replica.admin, "/debug/ca").await.ok()?;
    let status: Value = serde_json::from_slice(reply.body.as_bytes()).ok()?;
    status["phase_number"].as_u64()
}

/// Waits until a replica's `/metrics` has the line `sample`.
async fn until_metric(replica: &Replica, sample: &str) {
    test_support::wait::within(&format!("{} showing {sample}", replica.name), async {
        while !raw_http::get(replica.admin, "/metrics")
            .await
            .body
            .lines()
            .any(|line| line == sample)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Waits, polling asynchronously, until `replica`'s `/debug/ca` shows `phase`.
async fn until_phase(replica: &Replica, phase: u64) {
    test_support::wait::within(&format!("{} at phase {phase}", replica.name), async {
        while debug_phase(replica).await != Some(phase) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// The root the certificate `replica` signs for `web` chains to, trusting `roots` to reach it.
async fn issuing_root(replica: &Replica, roots: &Roots) -> CertificateDer<'static> {
    let pem: String = roots.iter().map(hbone::cert::certificate_to_pem).collect();
    let id: Identity = WEB.parse().expect("an identity");
    let csr = CertificateRequest::generate(&id).expect("a CSR");
    let chain = create_certificate(
        channel_to(replica.xds, &pem),
        WEB_TOKEN,
        csr.csr_pem(),
        600,
        None,
    )
    .await
    .expect("a certificate");
    let certificate = csr.into_certificate(&chain).expect("the chain assembles");
    certificate.issuing_root().expect("a root").clone()
}

#[tokio::test]
async fn a_rotation_asked_through_the_secret_survives_its_leader_and_every_replica_follows() {
    let cluster = Cluster::new();
    let mut replicas = vec![
        cluster.start("controller-a"),
        cluster.start("controller-b"),
        cluster.start("controller-c"),
    ];
    for replica in &replicas {
        replica.until_ready().await;
    }
    eventually("a replica holding the Lease", || cluster.holder().is_some()).await;
    let (old_signing, old) = cluster.ca_roots();
    assert_eq!(old_signing, old, "one root before the rotation");
    eventually("the roots published", || {
        cluster.configmap_roots("istio-system") == old
    })
    .await;

    // Phase 1: the request is answered, the new root published beside the old one, which
    // still signs; the record first.
    cluster.ask(rotate_root("r1", Duration::from_secs(15)), &[]);
    eventually("the request accepted", || {
        cluster.answer_to("r1").is_some_and(|a| a.accepted)
    })
    .await;
    let record = cluster.record();
    assert_eq!(record.phase, Phase::Published);
    let new = pem_roots(&record.new_roots);
    assert_eq!(new.len(), 1);
    let both = [old.clone(), new.clone()].concat();
    assert!(
        cluster
            .data(ROTATION_SECRET)
            .contains_key(&format!("{NEXT}root-key.pem"))
    );
    assert!(!cluster.data(ROTATION_SECRET).contains_key(REQUEST));
    // The record is written before it takes effect: the CA Secret follows it.
    eventually("both roots in the CA Secret, the old one signing", || {
        cluster.ca_roots() == (old.clone(), both.clone())
    })
    .await;
    for namespace in ["istio-system", "shop"] {
        eventually(&format!("both roots published in {namespace}"), || {
            cluster.configmap_roots(namespace) == both
        })
        .await;
    }
    for replica in &replicas {
        until_phase(replica, 1).await;
    }

    // The leader dies in phase 1: another takes the Lease over and resumes.
    let leader = cluster.holder().expect("a leader");
    let index = replicas
        .iter()
        .position(|r| r.name == leader)
        .expect("known");
    let mut leaving = replicas.remove(index);
    drop(leaving.process.take());
    eventually("another replica leading", || {
        cluster.holder().is_some_and(|h| h != leader)
    })
    .await;
    let next_leader = cluster.holder().expect("a leader");
    let follower = replicas
        .iter()
        .find(|r| r.name != next_leader)
        .expect("a follower");

    // Phase 3: the new root signs in the CA Secret, the old one stays published.
    eventually("phase 3 recorded", || {
        cluster.record().phase == Phase::Reissuing
    })
    .await;
    let reissuing = [new.clone(), old.clone()].concat();
    eventually("the new root signing in the CA Secret", || {
        cluster.ca_roots() == (new.clone(), reissuing.clone())
    })
    .await;
    eventually("the new root first in the ConfigMap", || {
        cluster.configmap_roots("istio-system") == reissuing
    })
    .await;
    // The leader's metrics show the phase.
    let leading = replicas
        .iter()
        .find(|r| r.name == next_leader)
        .expect("the leader");
    until_metric(leading, "controller_ca_rotation_phase 3").await;
    // The follower signs with the new material.
    until_phase(follower, 3).await;
    assert_eq!(issuing_root(follower, &reissuing).await, new[0]);

    // Phase 4, back to 0: the old root is dropped everywhere and the staged material goes.
    eventually("the rotation completed", || {
        let record = cluster.record();
        record.phase == Phase::Idle && record.completed_at > 0
    })
    .await;
    eventually("the old root gone from the CA Secret", || {
        cluster.ca_roots() == (new.clone(), new.clone())
    })
    .await;
    assert!(
        !cluster
            .data(ROTATION_SECRET)
            .keys()
            .any(|k| k.starts_with(NEXT))
    );
    eventually("the old root gone from the ConfigMaps", || {
        cluster.configmap_roots("istio-system") == new && cluster.configmap_roots("shop") == new
    })
    .await;
    for replica in &replicas {
        until_phase(replica, 0).await;
    }
    assert_eq!(issuing_root(follower, &new).await, new[0]);
    until_metric(leading, "controller_ca_rotation_phase 0").await;
    until_metric(leading, "controller_ca_root_rotations_completed_total 1").await;
    // Every replica watched the three Secrets by name rather than reading them every second.
    for replica in replicas.iter().chain([&leaving]) {
        let watched: std::collections::BTreeSet<&str> = replica
            .front
            .seen()
            .iter()
            .filter(|r| r.path == SECRETS && r.query.contains("watch=true"))
            .filter_map(|r| {
                ["cacerts", "istio-ca-secret", ROTATION_SECRET]
                    .into_iter()
                    .find(|name| r.query.contains(&format!("metadata.name%3D{name}")))
            })
            .collect();
        assert_eq!(watched.len(), 3, "{}: {watched:?}", replica.name);
    }
    // The follower never wrote (it only asked who called it).
    let written: Vec<String> = follower
        .writes()
        .into_iter()
        .filter(|w| *w != format!("POST {TOKEN_REVIEWS}"))
        .collect();
    assert_eq!(written, Vec::<String>::new());
}

#[tokio::test]
async fn material_that_does_not_validate_is_refused_with_the_reason_and_changes_nothing() {
    let cluster = Cluster::new();
    let replica = cluster.start("controller-a");
    replica.until_ready().await;
    eventually("the replica leading", || cluster.holder().is_some()).await;
    let (_, old) = cluster.ca_roots();
    let ca_version = || {
        cluster
            .secret("istio-ca-secret")
            .and_then(|s| s.metadata.resource_version)
    };
    let version = ca_version();

    // A root with another root's key.
    let (a, b) = (
        Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap(),
        Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap(),
    );
    let replace = |id: &str| RequestRecord {
        id: id.into(),
        kind: "replace".into(),
        ..RequestRecord::default()
    };
    cluster.ask(
        replace("mismatched"),
        &[
            ("root-cert.pem", a.root_pem()),
            ("root-key.pem", b.key_pem().to_owned()),
        ],
    );
    eventually("the mismatched key answered", || {
        cluster.answer_to("mismatched").is_some()
    })
    .await;
    let answer = cluster.answer_to("mismatched").unwrap();
    assert!(!answer.accepted);
    assert!(answer.rejected.contains("does not belong"), "{answer:?}");

    // The refusal is an Event about the rotation Secret too (written after the answer).
    let refused = |e: &Value| e["reason"] == "RotationRequestRefused";
    eventually("the refusal's Event", || {
        cluster
            .events
            .lock()
            .expect("not poisoned")
            .iter()
            .any(refused)
    })
    .await;
    let events = cluster.events.lock().expect("not poisoned").clone();
    let event = events.iter().find(|e| refused(e)).expect("an Event");
    assert_eq!(event["regarding"]["name"], ROTATION_SECRET);
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("request mismatched: ") && note.contains("does not belong"));

    // Half of a root: named.
    cluster.ask(replace("half"), &[("root-cert.pem", a.root_pem())]);
    eventually("half a root answered", || {
        cluster.answer_to("half").is_some()
    })
    .await;
    let rejected = cluster.answer_to("half").unwrap().rejected;
    assert!(rejected.contains("root-key.pem is missing"), "{rejected}");

    // An intermediate is plugged in through cacerts, the owner's, never written here.
    let now = std::time::SystemTime::now();
    let hour = Duration::from_secs(3600);
    let (key, chain) = a
        .issue_intermediate("mesh intermediate", now - hour, now + hour)
        .unwrap();
    cluster.ask(
        replace("intermediate"),
        &[
            ("ca-key.pem", key),
            ("ca-cert.pem", chain),
            ("root-cert.pem", a.root_pem()),
        ],
    );
    eventually("the intermediate answered", || {
        cluster.answer_to("intermediate").is_some()
    })
    .await;
    let rejected = cluster.answer_to("intermediate").unwrap().rejected;
    assert!(rejected.contains("cacerts"), "{rejected}");

    // Nothing changed: no phase, no staged material, the same CA Secret and roots.
    assert_eq!(cluster.record(), State::default());
    let data = cluster.data(ROTATION_SECRET);
    assert!(
        !data
            .keys()
            .any(|k| k.starts_with(REQUEST_FILES) || k.starts_with(NEXT))
    );
    assert_eq!(ca_version(), version);
    assert_eq!(cluster.ca_roots().1, old);
    assert_eq!(cluster.configmap_roots("istio-system"), old);
    assert_eq!(debug_phase(&replica).await, Some(0));
}

#[tokio::test]
async fn a_plugged_in_ca_is_its_owners_to_rotate_and_every_replica_follows_its_edits() {
    let cluster = Cluster::new();
    let offline = Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap();
    let now = std::time::SystemTime::now();
    let hour = Duration::from_secs(3600);
    let (key, chain) = offline
        .issue_intermediate("mesh intermediate", now - hour, now + hour)
        .unwrap();
    let cacerts = |roots: String| {
        let data: BTreeMap<String, ByteString> = [
            ("ca-key.pem", key.clone()),
            ("ca-cert.pem", chain.clone()),
            ("root-cert.pem", roots),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect();
        let mut secret = json!({"metadata": {"name": "cacerts"}});
        secret["data"] = serde_json::to_value(data).expect("JSON");
        secret
    };
    cluster.write(SECRETS, "POST", cacerts(offline.root_pem()));
    let replicas = [cluster.start("controller-a"), cluster.start("controller-b")];
    for replica in &replicas {
        replica.until_ready().await;
    }
    eventually("a replica holding the Lease", || cluster.holder().is_some()).await;
    let old = pem_roots(&offline.root_pem());
    eventually("the plug-in CA's roots published", || {
        cluster.configmap_roots("istio-system") == old
    })
    .await;

    // A rotation is refused, naming the owner's steps; nothing is written for it.
    cluster.ask(rotate_root("r1", Duration::ZERO), &[]);
    eventually("the request answered", || cluster.answer_to("r1").is_some()).await;
    let rejected = cluster.answer_to("r1").unwrap().rejected;
    assert!(rejected.contains("istio-system/cacerts"), "{rejected}");
    assert!(cluster.secret("istio-ca-secret").is_none());

    // The owner adds the next root: every replica publishes both, as the ConfigMaps do.
    let next = Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap();
    let stored = cluster.objects.get(&format!("{SECRETS}/cacerts")).unwrap();
    let mut edited = cacerts(format!("{}{}", offline.root_pem(), next.root_pem()));
    edited["metadata"] = stored["metadata"].clone();
    cluster.write(&format!("{SECRETS}/cacerts"), "PUT", edited);
    let both = [old.clone(), pem_roots(&next.root_pem())].concat();
    eventually("both roots published", || {
        cluster.configmap_roots("istio-system") == both && cluster.configmap_roots("shop") == both
    })
    .await;
    for replica in &replicas {
        test_support::wait::within(&format!("{} serving both roots", replica.name), async {
            while root_count(replica).await != Some(2) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
}

/// How many roots a replica's `/debug/ca` shows.
async fn root_count(replica: &Replica) -> Option<usize> {
    let reply = raw_http::try_get(replica.admin, "/debug/ca").await.ok()?;
    let status: Value = serde_json::from_slice(reply.body.as_bytes()).ok()?;
    status["roots"].as_array().map(Vec::len)
}
