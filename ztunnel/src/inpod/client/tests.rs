//! The client against a scripted agent on a real ZDS socket.

use std::os::fd::{AsFd, OwnedFd};

use api::zds::{self, WorkloadResponse, workload_request::Payload, workload_response};
use test_support::TempDir;

use super::*;
use crate::inpod::registry::tests::{FakeLauncher, new_netns};
use crate::zds::ZdsListener;

struct Fixture {
    _dir: TempDir,
    listener: ZdsListener,
    launcher: Arc<FakeLauncher>,
    readiness: Readiness,
    dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    stop: watch::Sender<bool>,
    client: tokio::task::JoinHandle<()>,
}

fn fixture() -> Fixture {
    let dir = TempDir::new("ztunnel-inpod");
    let socket = dir.join("zds.sock");
    let listener = ZdsListener::bind(&socket).unwrap();
    let launcher = Arc::new(FakeLauncher::default());
    let readiness = Readiness::new();
    let settings = InpodSettings {
        zds_socket: socket,
        del_drain_deadline: Duration::from_secs(5),
        drain_deadline: Duration::from_secs(30),
    };
    let client = InpodClient::new(settings, launcher.clone(), readiness.clone());
    let dump = client.dump();
    let (stop, stopped) = watch::channel(false);
    let client = tokio::spawn(client.run(stopped));
    Fixture {
        _dir: dir,
        listener,
        launcher,
        readiness,
        dump,
        stop,
        client,
    }
}

/// Accepts the proxy's connection and checks its hello.
async fn accept(listener: &ZdsListener) -> ZdsStream {
    let agent = listener.accept().await.unwrap();
    let (hello, fd): (zds::ZdsHello, Option<OwnedFd>) = agent.recv().await.unwrap();
    assert_eq!(hello.version, zds::Version::V1 as i32);
    assert!(fd.is_none());
    agent
}

/// Sends one request and returns the Ack's error text.
async fn request(agent: &ZdsStream, payload: Payload, fd: Option<&OwnedFd>) -> String {
    let request = WorkloadRequest {
        payload: Some(payload),
    };
    agent.send(&request, fd.map(|fd| fd.as_fd())).await.unwrap();
    let (response, _): (WorkloadResponse, _) = agent.recv().await.unwrap();
    match response.payload {
        Some(workload_response::Payload::Ack(ack)) => ack.error,
        None => panic!("response without an Ack"),
    }
}

fn add(uid: &str) -> Payload {
    Payload::Add(zds::AddWorkload {
        uid: uid.into(),
        workload_info: Some(zds::WorkloadInfo {
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            service_account: "default".into(),
        }),
    })
}

fn snapshot_sent() -> Payload {
    Payload::SnapshotSent(zds::SnapshotSent {})
}

#[tokio::test]
async fn snapshot_makes_ready_and_a_restarted_agent_reconciles() {
    let f = fixture();
    let agent = accept(&f.listener).await;
    assert_eq!(f.readiness.pending(), [READINESS_CONDITION]);

    let ns_a = new_netns();
    assert_eq!(request(&agent, add("a"), Some(&ns_a)).await, "");
    assert_eq!(request(&agent, add("b"), Some(&new_netns())).await, "");
    assert!(!f.readiness.pending().is_empty(), "snapshot not complete");
    assert_eq!(request(&agent, snapshot_sent(), None).await, "");
    assert!(f.readiness.pending().is_empty());
    assert_eq!((f.dump)()["zds"]["snapshotReceived"], true);

    // The agent restarts; pods keep running meanwhile and nothing is drained.
    drop(agent);
    let agent = accept(&f.listener).await;
    assert!(!f.readiness.pending().is_empty());
    assert_eq!(f.launcher.take_events(), ["start a #0", "start b #1"]);

    // Its snapshot re-sends a in the same namespace and no longer has b.
    assert_eq!(request(&agent, add("a"), Some(&ns_a)).await, "");
    assert_eq!(request(&agent, snapshot_sent(), None).await, "");
    assert!(f.readiness.pending().is_empty());

    f.stop.send(true).unwrap();
    f.client.await.unwrap();
    let mut events = f.launcher.take_events();
    events.sort();
    assert_eq!(events, ["drain a #0 30s", "drain b #1 5s"]);
}

