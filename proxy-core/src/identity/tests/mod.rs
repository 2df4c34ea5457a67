//! The certificate manager against the real controller CA, in process over loopback TLS.

mod bundle;
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use harness::{Controller, bearer};
use hbone::{Identity, WorkloadCertificate};
use test_support::wait::within;
use tokio::sync::watch;

use super::worker::{INITIAL_BACKOFF, MAX_BACKOFF, next_backoff, refresh_delay};
use super::*;

fn id(namespace: &str, service_account: &str) -> Identity {
    Identity::new(harness::TD, namespace, service_account).unwrap()
}

fn manager(controller: &Controller, ttl: Duration, max_in_flight: usize) -> Arc<CertManager> {
    let client = CaClient::with_authorizer(controller.channel(), bearer);
    CertManager::with_signer(Arc::new(client), CertSettings { ttl, max_in_flight })
}

/// The next certificate on `follow` that is not `previous`.
async fn next_cert(
    follow: &mut watch::Receiver<Option<Arc<WorkloadCertificate>>>,
    previous: Option<&Arc<WorkloadCertificate>>,
) -> Arc<WorkloadCertificate> {
    loop {
        let current = follow.borrow_and_update().clone();
        if let Some(cert) = current
            && previous.is_none_or(|p| !Arc::ptr_eq(p, &cert))
        {
            return cert;
        }
        follow
            .changed()
            .await
            .expect("certificate channel stays open");
    }
}

/// The dump row of `identity`.
fn row(manager: &CertManager, identity: &Identity) -> Option<serde_json::Value> {
    manager
        .dump()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identity"] == identity.to_string())
        .cloned()
}

fn serial(cert: &WorkloadCertificate) -> String {
    hbone::cert::serial_hex(&cert.chain()[0]).unwrap()
}

#[tokio::test]
async fn fetch_issues_a_certificate_for_the_identity() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(3600), 8);

    let cert = manager.fetch(&orders).await.unwrap();
    assert_eq!(
        cert.identity(),
        &orders,
        "the SAN is the impersonated identity"
    );
    assert_eq!(cert.chain().len(), 1);
    let roots = hbone::cert::certificates_from_pem(&controller.roots_pem(), "roots").unwrap();
    assert_eq!(cert.roots(), roots.as_slice(), "roots come with the chain");
    let lifetime = cert.expires_at().duration_since(SystemTime::now()).unwrap();
    assert!(lifetime > Duration::from_secs(3000) && lifetime <= Duration::from_secs(3600));

    // Cached: the same certificate, no second CSR.
    let again = manager.fetch(&orders).await.unwrap();
    assert!(Arc::ptr_eq(&cert, &again));
    assert_eq!(controller.auth.calls.load(Ordering::SeqCst), 1);

    let dump = manager.dump();
    let text = dump.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN"),
        "{text}"
    );
    let r = row(&manager, &orders).unwrap();
    assert_eq!(r["state"], "available");
    assert_eq!(r["certificate"]["serial_number"], serial(&cert));
    assert!(
        r["certificate"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // Fetched but not prefetched: nothing holds readiness back.
    assert!(manager.all_ready());
}

#[tokio::test]
async fn concurrent_fetches_share_one_request() {
    let controller = Controller::start(Duration::from_millis(200)).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(3600), 8);

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let manager = manager.clone();
            let orders = orders.clone();
            tokio::spawn(async move { manager.fetch(&orders).await })
        })
        .collect();
    let mut certs = Vec::new();
    for task in tasks {
        certs.push(task.await.unwrap().unwrap());
    }
    assert!(certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])));
    assert_eq!(controller.auth.calls.load(Ordering::SeqCst), 1, "one CSR");
}

