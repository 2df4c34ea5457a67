//! `meshctl ca status|rotate-root|replace` in Kubernetes mode. The operator's request goes
//! where RBAC guards it: into the rotation Secret of the root namespace
//! (`mesh-ca-rotation`, keys `request.json` and, for `replace`, `request.<file>`), written
//! at the version read; the leading controller replica alone acts on it and answers in
//! `answer.json` (accepted with phase 1 recorded, or refused with the reason, printed here).
//! `status` reads the record there and the published roots from the `istio-ca-root-cert`
//! ConfigMap, and the proxies' progress from a replica's `/debug/ca` through the service
//! proxy when that answers (the controller's `--remote-debug`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use controller::ca::rotation::{LAYOUT, State, read_material};
use controller::ca::rotation_secret::{
    ANSWER, AnswerRecord, RECORD, REQUEST, REQUEST_FILES, ROTATION_SECRET, ROTATION_SECRET_TYPE,
    RequestRecord,
};
use hbone::cert::{certificate_validity, certificates_from_pem, serial_hex};
use serde_json::{Value, json};

use super::api::{ApiServer, SYSTEM_NAMESPACE};
use super::error::{ClusterError, Result};
use crate::operator::ca::status_text;
use crate::operator::format::wants_json;
use crate::sandbox::cli::{CaCommand, PhaseArgs};

/// The rotation Secret's path.
pub fn rotation_path() -> String {
    format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{ROTATION_SECRET}")
}

/// The trust bundle ConfigMap's path.
fn roots_path() -> String {
    format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps/istio-ca-root-cert")
}

/// How long the leader is given to answer a request before meshctl gives up waiting.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How often the rotation Secret is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// What a `ca` verb asks the leader, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// `request.json`.
    pub request: RequestRecord,
    /// The new material, by file name (`replace`).
    pub files: BTreeMap<String, String>,
}

/// The request `command` makes (`None` for `status`); `id` names it.
pub fn asked(command: &CaCommand, id: &str) -> Result<Option<Asked>> {
    let (kind, ttl, phases, files) = match command {
        CaCommand::Status(_) => return Ok(None),
        CaCommand::RotateRoot(a) => {
            if a.new_root_ttl < Duration::from_secs(3600) {
                return Err(ClusterError::Invalid("--new-root-ttl: at least 1h".into()));
            }
            ("rotate-root", a.new_root_ttl, &a.phases, BTreeMap::new())
        }
        CaCommand::Replace(a) => (
            "replace",
            Duration::ZERO,
            &a.phases,
            read_layout(&a.folder)?,
        ),
    };
    Ok(Some(Asked {
        request: RequestRecord {
            id: id.to_owned(),
            kind: kind.to_owned(),
            new_root_ttl_secs: ttl.as_secs(),
            reissue_within_ms: phases.reissue_within.as_millis() as u64,
        },
        files,
    }))
}

/// The CA layout files of `folder` (those present, read as the controller reads a folder);
/// at least one.
fn read_layout(folder: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let files = read_material(folder).map_err(|e| ClusterError::Local(e.to_string()))?;
    if files.is_empty() {
        return Err(ClusterError::Local(format!(
            "{}: no CA files ({})",
            folder.display(),
            LAYOUT.join(", ")
        )));
    }
    Ok(files)
}

/// The rotation Secret `existing` (or a new one) carrying `asked`, any earlier request's
/// keys replaced.
pub fn with_request(existing: Option<Value>, asked: &Asked) -> Value {
    let mut secret = existing.unwrap_or_else(|| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": ROTATION_SECRET_TYPE,
               "metadata": {"name": ROTATION_SECRET, "namespace": SYSTEM_NAMESPACE},
               "data": {}})
    });
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    let data = secret["data"].as_object_mut().expect("an object");
    data.retain(|key, _| !key.starts_with(REQUEST_FILES));
    let encode = |text: &[u8]| Value::String(STANDARD.encode(text));
    let request = serde_json::to_vec(&asked.request).unwrap_or_default();
    data.insert(REQUEST.to_owned(), encode(&request));
    for (name, text) in &asked.files {
        data.insert(format!("{REQUEST_FILES}{name}"), encode(text.as_bytes()));
    }
    secret
}

