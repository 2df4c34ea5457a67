//! `x-forwarded-client-cert` from the caller's peer identity, for waypoints that opt in
//! (Istio's `ambient.istio.io/xfcc-include-client-identity`): apps behind the waypoint learn
//! the originating workload, and a caller cannot forge it because every inbound value is
//! removed first. The entry uses Envoy's format, `By=<this proxy>;URI=<the caller>`.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The header, as Envoy names it.
pub(crate) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Replaces every `x-forwarded-client-cert` in `headers` with the one entry naming `caller`
/// (the HBONE peer identity the request arrived with) and `by` (the waypoint's own SPIFFE
/// URI, left out when unknown). Without a caller identity (plaintext, unknown peer) the
/// inbound values are removed and none is set: nothing unverified reaches the app.
pub(crate) fn set_client_identity(
    headers: &mut HeaderMap,
    by: Option<&str>,
    caller: Option<&hbone::Identity>,
) {
    headers.remove(&XFCC);
    let Some(caller) = caller else {
        return;
    };
    let entry = match by {
        Some(by) => format!("By={by};URI={caller}"),
        None => format!("URI={caller}"),
    };
    // A SPIFFE URI holds no character a header value refuses; should one ever, the header
    // is left out rather than sent with a partial identity.
    if let Ok(value) = HeaderValue::from_str(&entry) {
        headers.insert(XFCC, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAYPOINT: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";

    fn client() -> hbone::Identity {
        "spiffe://cluster.local/ns/shop/sa/client".parse().unwrap()
    }

    fn values(headers: &HeaderMap) -> Vec<&str> {
        headers
            .get_all(&XFCC)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn one_entry_names_the_waypoint_and_the_caller() {
        let mut headers = HeaderMap::new();
        set_client_identity(&mut headers, Some(WAYPOINT), Some(&client()));
        assert_eq!(
            values(&headers),
            ["By=spiffe://cluster.local/ns/shop/sa/waypoint;\
                 URI=spiffe://cluster.local/ns/shop/sa/client"]
        );
    }

    #[test]
    fn every_forged_value_is_replaced() {
        let mut headers = HeaderMap::new();
        headers.append(
            &XFCC,
            "URI=spiffe://cluster.local/ns/kube-system/sa/admin"
                .parse()
                .unwrap(),
        );
        headers.append(&XFCC, "By=x;URI=y".parse().unwrap());
        headers.insert("x-other", "kept".parse().unwrap());
        set_client_identity(&mut headers, Some(WAYPOINT), Some(&client()));
        assert_eq!(
            values(&headers),
            ["By=spiffe://cluster.local/ns/shop/sa/waypoint;\
                 URI=spiffe://cluster.local/ns/shop/sa/client"]
        );
        assert_eq!(headers["x-other"], "kept");
    }

    #[test]
    fn without_a_caller_identity_the_header_is_removed_and_not_set() {
        let mut headers = HeaderMap::new();
        headers.append(&XFCC, "URI=spiffe://forged".parse().unwrap());
        set_client_identity(&mut headers, Some(WAYPOINT), None);
        assert!(values(&headers).is_empty());
    }

    #[test]
    fn without_its_own_identity_the_waypoint_names_only_the_caller() {
        let mut headers = HeaderMap::new();
        set_client_identity(&mut headers, None, Some(&client()));
        assert_eq!(
            values(&headers),
            ["URI=spiffe://cluster.local/ns/shop/sa/client"]
        );
    }
}
