//! A root rotation in Kubernetes mode: its record, staged material, requests and answers in
//! the Secret [`ROTATION_SECRET`] of the root namespace (type [`ROTATION_SECRET_TYPE`]), the
//! live material in `istio-ca-secret`. Keys of the rotation Secret:
//!
//! - `rotation.json`: the record ([`State`]), as the CA folder's;
//! - `next.<file>`: the staged material, under the CA folder's file names;
//! - `request.json` ([`RequestRecord`]) and `request.<file>`: what `meshctl ca` asks for;
//! - `answer.json` ([`AnswerRecord`]): the leader's answer to the last request.
//!
//! Only the leader writes, each write at the resourceVersion it read (a 409 reads again):
//! the record first, then `istio-ca-secret` as [`rotation::plan`] says, so that a new
//! leader resumes at the recorded phase. Every replica loads the live material through the
//! same plan, so all sign with what the record calls for even between the leader's writes.
//! A plug-in CA (`cacerts`) is its owner's: it is never written, rotations are refused, and
//! every replica follows the owner's edits of it instead.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hbone::Authority;
use hbone::cert::{certificate_to_pem, certificates_from_pem};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::CaError;
use super::layout::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY};
use super::rotation::{self, LAYOUT, Material, State, merge_roots, now_secs};
use super::rotation_store::{Pending, Request, RequestKind, RotationStore};
use super::secret_store::{CA_SECRET, PLUGGED_IN_SECRET, from_plugged_in};
use super::secret_watch::{Changes, watch_secrets};
use super::store::{self, Origin};
use crate::events::{self, EventSettings, MAX_NOTE, TYPE, micro_time, truncate};
use crate::status::CONTROLLER_NAME;

/// The rotation's Secret in the root namespace.
pub const ROTATION_SECRET: &str = "mesh-ca-rotation";
/// Its type.
pub const ROTATION_SECRET_TYPE: &str = "ambient-mesh.io/ca-rotation";
/// The record's key.
pub const RECORD: &str = "rotation.json";
/// The prefix of the staged material's keys.
pub const NEXT: &str = "next.";
/// The request's key.
pub const REQUEST: &str = "request.json";
/// The prefix of the request's material's keys.
pub const REQUEST_FILES: &str = "request.";
/// The answer's key.
pub const ANSWER: &str = "answer.json";

/// How many times a write that met a concurrent change reads again.
const ATTEMPTS: usize = 5;

/// `request.json`: a rotation asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Names the request in its answer.
    pub id: String,
    /// `rotate-root` or `replace` (with the material in `request.<file>`).
    pub kind: String,
    /// `rotate-root`: the new root's lifetime, seconds.
    #[serde(default)]
    pub new_root_ttl_secs: u64,
    /// The window in which proxies renew once the new material signs, milliseconds.
    #[serde(default)]
    pub reissue_within_ms: u64,
}

/// `answer.json`: the leader's answer to request `id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// The request answered.
    pub id: String,
    /// Whether its phase 1 was recorded.
    pub accepted: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rejected: String,
    /// When, seconds since the epoch.
    pub at: u64,
}

/// The Secrets of the root namespace as a [`RotationStore`].
#[derive(Debug)]
pub struct SecretStore {
    api: Api<Secret>,
    namespace: String,
    /// Staged and not yet recorded.
    pending: Mutex<Option<Material>>,
    /// The request that the next record of a staged material answers.
    answering: Mutex<Option<String>>,
    /// Whether the last read found a plug-in CA.
    plugged_in: AtomicBool,
}

/// A Secret's data by key.
type Data = BTreeMap<String, ByteString>;

