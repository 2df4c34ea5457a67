//! Client identity to apps (`examples/l7/xfcc`): with Istio's
//! `ambient.istio.io/xfcc-include-client-identity` on the waypoint Gateway, orders sees one
//! `x-forwarded-client-cert` naming the waypoint and the calling workload, whatever the caller
//! sent; re-applying the base Gateway (no annotation) stops it.

use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::echo_reply::EchoReply;

use super::shop::{self, CLIENT, ORDERS, apply_example, waypoint_log};

/// The header, as the echo server reports it.
const XFCC: &str = "x-forwarded-client-cert";
/// What the client forges: an identity it does not have.
const FORGED: &str = "URI=spiffe://cluster.local/ns/kube-system/sa/admin";
/// What orders must see with the annotation.
const SYNTHESIZED: &str = "By=spiffe://cluster.local/ns/shop/sa/waypoint;\
                           URI=spiffe://cluster.local/ns/shop/sa/client";

/// The `x-forwarded-client-cert` orders saw for one request from the client carrying
/// `forged` values of it (repeated headers are joined with ", " by the echo server), or an
/// error naming what failed.
fn seen_by_orders(sb: &Sandbox, forged: &[&str]) -> Result<Option<String>, String> {
    let url = format!("{ORDERS}/who");
    let headers: Vec<String> = forged.iter().map(|v| format!("{XFCC}: {v}")).collect();
    let mut args = vec!["meshctl", "app", "curl", "--fail", "--timeout-ms", "5000"];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    let out = sb.exec(CLIENT, &args).map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let reply: EchoReply = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("orders' reply is not an echo ({e})"))?;
    Ok(reply.headers.get(XFCC).cloned())
}

/// Waits until orders sees `expected` for a request carrying `forged`, failing with the last
/// observation and the waypoint's log.
fn wait_until_seen(sb: &Sandbox, forged: &[&str], expected: Option<&str>, what: &str) {
    let mut last = Ok(None);
    let ok = eventually(SETTLE, || {
        last = seen_by_orders(sb, forged);
        last.as_ref().is_ok_and(|s| s.as_deref() == expected)
    });
    assert!(
        ok,
        "{what}: expected {expected:?}, orders saw {last:?}\n--- waypoint log\n{}",
        waypoint_log(sb)
    );
}

#[test]
fn with_the_annotation_orders_sees_the_callers_identity_and_never_a_forged_one() {
    let sb = shop::up();
    // Without the annotation, what the client sent is removed.
    assert_eq!(
        seen_by_orders(&sb, &[FORGED]).expect("request through the waypoint"),
        None,
        "the base waypoint removes a forged x-forwarded-client-cert"
    );

    apply_example(&sb, "xfcc");
    wait_until_seen(&sb, &[FORGED], Some(SYNTHESIZED), "synthesis turned on");
    for forged in [&[][..], &[FORGED][..], &[FORGED, "By=x;URI=y"][..]] {
        assert_eq!(
            seen_by_orders(&sb, forged).expect("request through the waypoint"),
            Some(SYNTHESIZED.to_string()),
            "exactly one entry, from the caller's identity, when the client sends {forged:?}"
        );
    }

    // Re-applying the base Gateway removes the annotation: nothing is synthesized, and a
    // forged value is still removed.
    apply_example(&sb, "base");
    wait_until_seen(&sb, &[FORGED], None, "synthesis turned off");
    assert_eq!(
        seen_by_orders(&sb, &[]).expect("request through the waypoint"),
        None,
        "nothing is synthesized once the annotation is gone"
    );
}
