//! Tests of the controller channel against real TLS servers on loopback.

use std::sync::Mutex;

use hbone::Authority;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioExecutor;
use test_support::TempDir;
use tokio::net::TcpListener;

use super::*;

const CONTROLLER: &str = "spiffe://cluster.local/ns/istio-system/sa/controller";

fn config(dir: &TempDir, ca: &Authority, address: String) -> ControlPlaneSettings {
    ControlPlaneSettings {
        address,
        root_cert: dir.write("root.pem", ca.root_pem()),
        token_file: Some(dir.write("token", "  node-token\n")),
        server_identity: CONTROLLER.into(),
        learned_roots: Default::default(),
    }
}

/// Serves HTTP/2 over TLS as `identity` on loopback, answering every gRPC call
/// UNIMPLEMENTED and recording its `authorization` header. Serves until the test ends.
async fn serve(ca: &Authority, identity: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let cert = ca
        .issue(&identity.parse().unwrap(), Duration::from_secs(600))
        .unwrap();
    serve_certificate(&cert).await
}

/// The controller's serving certificate: its identity and Istio's names for istiod.
fn controller_certificate(ca: &Authority) -> hbone::WorkloadCertificate {
    let names = [
        "istiod.istio-system.svc",
        "istiod.istio-system.svc.cluster.local",
    ]
    .map(|n| n.parse().unwrap());
    ca.issue_serving(
        &CONTROLLER.parse().unwrap(),
        &names,
        Duration::from_secs(600),
    )
    .unwrap()
}

/// Like [`serve`], presenting `cert`; the server names clients sent (SNI) are recorded
/// beside the tokens, as `sni:<name>`.
async fn serve_certificate(cert: &hbone::WorkloadCertificate) -> (String, Arc<Mutex<Vec<String>>>) {
    let tls = hbone::tls::server_config_without_client_auth(cert).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(sni) = tls.get_ref().1.server_name() {
                    record.lock().unwrap().push(format!("sni:{sni}"));
                }
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let token = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    record.lock().unwrap().push(token);
                    async move {
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "12")
                            .body(Empty::<Bytes>::new())
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (address, seen)
}

/// Makes one gRPC call over `control` and checks that it reached the server (answered
/// UNIMPLEMENTED) with the node token, and that it was the server's only call.
async fn assert_call_carries_the_token(control: &ControlPlane, seen: &Mutex<Vec<String>>) {
    let mut client = api::ca::istio_certificate_service_client::IstioCertificateServiceClient::new(
        control.channel.clone(),
    );
    let mut request = tonic::Request::new(api::ca::IstioCertificateRequest::default());
    control.authorize(&mut request);
    let status = client.create_certificate(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(*seen.lock().unwrap(), ["Bearer node-token"]);
}

#[tokio::test]
async fn connects_and_sends_the_token() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let (address, seen) = serve(&ca, CONTROLLER).await;
    let control = ControlPlane::connect(&config(&dir, &ca, format!("https://{address}")))
        .await
        .unwrap();
    assert_call_carries_the_token(&control, &seen).await;
}

#[tokio::test]
async fn retries_until_the_controller_can_be_reached() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let (address, seen) = serve(&ca, CONTROLLER).await;
    let mut config = config(&dir, &ca, address);
    // The roots are not there yet (as before a mounted secret appears): attempts fail.
    let roots = std::mem::replace(&mut config.root_cert, dir.join("later.pem"));
    let retrying = {
        let config = config.clone();
        tokio::spawn(async move { ControlPlane::connect_retrying(&config).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !retrying.is_finished(),
        "no attempt can succeed without roots"
    );
    std::fs::copy(&roots, &config.root_cert).unwrap();
    let control = tokio::time::timeout(Duration::from_secs(60), retrying)
        .await
        .expect("connects once the roots are there")
        .unwrap();
    assert_call_carries_the_token(&control, &seen).await;
}

#[tokio::test]
async fn refuses_a_server_with_another_identity() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let (address, _) = serve(&ca, "spiffe://cluster.local/ns/istio-system/sa/impostor").await;
    let Err(ControlError::Connect {
        address: reported, ..
    }) = ControlPlane::connect(&config(&dir, &ca, address.clone())).await
    else {
        panic!("expected a connect error");
    };
    assert_eq!(reported, address);
}

#[tokio::test]
async fn refuses_a_server_signed_by_other_roots() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let other = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let (address, _) = serve(&other, CONTROLLER).await;
    let result = ControlPlane::connect(&config(&dir, &ca, address)).await;
    assert!(matches!(result, Err(ControlError::Connect { .. })));
}