/// The text of `key` in a Secret's data.
fn decoded(secret: &Value, key: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret["data"][key].as_str()?).ok()
}

/// The record in the rotation Secret (idle without one).
pub fn record(secret: Option<&Value>) -> Result<State> {
    match secret.and_then(|s| decoded(s, RECORD)) {
        None => Ok(State::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ClusterError::Invalid(format!("{ROTATION_SECRET} {RECORD}: {e}"))),
    }
}

/// The leader's answer to request `id`, once there is one.
pub fn answer_to(secret: &Value, id: &str) -> Option<AnswerRecord> {
    let answer: AnswerRecord = serde_json::from_slice(&decoded(secret, ANSWER)?).ok()?;
    (answer.id == id).then_some(answer)
}

/// `ca status` as JSON, in the shape of the controller's `/debug/ca`: the record, the roots
/// of the published bundle, and (from `debug`, a replica's `/debug/ca` at the same phase)
/// the proxies' progress and what the phase waits for.
pub fn status(state: &State, roots_pem: &str, debug: Option<&Value>, now: u64) -> Value {
    let mut status = serde_json::to_value(state).unwrap_or_default();
    let roots: Vec<Value> = certificates_from_pem(roots_pem, "roots")
        .unwrap_or_default()
        .iter()
        .map(|der| {
            let expires = certificate_validity(der)
                .ok()
                .and_then(|(_, at)| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            json!([serial_hex(der).unwrap_or_default(), expires])
        })
        .collect();
    status["phase_number"] = json!(state.phase.number());
    status["roots"] = json!(roots);
    let same_phase = debug.filter(|d| d["phase_number"] == status["phase_number"]);
    match same_phase {
        Some(debug) => {
            status["proxies"] = debug["proxies"].clone();
            status["waiting_for"] = debug["waiting_for"].clone();
        }
        None => {
            status["proxies"] = json!({"current": 0, "stale": [], "not_subscribed": 0});
            status["waiting_for"] = json!(waiting_for(state, now));
        }
    }
    status
}

/// What the recorded phase waits for, as far as the record tells.
fn waiting_for(state: &State, now: u64) -> String {
    use controller::ca::rotation::Phase;
    match state.phase {
        Phase::Idle => "nothing (no rotation in progress)".to_owned(),
        Phase::Reissuing if now < state.drop_after => format!(
            "certificates from the old signer to expire ({} s more)",
            state.drop_after - now
        ),
        _ => "every proxy to load the trust bundle (the proxies' progress shows with the \
              controller's --remote-debug)"
            .to_owned(),
    }
}

/// Runs a `ca` verb against the cluster.
pub async fn run(api: &ApiServer, command: CaCommand) -> Result<i32> {
    let id = format!(
        "meshctl-{}-{}",
        std::process::id(),
        crate::sandbox::host::state::now()
    );
    let output = match &command {
        CaCommand::Status(a) => a.output.clone(),
        CaCommand::RotateRoot(a) => a.phases.output.clone(),
        CaCommand::Replace(a) => a.phases.output.clone(),
    };
    let json = wants_json(output.as_deref()).map_err(ClusterError::Invalid)?;
    let wait = match &command {
        CaCommand::Status(_) => false,
        CaCommand::RotateRoot(a) => phases_wait(&a.phases),
        CaCommand::Replace(a) => phases_wait(&a.phases),
    };
    let Some(asked) = asked(&command, &id)? else {
        print(&current(api).await?, json);
        return Ok(0);
    };
    write_request(api, &asked).await?;
    let answer = await_answer(api, &id).await?;
    if !answer.accepted {
        return Err(ClusterError::Invalid(format!(
            "the controller refused the request: {}",
            answer.rejected
        )));
    }
    let started = current(api).await?;
    print(&started, json);
    if wait {
        follow(api, started["phase_number"].as_u64(), json).await?;
    }
    Ok(0)
}

fn phases_wait(phases: &PhaseArgs) -> bool {
    phases.wait
}

/// Writes `asked` into the rotation Secret at the version read (created when absent),
/// reading again after a conflict.
async fn write_request(api: &ApiServer, asked: &Asked) -> Result<()> {
    let path = rotation_path();
    for _ in 0..5 {
        let existing = api.object(&path).await?;
        let (method, target) = match existing {
            Some(_) => ("PUT", path.clone()),
            None => (
                "POST",
                format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets"),
            ),
        };
        let body = with_request(existing, asked);
        let answer = api.send_json(method, &target, &body).await?;
        match answer.status {
            200 | 201 => return Ok(()),
            409 => continue,
            status => {
                return Err(ClusterError::Status {
                    path: target,
                    status,
                    body: answer.text(),
                });
            }
        }
    }
    Err(ClusterError::Invalid(format!(
        "{ROTATION_SECRET} changed concurrently at every attempt"
    )))
}

/// Waits for the leader's answer to `id`.
async fn await_answer(api: &ApiServer, id: &str) -> Result<AnswerRecord> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        if let Some(secret) = api.object(&rotation_path()).await?
            && let Some(answer) = answer_to(&secret, id)
        {
            return Ok(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::Invalid(format!(
                "no controller replica answered the request in {} s: does one lead \
                 (leader_election_master_status 1)? The request stays in \
                 {SYSTEM_NAMESPACE}/{ROTATION_SECRET}",
                ANSWER_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The status as recorded now.
async fn current(api: &ApiServer) -> Result<Value> {
    let secret = api.object(&rotation_path()).await?;
    let state = record(secret.as_ref())?;
    let roots = api
        .object(&roots_path())
        .await?
        .and_then(|cm| cm["data"]["root-cert.pem"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let debug = api
        .service_get(SYSTEM_NAMESPACE, "istiod", 15014, "/debug/ca")
        .await
        .ok()
        .filter(|a| a.status == 200)
        .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok());
    let now = crate::sandbox::host::state::now();
    let mut status = status(&state, &roots, debug.as_ref(), now);
    if let Some(answer) = secret
        .as_ref()
        .and_then(|s| decoded(s, ANSWER))
        .and_then(|b| serde_json::from_slice::<AnswerRecord>(&b).ok())
    {
        status["last_request"] = json!(answer);
    }
    Ok(status)
}

/// Prints each phase as it begins until the rotation is over.
async fn follow(api: &ApiServer, mut phase: Option<u64>, json: bool) -> Result<()> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = current(api).await?;
        if status["phase_number"].as_u64() != phase {
            phase = status["phase_number"].as_u64();
            print(&status, json);
            if phase == Some(0) {
                return Ok(());
            }
        }
    }
}

fn print(status: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string(status).unwrap_or_default());
    } else {
        println!(
            "{}",
            status_text(status, crate::sandbox::host::state::now())
        );
        if let Some(rejected) = status["last_request"]["rejected"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            println!("LAST REQUEST  refused: {rejected}");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use controller::ca::rotation::Phase;

    use super::*;
    use crate::sandbox::cli::SandboxCommand;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SandboxCommand,
    }

    fn ca(args: &[&str]) -> CaCommand {
        match Cli::try_parse_from([&["meshctl", "ca"], args].concat())
            .unwrap()
            .command
        {
            SandboxCommand::Ca(command) => command,
            other => panic!("not ca: {other:?}"),
        }
    }

    #[test]
    fn rotate_root_asks_with_its_options_and_refuses_a_short_ttl() {
        let asked = asked(
            &ca(&[
                "rotate-root",
                "--new-root-ttl",
                "30d",
                "--reissue-within",
                "90s",
            ]),
            "r1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            asked.request,
            RequestRecord {
                id: "r1".into(),
                kind: "rotate-root".into(),
                new_root_ttl_secs: 30 * 86_400,
                reissue_within_ms: 90_000,
            }
        );
        assert!(asked.files.is_empty());
        let err = asked_err(&["rotate-root", "--new-root-ttl", "10m"]);
        assert_eq!(err, "--new-root-ttl: at least 1h");
        assert!(super::asked(&ca(&["status"]), "r").unwrap().is_none());
    }

    fn asked_err(args: &[&str]) -> String {
        super::asked(&ca(args), "r").unwrap_err().to_string()
    }

    #[test]
    fn replace_carries_the_folders_layout_files_into_a_new_or_existing_secret() {
        let dir = test_support::TempDir::new("kube-ca-replace");
        dir.write("root-cert.pem", "CERT");
        dir.write("root-key.pem", "KEY");
        dir.write("notes.txt", "ignored");
        let folder = dir.path().to_str().unwrap();
        let asked = asked(&ca(&["replace", folder]), "r2").unwrap().unwrap();
        assert_eq!(asked.request.kind, "replace");
        assert_eq!(
            asked.files.keys().collect::<Vec<_>>(),
            ["root-cert.pem", "root-key.pem"]
        );

        let created = with_request(None, &asked);
        assert_eq!(created["type"], ROTATION_SECRET_TYPE);
        assert_eq!(created["metadata"]["name"], ROTATION_SECRET);
        assert_eq!(decoded(&created, "request.root-key.pem").unwrap(), b"KEY");
        let request: RequestRecord =
            serde_json::from_slice(&decoded(&created, REQUEST).unwrap()).unwrap();
        assert_eq!(request.id, "r2");

        // An earlier request's files go; the record and the version read stay.
        let existing = json!({"metadata": {"name": ROTATION_SECRET, "resourceVersion": "7"},
                              "data": {"request.ca-key.pem": "eA==", "rotation.json": "e30="}});
        let rotate = super::asked(&ca(&["rotate-root"]), "r3").unwrap().unwrap();
        let updated = with_request(Some(existing), &rotate);
        let keys: Vec<&String> = updated["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["request.json", "rotation.json"]);
        assert_eq!(updated["metadata"]["resourceVersion"], "7");

        let empty = test_support::TempDir::new("kube-ca-empty");
        let err = asked_err(&["replace", empty.path().to_str().unwrap()]);
        assert!(
            err.ends_with(
                "no CA files (root-key.pem, ca-key.pem, root-cert.pem, ca-cert.pem, cert-chain.pem)"
            ),
            "{err}"
        );
    }

    #[test]
    fn answers_are_matched_by_request_id() {
        let answer = AnswerRecord {
            id: "r1".into(),
            accepted: false,
            rejected: "the signing key does not belong to the certificate".into(),
            at: 5,
        };
        let secret =
            json!({"data": {ANSWER: STANDARD.encode(serde_json::to_vec(&answer).unwrap())}});
        assert_eq!(answer_to(&secret, "r1"), Some(answer));
        assert_eq!(answer_to(&secret, "r0"), None);
        assert_eq!(answer_to(&json!({}), "r1"), None);
    }

    #[test]
    fn status_prints_the_record_and_the_published_roots() {
        let root =
            hbone::Authority::generate_root("cluster.local", Duration::from_secs(86_400)).unwrap();
        let state = State {
            phase: Phase::Reissuing,
            since: 1_000,
            drop_after: 1_100,
            ..State::default()
        };
        let status = status(&state, &root.root_pem(), None, 1_040);
        assert_eq!(status["phase_number"], 3);
        assert_eq!(status["roots"].as_array().unwrap().len(), 1);
        let text = status_text(&status, 1_040);
        assert!(text.contains("3 (reissuing)"), "{text}");
        assert!(text.contains("(60 s more)"), "{text}");
        assert!(text.contains("(signing, expires in "), "{text}");

        // A replica's /debug/ca at the same phase tells the proxies' progress.
        let debug = json!({"phase_number": 3, "waiting_for": "1 proxies to load the trust bundle: z",
                           "proxies": {"current": 2, "stale": ["z"], "not_subscribed": 1}});
        let merged = super::status(&state, &root.root_pem(), Some(&debug), 1_040);
        assert_eq!(merged["proxies"]["current"], 2);
        let text = status_text(&merged, 1_040);
        assert!(
            text.contains("2 on the served trust bundle, 1 not yet"),
            "{text}"
        );
        // At another phase it is stale, and not used.
        let idle = json!({"phase_number": 0, "waiting_for": "x", "proxies": {"current": 9}});
        let text = status_text(&super::status(&state, "", Some(&idle), 1_040), 1_040);
        assert!(text.contains("0 on the served trust bundle"), "{text}");
        assert_eq!(record(None).unwrap(), State::default());
    }
}