#[tokio::test]
async fn short_lived_certificates_rotate_without_failing_fetches() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(4), 8);
    manager.prefetch(&orders);
    let mut follow = manager.watch(&orders);
    let first = within("the first certificate", next_cert(&mut follow, None)).await;

    // Connections keep asking while the certificate rotates under them.
    let stop = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(AtomicUsize::new(0));
    let fetcher = {
        let (manager, orders, stop, fetched) = (
            manager.clone(),
            orders.clone(),
            stop.clone(),
            fetched.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let cert = manager.fetch(&orders).await.expect("fetch during rotation");
                assert!(!cert.is_expired_at(SystemTime::now()));
                fetched.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let second = within("a rotation", next_cert(&mut follow, Some(&first))).await;
    let third = within("another rotation", next_cert(&mut follow, Some(&second))).await;
    stop.store(true, Ordering::SeqCst);
    fetcher.await.unwrap();
    assert!(fetched.load(Ordering::SeqCst) > 0);

    for cert in [&second, &third] {
        assert_eq!(cert.identity(), &orders);
    }
    assert_ne!(serial(&first), serial(&second));
    assert_ne!(serial(&second), serial(&third));
    assert!(controller.auth.calls.load(Ordering::SeqCst) >= 3);
    assert!(manager.all_ready());
}

#[tokio::test]
async fn a_ca_outage_keeps_the_certificate_and_recovers() {
    let mut controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(6), 8);
    manager.prefetch(&orders);
    let mut follow = manager.watch(&orders);
    let first = within("the first certificate", next_cert(&mut follow, None)).await;

    controller.stop().await;
    within("a failed renewal", async {
        while row(&manager, &orders).unwrap()["state"] != "failed" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = row(&manager, &orders).unwrap();
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    // The old certificate is served for as long as it is valid.
    match manager.fetch(&orders).await {
        Ok(cert) => assert!(Arc::ptr_eq(&cert, &first)),
        Err(e) => assert!(first.is_expired_at(SystemTime::now()), "{e}"),
    }

    controller.restart().await;
    let renewed = within(
        "renewal after the outage",
        next_cert(&mut follow, Some(&first)),
    )
    .await;
    assert_eq!(renewed.identity(), &orders);
    let current = manager.fetch(&orders).await.unwrap();
    assert!(!current.is_expired_at(SystemTime::now()));
}

#[tokio::test]
async fn a_refused_identity_surfaces_the_error() {
    let controller = Controller::start(Duration::ZERO).await;
    let payments = id("shop", "payments");
    let manager = manager(&controller, Duration::from_secs(3600), 8);

    // No pod of the node runs as shop/payments: the CA refuses.
    let err = manager.fetch(&payments).await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::Ca(m) if m.contains("Unauthenticated")),
        "{err}"
    );
    let r = row(&manager, &payments).unwrap();
    assert_eq!(r["state"], "failed");
    assert!(r["certificate"].is_null());

    // Once the pod exists, a later request succeeds (the failure is not cached for long).
    controller.add_pod("shop", "payments");
    let cert = within("a certificate once allowed", async {
        loop {
            match manager.fetch(&payments).await {
                Ok(cert) => break cert,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert_eq!(cert.identity(), &payments);
}

#[tokio::test]
async fn csrs_in_flight_are_bounded() {
    let controller = Controller::start(Duration::from_millis(100)).await;
    let identities: Vec<Identity> = (0..20)
        .map(|i| {
            let (ns, sa) = (format!("ns-{i}"), format!("sa-{i}"));
            controller.add_pod(&ns, &sa);
            id(&ns, &sa)
        })
        .collect();
    let manager = manager(&controller, Duration::from_secs(3600), 8);
    for identity in &identities {
        manager.prefetch(identity);
    }
    assert!(!manager.all_ready());
    for identity in &identities {
        within("every certificate", manager.fetch(identity))
            .await
            .unwrap();
    }
    assert!(manager.all_ready());
    let max = controller.auth.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 8, "{max} CSRs were in flight at once");
    assert!(max >= 2, "the test exercised concurrency ({max})");
    assert_eq!(controller.auth.calls.load(Ordering::SeqCst), 20);

    for identity in &identities {
        manager.release(identity);
    }
    assert_eq!(manager.dump(), serde_json::json!([]));
}

#[tokio::test]
async fn prefetch_is_counted_and_watch_keeps_an_identity() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(3600), 8);

    manager.prefetch(&orders);
    manager.prefetch(&orders);
    let cert = manager.fetch(&orders).await.unwrap();
    manager.release(&orders);
    assert_eq!(row(&manager, &orders).unwrap()["references"], 1);
    let follow = manager.watch(&orders);
    manager.release(&orders);
    assert!(row(&manager, &orders).is_some(), "followed identities stay");
    assert!(Arc::ptr_eq(follow.borrow().as_ref().unwrap(), &cert));
    drop(follow);
    // An extra release is ignored rather than dropping someone else's entry.
    manager.release(&orders);
    manager.prefetch(&orders);
    manager.release(&orders);
    assert!(row(&manager, &orders).is_none(), "forgotten at zero");
    assert_eq!(controller.auth.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_release_wakes_waiting_fetches() {
    // Slow enough that the fetch is still waiting when the identity is released.
    let controller = Controller::start(Duration::from_secs(30)).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(3600), 8);
    manager.prefetch(&orders);
    let waiting = {
        let (manager, orders) = (manager.clone(), orders.clone());
        tokio::spawn(async move { manager.fetch(&orders).await })
    };
    within("the request to reach the CA", async {
        while controller.auth.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    manager.release(&orders);
    let err = within("the waiter", waiting).await.unwrap().unwrap_err();
    assert!(matches!(err, IdentityError::Released(_)), "{err}");
}

#[test]
fn refresh_is_at_half_life_with_bounded_jitter() {
    let ca = hbone::Authority::generate_root(harness::TD, Duration::from_secs(3600)).unwrap();
    let orders = id("shop", "orders");
    let issued = SystemTime::now();
    let cert = ca
        .issue_valid_between(&orders, issued, issued + Duration::from_secs(1000))
        .unwrap();
    // Validity has second precision: measure from the certificate's own start.
    let now = cert.not_before();
    let half = cert.refresh_at().duration_since(now).unwrap();
    assert_eq!(refresh_delay(&cert, now, 0.0), half);
    let earliest = refresh_delay(&cert, now, 1.0);
    let lifetime = cert.expires_at().duration_since(now).unwrap();
    assert_eq!(half - earliest, lifetime / 10);

    // A backdated short certificate: half of what remains, not a half-life already past.
    let now = SystemTime::now();
    let backdated = ca
        .issue_valid_between(
            &orders,
            now - Duration::from_secs(60),
            now + Duration::from_secs(4),
        )
        .unwrap();
    let delay = refresh_delay(&backdated, now, 0.5);
    let remaining = backdated.expires_at().duration_since(now).unwrap();
    assert!(delay > Duration::ZERO && delay < remaining, "{delay:?}");

    // Already expired: retried soon, never in a tight loop.
    let expired = ca
        .issue_valid_between(
            &orders,
            now - Duration::from_secs(60),
            now - Duration::from_secs(1),
        )
        .unwrap();
    assert!(refresh_delay(&expired, now, 0.0) > Duration::ZERO);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut delays = vec![INITIAL_BACKOFF];
    while *delays.last().unwrap() < MAX_BACKOFF {
        delays.push(next_backoff(*delays.last().unwrap()));
    }
    assert_eq!(delays.first(), Some(&Duration::from_millis(500)));
    assert_eq!(delays[1], Duration::from_secs(1));
    assert_eq!(delays.last(), Some(&Duration::from_secs(30)));
    assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
}

/// The samples of `family` in `text`, without the `# ` lines.
fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(family) && !line.starts_with('#'))
        .collect()
}

#[tokio::test]
async fn metrics_show_each_certificate_expiry_the_roots_and_requests_by_result() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let payments = id("shop", "payments");
    let manager = manager(&controller, Duration::from_secs(3600), 8);
    let cert = manager.fetch(&orders).await.unwrap();
    // No pod of the node runs as shop/payments: refused, and counted so.
    assert!(manager.fetch(&payments).await.is_err());

    let mut text = String::new();
    manager.render_metrics(&mut text, "ztunnel");
    let not_after = cert
        .expires_at()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        samples(&text, "ztunnel_certificate_expiration_timestamp_seconds"),
        [format!(
            "ztunnel_certificate_expiration_timestamp_seconds{{identity=\"{orders}\"}} {not_after}"
        )],
        "one sample per identity with a certificate:\n{text}"
    );
    let not_before = cert
        .not_before()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        samples(&text, "ztunnel_certificate_issued_timestamp_seconds"),
        [format!(
            "ztunnel_certificate_issued_timestamp_seconds{{identity=\"{orders}\"}} {not_before}"
        )]
    );
    let left = samples(&text, "ztunnel_certificate_expiry_seconds");
    assert_eq!(left.len(), 1, "{text}");
    let seconds: i64 = left[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&seconds), "{}", left[0]);
    let root = &hbone::cert::certificates_from_pem(&controller.roots_pem(), "roots").unwrap()[0];
    let root_after = hbone::cert::certificate_validity(root)
        .unwrap()
        .1
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        samples(
            &text,
            "ztunnel_trust_bundle_root_expiration_timestamp_seconds"
        ),
        [format!(
            "ztunnel_trust_bundle_root_expiration_timestamp_seconds{{serial=\"{}\"}} {root_after}",
            hbone::cert::serial_hex(root).unwrap()
        )]
    );
    let requests = samples(&text, "ztunnel_certificate_requests_total");
    assert_eq!(
        requests[0],
        "ztunnel_certificate_requests_total{result=\"success\"} 1"
    );
    // The refused identity is retried after a backoff: at least the one failure.
    let failures =
        requests[1].strip_prefix("ztunnel_certificate_requests_total{result=\"failure\"} ");
    assert!(
        failures.is_some_and(|n| n.parse::<u64>().unwrap() >= 1),
        "{}",
        requests[1]
    );
    let parsed = prometheus_registry::scrape::parse(&text);
    assert_eq!(parsed.len(), 6, "every sample parses:\n{text}");
}