#[tokio::test]
async fn a_failed_start_is_answered_with_its_error() {
    let f = fixture();
    f.launcher.failing.lock().unwrap().insert("a".to_string());
    let agent = accept(&f.listener).await;
    let error = request(&agent, add("a"), Some(&new_netns())).await;
    assert!(error.contains("address in use"), "{error}");
    assert_eq!(request(&agent, snapshot_sent(), None).await, "");
    // Still connected, but not ready while a pod is not served.
    assert_eq!(f.readiness.pending(), [READINESS_CONDITION]);
    assert_eq!((f.dump)()["workloadState"]["a"]["state"], "Pending");
    f.stop.send(true).unwrap();
    f.client.await.unwrap();
}

#[tokio::test]
async fn protocol_errors_are_answered_then_the_proxy_reconnects() {
    let f = fixture();
    let agent = accept(&f.listener).await;
    // Del before the snapshot breaks the protocol.
    let error = request(
        &agent,
        Payload::Del(zds::DelWorkload { uid: "a".into() }),
        None,
    )
    .await;
    assert!(error.contains("protocol error"), "{error}");
    // An Add without its descriptor too, on the next connection.
    let agent = accept(&f.listener).await;
    let error = request(&agent, add("a"), None).await;
    assert!(error.contains("descriptor"), "{error}");
    let agent = accept(&f.listener).await;
    assert_eq!(request(&agent, snapshot_sent(), None).await, "");
    assert!(f.readiness.pending().is_empty());
    f.stop.send(true).unwrap();
    f.client.await.unwrap();
    assert!(f.launcher.take_events().is_empty());
}

#[tokio::test]
async fn a_protocol_error_closes_the_connection_before_the_pause() {
    let f = fixture();
    let agent = accept(&f.listener).await;
    let del = Payload::Del(zds::DelWorkload { uid: "a".into() });
    let error = request(&agent, del, None).await;
    assert!(error.contains("protocol error"), "{error}");
    // A request sent after the error is not left unanswered on an open socket.
    let request = WorkloadRequest {
        payload: Some(snapshot_sent()),
    };
    let _ = agent.send(&request, None).await;
    let answer = tokio::time::timeout(PAUSE_AFTER_ERROR / 4, agent.recv::<WorkloadResponse>())
        .await
        .expect("the connection stayed open after the protocol error");
    // Closed: an end of file, or a reset when the request was still unread as it closed.
    let kind = answer.unwrap_err().kind();
    assert!(
        matches!(
            kind,
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{kind:?}"
    );
    f.stop.send(true).unwrap();
    f.client.await.unwrap();
}

#[tokio::test]
async fn the_proxy_waits_for_the_agent_socket() {
    let dir = TempDir::new("ztunnel-inpod");
    let socket = dir.join("zds.sock");
    let launcher = Arc::new(FakeLauncher::default());
    let settings = InpodSettings {
        zds_socket: socket.clone(),
        del_drain_deadline: Duration::from_secs(1),
        drain_deadline: Duration::from_secs(1),
    };
    let (stop, stopped) = watch::channel(false);
    let client = tokio::spawn(InpodClient::new(settings, launcher, Readiness::new()).run(stopped));
    // The socket is bound only after the client has started trying to connect.
    tokio::task::yield_now().await;
    let listener = ZdsListener::bind(&socket).unwrap();
    let agent = accept(&listener).await;
    assert_eq!(request(&agent, snapshot_sent(), None).await, "");
    stop.send(true).unwrap();
    client.await.unwrap();
}
