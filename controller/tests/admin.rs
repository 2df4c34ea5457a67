//! The admin endpoint over real TCP: `/ready` says why the controller is not ready, the
//! config dump waits for the first translation.

use std::sync::Arc;

use controller::admin::{self, AdminState, Readiness};
use controller::translate::{Published, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running admin endpoint and the handles that drive what it answers.
struct Admin {
    addr: std::net::SocketAddr,
    readiness: Readiness,
    snapshots: watch::Sender<Published>,
}

async fn start() -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let (snapshots, receiver) = watch::channel(None);
    let state = AdminState {
        // A registry of its own: nothing counts into it.
        metrics: Arc::default(),
        snapshots: receiver,
        readiness: readiness.clone(),
        remote_debug: false,
    };
    tokio::spawn(admin::serve(listener, state, std::future::pending()));
    Admin {
        addr,
        readiness,
        snapshots,
    }
}

/// GETs `path`: the status code and the body.
async fn get(admin: &Admin, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(admin.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn ready_says_why_not_and_the_dump_waits_for_the_first_translation() {
    let admin = start().await;
    assert_eq!(
        get(&admin, "/ready").await,
        (
            503,
            "not ready: no configuration translated yet\n".to_owned()
        )
    );
    assert_eq!(get(&admin, "/debug/config_dump").await.0, 503);

    admin
        .snapshots
        .send_replace(Some(Arc::new(Snapshot::default())));
    admin.readiness.set_ready();
    assert_eq!(get(&admin, "/ready").await, (200, "ready\n".to_owned()));
    let (status, dump) = get(&admin, "/debug/config_dump").await;
    assert_eq!((status, dump.trim()), (200, "{}"));

    // Translation fails: still serving, not ready, and why.
    admin
        .readiness
        .set_failure("translation panicked: index out of bounds".to_owned());
    assert_eq!(
        get(&admin, "/ready").await,
        (
            503,
            "not ready: translation panicked: index out of bounds\n".to_owned()
        )
    );
    assert_eq!(get(&admin, "/debug/config_dump").await.0, 200);
    admin.readiness.recovered();
    assert_eq!(get(&admin, "/ready").await.0, 200);
}