impl SecretStore {
    /// The store of `namespace`'s Secrets.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            pending: Mutex::default(),
            answering: Mutex::default(),
            plugged_in: AtomicBool::new(false),
        }
    }

    fn bad(&self, name: &str, reason: impl Into<String>) -> CaError {
        CaError::BadSecret {
            secret: format!("{}/{name}", self.namespace),
            reason: reason.into(),
        }
    }

    fn failed(&self, name: &str, source: kube::Error) -> CaError {
        CaError::Kubernetes {
            secret: format!("{}/{name}", self.namespace),
            source: Box::new(source),
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Secret>, CaError> {
        self.api
            .get_opt(name)
            .await
            .map_err(|e| self.failed(name, e))
    }

    /// The rotation Secret's data (empty when it does not exist).
    async fn rotation_data(&self) -> Result<Data, CaError> {
        Ok(self
            .get(ROTATION_SECRET)
            .await?
            .and_then(|s| s.data)
            .unwrap_or_default())
    }

    /// Changes the rotation Secret's data with `change` and writes it at the version read
    /// (creating the Secret when absent and `create` says so), reading again after a
    /// conflict; the data as stored. Nothing is written when nothing changes.
    async fn update_rotation(
        &self,
        create: bool,
        change: impl Fn(&mut Data),
    ) -> Result<Data, CaError> {
        for _ in 0..ATTEMPTS {
            let existing = self.get(ROTATION_SECRET).await?;
            let created = existing.is_none();
            if created && !create {
                return Ok(Data::new());
            }
            let mut secret = existing.unwrap_or_else(|| rotation_secret(&self.namespace));
            let data = secret.data.get_or_insert_with(Data::new);
            let before = data.clone();
            change(data);
            let written = data.clone();
            if !created && written == before {
                return Ok(written);
            }
            let params = PostParams::default();
            let result = match created {
                true => self.api.create(&params, &secret).await,
                false => self.api.replace(ROTATION_SECRET, &params, &secret).await,
            };
            match result {
                Ok(_) => return Ok(written),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.failed(ROTATION_SECRET, e)),
            }
        }
        Err(self.bad(ROTATION_SECRET, "changed concurrently at every attempt"))
    }

    /// Writes `istio-ca-secret` as the phase of `state` calls for, given the staged material
    /// (reading again after a conflict); whether the staged material is to go.
    async fn write_live(&self, state: &State, staged: Option<&Material>) -> Result<bool, CaError> {
        for _ in 0..ATTEMPTS {
            let mut secret = self
                .get(CA_SECRET)
                .await?
                .ok_or_else(|| self.bad(CA_SECRET, "not found"))?;
            let live = ca_material(&self.namespace, &secret)?;
            let planned = rotation::plan(state, &live, staged)?;
            if planned.live == live {
                return Ok(planned.drop_staged);
            }
            secret.data = Some(self.ca_data(&planned.live)?);
            match self
                .api
                .replace(CA_SECRET, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => return Ok(planned.drop_staged),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.failed(CA_SECRET, e)),
            }
        }
        Err(self.bad(CA_SECRET, "changed concurrently at every attempt"))
    }

    /// `istio-ca-secret`'s data for a root's material, in istiod's layout: `ca-cert.pem` the
    /// signing root, `ca-key.pem` its key, `root-cert.pem` every published root.
    fn ca_data(&self, material: &Material) -> Result<Data, CaError> {
        let missing = |name: &str| self.bad(CA_SECRET, format!("{name} is missing"));
        let roots = material.get(ROOT_CERT).ok_or_else(|| missing(ROOT_CERT))?;
        let key = material.get(ROOT_KEY).ok_or_else(|| missing(ROOT_KEY))?;
        let signing = certificates_from_pem(roots, "CA roots")?;
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Ok(Data::from([
            (CA_CERT.to_owned(), bytes(&certificate_to_pem(&signing[0]))),
            (CA_KEY.to_owned(), bytes(key)),
            (CERT_CHAIN.to_owned(), bytes("")),
            (ROOT_CERT.to_owned(), bytes(roots)),
        ]))
    }

    /// The record, and the live material it calls for, each Secret read once.
    async fn recorded(&self) -> Result<(State, Authority, Origin), CaError> {
        let data = self.rotation_data().await?;
        let state = record(&self.namespace, &data)?;
        if let Some(secret) = self.get(PLUGGED_IN_SECRET).await?
            && let Some(authority) = from_plugged_in(&self.namespace, &secret)?
        {
            self.plugged_in.store(true, Ordering::Relaxed);
            return Ok((state, authority, Origin::PluggedIn));
        }
        self.plugged_in.store(false, Ordering::Relaxed);
        let staged = prefixed(&data, NEXT);
        let secret = self
            .get(CA_SECRET)
            .await?
            .ok_or_else(|| self.bad(CA_SECRET, "not found"))?;
        let live = ca_material(&self.namespace, &secret)?;
        let planned = rotation::plan(&state, &live, staged.as_ref())?;
        let (authority, origin) = store::load_material(&planned.live).map_err(|e| match e {
            CaError::Missing(name) => self.bad(CA_SECRET, format!("{name} is missing")),
            other => other,
        })?;
        Ok((state, authority, origin))
    }

    async fn enter_state(&self, state: &State) -> Result<(), CaError> {
        let pending = lock(&self.pending).take();
        let answering = pending.as_ref().and_then(|_| lock(&self.answering).take());
        let record = serde_json::to_string_pretty(state).unwrap_or_default();
        // Nothing to record for a store that never rotated.
        let create = pending.is_some() || *state != State::default();
        let written = self
            .update_rotation(create, |data| {
                data.insert(RECORD.to_owned(), ByteString(record.clone().into_bytes()));
                if let Some(next) = &pending {
                    data.retain(|key, _| !key.starts_with(NEXT));
                    for (name, text) in next {
                        let value = ByteString(text.clone().into_bytes());
                        data.insert(format!("{NEXT}{name}"), value);
                    }
                }
                if let Some(id) = &answering {
                    answer(data, id, "");
                }
            })
            .await?;
        if self.plugged_in.load(Ordering::Relaxed) {
            return Ok(());
        }
        let staged = prefixed(&written, NEXT);
        if self.write_live(state, staged.as_ref()).await? {
            self.update_rotation(false, |data| data.retain(|key, _| !key.starts_with(NEXT)))
                .await?;
        }
        Ok(())
    }

    /// A Warning Event about the rotation Secret saying why request `id` was refused, for
    /// `kubectl events`; a failure to write it is logged, the answer stands regardless.
    async fn refusal_event(&self, id: &str, reason: &str) {
        let now = micro_time(k8s_openapi::jiff::Timestamp::now());
        let mut event = DynamicObject::new("", &events::resource()).within(&self.namespace);
        event.metadata.name = None;
        event.metadata.generate_name = Some(format!("{ROTATION_SECRET}."));
        event.data = serde_json::json!({
            "eventTime": now,
            "reportingController": CONTROLLER_NAME,
            "reportingInstance": EventSettings::instance_from_env(),
            "action": "RotateCA",
            "reason": "RotationRequestRefused",
            "regarding": {"apiVersion": "v1", "kind": "Secret",
                          "namespace": self.namespace, "name": ROTATION_SECRET},
            "note": truncate(format!("request {id}: {reason}"), MAX_NOTE),
            "type": TYPE,
        });
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.api.clone().into_client(),
            &self.namespace,
            &events::resource(),
        );
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, "writing the Event of a refused CA rotation request failed");
        }
    }

    async fn next_request(&self) -> Result<Option<Request>, CaError> {
        let data = self.rotation_data().await?;
        let Some(ByteString(bytes)) = data.get(REQUEST) else {
            return Ok(None);
        };
        let (id, kind, reissue_within) = match serde_json::from_slice::<RequestRecord>(bytes) {
            Ok(request) => {
                let ms = std::time::Duration::from_millis(request.reissue_within_ms);
                let kind = match request.kind.as_str() {
                    "rotate-root" => RequestKind::RotateRoot {
                        new_root_ttl: std::time::Duration::from_secs(request.new_root_ttl_secs),
                    },
                    "replace" => {
                        RequestKind::Replace(prefixed(&data, REQUEST_FILES).unwrap_or_default())
                    }
                    other => RequestKind::Malformed(format!(
                        "kind {other:?}: not rotate-root or replace"
                    )),
                };
                (request.id, kind, ms)
            }
            Err(e) => (
                String::new(),
                RequestKind::Malformed(format!("{REQUEST}: {e}")),
                Default::default(),
            ),
        };
        let answered = data
            .get(ANSWER)
            .and_then(|b| serde_json::from_slice::<AnswerRecord>(&b.0).ok())
            .is_some_and(|a| a.id == id && !id.is_empty());
        if answered {
            return Ok(None);
        }
        *lock(&self.answering) = Some(id.clone());
        Ok(Some(Request {
            id,
            kind,
            reissue_within,
        }))
    }
}