#[tokio::test]
async fn trusts_the_roots_learned_over_xds_beside_its_root_file() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let next = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    // The controller already serves with the next root; the root file is an old copy.
    let (address, seen) = serve(&next, CONTROLLER).await;
    let config = config(&dir, &ca, address);
    assert!(ControlPlane::connect(&config).await.is_err());
    config
        .learned_roots
        .set(Arc::new(vec![next.roots()[0].clone()]));
    let control = ControlPlane::connect(&config).await.unwrap();
    assert_call_carries_the_token(&control, &seen).await;
    // An unreadable root file leaves the learned roots.
    std::fs::remove_file(&config.root_cert).unwrap();
    let control = ControlPlane::connect(&config).await.unwrap();
    assert!(control.learned_roots().get().is_some());
}

#[tokio::test]
async fn reports_an_unreachable_controller() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    // A port that was just free: nothing listens there.
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let err = ControlPlane::connect(&config(&dir, &ca, address.clone()))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains(&address), "{text}");
    assert!(matches!(err, ControlError::Connect { .. }));
}

#[tokio::test]
async fn configuration_errors() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let base = config(&dir, &ca, "127.0.0.1:1".into());
    let config_error = |c: ControlPlaneSettings| async move {
        match ControlPlane::connect(&c).await {
            Err(ControlError::Config(reason)) => reason,
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("expected a configuration error"),
        }
    };
    let missing = ControlPlaneSettings {
        root_cert: dir.join("absent.pem"),
        ..base.clone()
    };
    assert!(config_error(missing).await.contains("absent.pem"));
    let not_pem = ControlPlaneSettings {
        root_cert: dir.write("garbage.pem", "not a certificate"),
        ..base.clone()
    };
    assert!(config_error(not_pem).await.contains("garbage.pem"));
    for bad in [
        "spiffe://cluster.local/controller",
        "not a name",
        "https://istiod",
    ] {
        let bad_identity = ControlPlaneSettings {
            server_identity: bad.into(),
            ..base.clone()
        };
        let reason = config_error(bad_identity).await;
        assert!(reason.contains("controller identity"), "{bad}: {reason}");
    }
    let empty_token = ControlPlaneSettings {
        token_file: Some(dir.write("empty", " \n")),
        ..base.clone()
    };
    assert!(config_error(empty_token).await.contains("is empty"));
    let bad_token = ControlPlaneSettings {
        token_file: Some(dir.write("bad", "line1\nline2")),
        ..base
    };
    assert!(config_error(bad_token).await.contains("not allowed"));
}

#[tokio::test]
async fn token_is_trimmed_and_addresses_may_be_urls() {
    let dir = TempDir::new("proxy-core-control");
    let token = read_token(&dir.write("t", "\tabc.def\r\n")).unwrap();
    assert_eq!(token.to_str().unwrap(), "Bearer abc.def");
    assert_eq!(authority("https://istiod:15012/"), "istiod:15012");
    assert_eq!(authority("istiod:15012"), "istiod:15012");
    let plane = ControlPlane {
        channel: Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
        token: None,
        learned_roots: LearnedRoots::default(),
    };
    let mut request = tonic::Request::new(());
    plane.authorize(&mut request);
    assert!(request.metadata().get("authorization").is_none());
}

#[tokio::test]
async fn a_controller_named_by_dns_is_checked_by_name_and_sent_that_name() {
    let dir = TempDir::new("proxy-core-control");
    let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let (address, seen) = serve_certificate(&controller_certificate(&ca)).await;
    let by_name = ControlPlaneSettings {
        server_identity: "istiod.istio-system.svc".into(),
        ..config(&dir, &ca, address.clone())
    };
    let control = ControlPlane::connect(&by_name).await.unwrap();
    let mut client = api::ca::istio_certificate_service_client::IstioCertificateServiceClient::new(
        control.channel.clone(),
    );
    let mut request = tonic::Request::new(api::ca::IstioCertificateRequest::default());
    control.authorize(&mut request);
    let status = client.create_certificate(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        *seen.lock().unwrap(),
        ["sni:istiod.istio-system.svc", "Bearer node-token"]
    );

    // The same certificate still answers the SPIFFE check, without SNI.
    seen.lock().unwrap().clear();
    let by_identity = ControlPlane::connect(&config(&dir, &ca, address.clone()))
        .await
        .unwrap();
    assert_call_carries_the_token(&by_identity, &seen).await;

    // A name the certificate does not carry is refused, naming the name.
    let other = ControlPlaneSettings {
        server_identity: "istiod.other.svc".into(),
        ..config(&dir, &ca, address)
    };
    let err = ControlPlane::connect(&other)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not valid for name"), "{err}");
}
