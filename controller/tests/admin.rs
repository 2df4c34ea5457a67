//! The admin endpoint over real TCP: `/ready` says why the controller is not ready, the
//! config dump waits for the first translation.

use std::sync::Arc;

use controller::admin::{self, AdminState, Readiness};
use controller::translate::{Published, Snapshot};
use controller::xds::Clients;
use test_support::raw_http;
use tokio::net::TcpListener;
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
        clients: Clients::default(),
        rotation: None,
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
    let reply = raw_http::get(admin.addr, path).await;
    (reply.status, reply.body)
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