impl RotationStore for SecretStore {
    fn load(&self) -> Pending<'_, State> {
        Box::pin(async move { record(&self.namespace, &self.rotation_data().await?) })
    }

    fn live(&self) -> Pending<'_, (Authority, Origin)> {
        Box::pin(async move {
            let (_, authority, origin) = self.recorded().await?;
            Ok((authority, origin))
        })
    }

    fn snapshot(&self) -> Pending<'_, (State, Authority, Origin)> {
        Box::pin(self.recorded())
    }

    fn stage(&self, next: Material) -> Pending<'_, ()> {
        Box::pin(async move {
            if next.contains_key(CA_CERT) || next.contains_key(CA_KEY) {
                return Err(self.bad(
                    PLUGGED_IN_SECRET,
                    format!(
                        "an intermediate ({CA_CERT}, {CA_KEY}) is plugged in through the \
                         {PLUGGED_IN_SECRET} Secret, which stays its owner's: create it with \
                         {ROOT_CERT} holding the current roots and the new ones"
                    ),
                ));
            }
            *lock(&self.pending) = Some(next);
            Ok(())
        })
    }

    fn staged(&self) -> Pending<'_, (Authority, Origin)> {
        Box::pin(async move {
            let data = self.rotation_data().await?;
            let staged = prefixed(&data, NEXT).ok_or(CaError::StagedMissing)?;
            store::load_material(&staged)
        })
    }

    fn enter<'a>(&'a self, state: &'a State) -> Pending<'a, ()> {
        Box::pin(self.enter_state(state))
    }

    fn refusal(&self) -> Option<String> {
        self.plugged_in.load(Ordering::Relaxed).then(|| {
            format!(
                "the CA is plugged in from the Secret {}/{PLUGGED_IN_SECRET}, which stays its \
                 owner's: to rotate it, put the new roots beside the old in its {ROOT_CERT}, \
                 then the new signing material, then drop the old roots; every replica \
                 follows each edit",
                self.namespace
            )
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn changes(&self) -> Option<watch::Receiver<Changes>> {
        let names = [ROTATION_SECRET, CA_SECRET, PLUGGED_IN_SECRET];
        Some(watch_secrets(self.api.clone(), &names))
    }

    fn request(&self) -> Pending<'_, Option<Request>> {
        Box::pin(self.next_request())
    }

    fn reject<'a>(&'a self, id: &'a str, reason: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            lock(&self.answering).take();
            lock(&self.pending).take();
            self.update_rotation(true, |data| answer(data, id, reason))
                .await?;
            self.refusal_event(id, reason).await;
            Ok(())
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers request `id` in `data` (accepted when `rejected` is empty) and removes it.
fn answer(data: &mut Data, id: &str, rejected: &str) {
    data.retain(|key, _| !key.starts_with(REQUEST_FILES));
    let answer = AnswerRecord {
        id: id.to_owned(),
        accepted: rejected.is_empty(),
        rejected: rejected.to_owned(),
        at: now_secs(),
    };
    let text = serde_json::to_vec(&answer).unwrap_or_default();
    data.insert(ANSWER.to_owned(), ByteString(text));
}

/// The empty rotation Secret.
fn rotation_secret(namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(ROTATION_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(ROTATION_SECRET_TYPE.to_owned()),
        data: Some(Data::new()),
        ..Secret::default()
    }
}

/// The record in `data` (idle when absent).
fn record(namespace: &str, data: &Data) -> Result<State, CaError> {
    match data.get(RECORD) {
        None => Ok(State::default()),
        Some(ByteString(bytes)) => serde_json::from_slice(bytes).map_err(|e| CaError::BadSecret {
            secret: format!("{namespace}/{ROTATION_SECRET}"),
            reason: format!("{RECORD}: {e}"),
        }),
    }
}

/// The layout files under `prefix` in `data`; `None` when there are none.
pub fn prefixed(data: &Data, prefix: &str) -> Option<Material> {
    let material: Material = LAYOUT
        .iter()
        .filter_map(|name| {
            let ByteString(bytes) = data.get(&format!("{prefix}{name}"))?;
            Some((
                (*name).to_owned(),
                String::from_utf8_lossy(bytes).into_owned(),
            ))
        })
        .collect();
    (!material.is_empty()).then_some(material)
}

/// `istio-ca-secret` as a root's material under the CA folder's names: the key, and every
/// published root, the signing one first.
fn ca_material(namespace: &str, secret: &Secret) -> Result<Material, CaError> {
    let empty = Data::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let (cert, key) = (text(CA_CERT), text(CA_KEY));
    if cert.trim().is_empty() || key.trim().is_empty() {
        return Err(CaError::BadSecret {
            secret: format!("{namespace}/{CA_SECRET}"),
            reason: format!("{CA_CERT} or {CA_KEY} is missing"),
        });
    }
    let roots = merge_roots(&[&cert, &text(ROOT_CERT)])?;
    Ok(Material::from([
        (ROOT_KEY.to_owned(), key),
        (ROOT_CERT.to_owned(), roots),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> ByteString {
        ByteString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_ca_secret_reads_as_a_root_folder_with_the_signing_root_first() {
        let (signer, other) = (
            Authority::generate_root("cluster.local", store::ROOT_TTL).unwrap(),
            Authority::generate_root("cluster.local", store::ROOT_TTL).unwrap(),
        );
        let secret = Secret {
            data: Some(Data::from([
                (CA_CERT.to_owned(), bytes(&signer.root_pem())),
                (CA_KEY.to_owned(), bytes(signer.key_pem())),
                (ROOT_CERT.to_owned(), bytes(&other.root_pem())),
            ])),
            ..Secret::default()
        };
        let material = ca_material("ns", &secret).unwrap();
        let (loaded, origin) = store::load_material(&material).unwrap();
        assert_eq!(origin, Origin::Reloaded);
        assert_eq!(
            loaded.roots(),
            [signer.roots()[0].clone(), other.roots()[0].clone()]
        );
        let without_key = Secret {
            data: Some(Data::from([(
                CA_CERT.to_owned(),
                bytes(&signer.root_pem()),
            )])),
            ..Secret::default()
        };
        let err = ca_material("ns", &without_key).unwrap_err().to_string();
        assert!(err.contains("ns/istio-ca-secret"), "{err}");
    }

    #[test]
    fn staged_and_requested_files_are_read_by_prefix_and_layout_name() {
        let data = Data::from([
            (format!("{NEXT}{ROOT_CERT}"), bytes("cert")),
            (format!("{NEXT}{ROOT_KEY}"), bytes("key")),
            (format!("{REQUEST_FILES}{ROOT_CERT}"), bytes("other")),
            (format!("{NEXT}unrelated.pem"), bytes("x")),
        ]);
        let next = prefixed(&data, NEXT).unwrap();
        assert_eq!(next.keys().collect::<Vec<_>>(), [ROOT_CERT, ROOT_KEY]);
        assert_eq!(next[ROOT_KEY], "key");
        assert!(prefixed(&Data::new(), NEXT).is_none());
    }

    #[test]
    fn an_answer_removes_the_request_and_its_files() {
        let mut data = Data::from([
            (REQUEST.to_owned(), bytes("{}")),
            (format!("{REQUEST_FILES}{ROOT_KEY}"), bytes("key")),
            (RECORD.to_owned(), bytes("{}")),
        ]);
        answer(&mut data, "r1", "bad key");
        assert_eq!(data.keys().collect::<Vec<_>>(), [ANSWER, RECORD]);
        let answer: AnswerRecord = serde_json::from_slice(&data[ANSWER].0).unwrap();
        assert_eq!((answer.id.as_str(), answer.accepted), ("r1", false));
        assert_eq!(answer.rejected, "bad key");
    }
}
