//! Kubernetes service account tokens, checked with the API server's
//! `authentication.k8s.io/v1` TokenReview, as istiod checks them.
//!
//! - The review asks for the audience `istio-ca` (Istio's default token
//!   audience): a token minted for anything else (the API server itself, another
//!   service) is refused.
//! - The user must be a service account (`system:serviceaccounts` group,
//!   username `system:serviceaccount:<ns>:<sa>`), which becomes the identity
//!   `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//! - The node is the one the token's pod runs on: bound tokens carry it in
//!   `status.user.extra["authentication.kubernetes.io/node-name"]` (Kubernetes
//!   1.30+, feature ServiceAccountTokenPodNodeInfo); without it the caller has
//!   no node, and so may not impersonate node-local identities.
//! - Positive answers are cached briefly (a ztunnel asks for many certificates
//!   in a row with the same token) in a bounded map; reviews in flight are
//!   bounded too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hbone::Identity;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use super::auth::{AuthError, Authenticator, Caller};

/// The audience istiod requires of tokens presented to it.
pub const AUDIENCE: &str = "istio-ca";
/// Key of the bound pod's node in a reviewed user's `extra`.
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// The group of every service account.
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Username prefix of service accounts.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenReviewError {
    /// The API server could not be asked.
    #[error("TokenReview request failed: {0}")]
    Api(#[source] Box<kube::Error>),
    /// The API server took too long.
    #[error("TokenReview timed out")]
    Timeout,
    /// The API server reviewed the token and refused it.
    #[error("token refused: {0}")]
    Refused(String),
    /// The token is valid but not a service account's.
    #[error("not a service account: {0:?}")]
    NotServiceAccount(String),
    /// The token was not issued for our audience.
    #[error("token audiences {0:?} do not include {AUDIENCE}")]
    Audience(Vec<String>),
    /// The service account does not make a valid identity.
    #[error("{0}")]
    Identity(#[from] hbone::IdentityError),
}

impl From<TokenReviewError> for AuthError {
    fn from(e: TokenReviewError) -> Self {
        match e {
            // Our side failed: say so (the caller is not necessarily at fault).
            TokenReviewError::Api(_) | TokenReviewError::Timeout => {
                AuthError::Source(e.to_string())
            }
            _ => {
                tracing::debug!(reason = %e, "token refused");
                AuthError::Unknown
            }
        }
    }
}

/// Maps a TokenReview's status to the caller it authenticates.
///
/// Pure, so every rule is testable without an API server.
pub fn caller_from_review(
    status: &TokenReviewStatus,
    trust_domain: &str,
) -> Result<Caller, TokenReviewError> {
    if let Some(error) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(TokenReviewError::Refused(error.to_string()));
    }
    if status.authenticated != Some(true) {
        return Err(TokenReviewError::Refused("not authenticated".into()));
    }
    // An audience-aware API server names the audiences it matched; an empty
    // list would mean the token was checked against the API server's own.
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(TokenReviewError::Audience(audiences));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let groups = user.groups.unwrap_or_default();
    if !groups.iter().any(|g| g == SERVICE_ACCOUNTS_GROUP) {
        return Err(TokenReviewError::NotServiceAccount(username));
    }
    let Some((namespace, service_account)) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
    else {
        return Err(TokenReviewError::NotServiceAccount(username));
    };
    let identity = Identity::new(trust_domain, namespace, service_account)?;
    let node = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get(NODE_NAME_KEY))
        .and_then(|values| values.first())
        .filter(|n| !n.is_empty())
        .cloned();
    Ok(Caller { identity, node })
}

/// Positive answers by token, each until it expires; at most `capacity`.
#[derive(Debug)]
pub struct ReviewCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, (Caller, Instant)>,
}

impl ReviewCache {
    /// A cache keeping answers for `ttl`, holding at most `capacity` tokens.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The cached caller of `token`, if still fresh at `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<Caller> {
        self.entries
            .get(token)
            .filter(|(_, expires)| *expires > now)
            .map(|(c, _)| c.clone())
    }

    /// Remembers `caller` for `token` from `now`. When full, expired entries
    /// go first, then the entry closest to expiry.
    pub fn insert(&mut self, token: &str, caller: Caller, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(token) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(t, _)| t.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries
            .insert(token.to_string(), (caller, now + self.ttl));
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How long a positive review is trusted: short, because a bound token dies
/// with its pod.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most tokens cached (a few per node proxy).
pub const CACHE_CAPACITY: usize = 4096;
/// Most reviews in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Longest wait for one review.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Authenticates bearer tokens with TokenReview.
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    trust_domain: String,
    cache: Mutex<ReviewCache>,
    in_flight: Semaphore,
}

impl TokenReviewAuthenticator {
    /// Reviews through `client`; identities are issued in `trust_domain`.
    pub fn new(client: kube::Client, trust_domain: &str) -> Self {
        Self {
            api: Api::all(client),
            trust_domain: trust_domain.to_string(),
            cache: Mutex::new(ReviewCache::new(CACHE_TTL, CACHE_CAPACITY)),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, TokenReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        // A closed semaphore cannot happen (never closed); treat it as busy.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| TokenReviewError::Timeout)?;
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| TokenReviewError::Timeout)?
        .map_err(|e| TokenReviewError::Api(Box::new(e)))?;
        caller_from_review(&answer.status.unwrap_or_default(), &self.trust_domain)
    }
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let cached = self
            .cache
            .lock()
            .map_err(|_| AuthError::Source("token cache lock poisoned".into()))?
            .get(token, Instant::now());
        if let Some(caller) = cached {
            return Ok(caller);
        }
        let caller = self.review(token).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(token, caller.clone(), Instant::now());
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(json).unwrap()
    }

    fn bound(username: &str, node: Option<&str>) -> TokenReviewStatus {
        let mut extra = serde_json::json!({
            "authentication.kubernetes.io/pod-name": ["ztunnel-x1"],
            "authentication.kubernetes.io/pod-uid": ["0f1e"],
        });
        if let Some(n) = node {
            extra[NODE_NAME_KEY] = serde_json::json!([n]);
        }
        status(serde_json::json!({
            "authenticated": true,
            "audiences": ["istio-ca"],
            "user": {
                "username": username,
                "uid": "1234",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:istio-system", "system:authenticated"],
                "extra": extra,
            },
        }))
    }

    #[test]
    fn service_account_with_node() {
        let caller = caller_from_review(
            &bound("system:serviceaccount:istio-system:ztunnel", Some("node-1")),
            "cluster.local",
        )
        .unwrap();
        assert_eq!(
            caller.identity.to_string(),
            "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
        );
        assert_eq!(caller.node.as_deref(), Some("node-1"));
    }

    #[test]
    fn no_node_info_means_no_node() {
        let caller = caller_from_review(
            &bound("system:serviceaccount:shop:reviews", None),
            "example.org",
        )
        .unwrap();
        assert_eq!(
            caller.identity.to_string(),
            "spiffe://example.org/ns/shop/sa/reviews"
        );
        assert_eq!(caller.node, None);
    }

    #[test]
    fn refusals() {
        let refused = |s: &TokenReviewStatus| caller_from_review(s, "cluster.local").is_err();
        // Not authenticated, or an error.
        assert!(refused(&status(
            serde_json::json!({"authenticated": false})
        )));
        let mut s = bound("system:serviceaccount:a:b", None);
        s.error = Some("token expired".into());
        assert!(refused(&s));
        // Another audience (or an API server that ignored ours).
        let mut s = bound("system:serviceaccount:a:b", None);
        s.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        assert!(matches!(
            caller_from_review(&s, "cluster.local"),
            Err(TokenReviewError::Audience(_))
        ));
        s.audiences = None;
        assert!(refused(&s));
        // A user, not a service account.
        let mut s = bound("system:serviceaccount:a:b", None);
        s.user.as_mut().unwrap().groups = Some(vec!["system:authenticated".into()]);
        assert!(refused(&s));
        for name in [
            "alice",
            "system:serviceaccount:a",
            "system:serviceaccount::b",
            "system:serviceaccount:a:b:c",
            "system:serviceaccount:A_B:b",
        ] {
            assert!(refused(&bound(name, None)), "{name}");
        }
    }

    #[test]
    fn refusals_map_to_unknown_and_failures_to_source() {
        let unknown: AuthError = TokenReviewError::Refused("x".into()).into();
        assert!(matches!(unknown, AuthError::Unknown));
        let source: AuthError = TokenReviewError::Timeout.into();
        assert!(matches!(source, AuthError::Source(_)));
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let caller = caller_from_review(
            &bound("system:serviceaccount:a:b", Some("n")),
            "cluster.local",
        )
        .unwrap();
        let t0 = Instant::now();
        let mut cache = ReviewCache::new(Duration::from_secs(30), 2);
        cache.insert("t1", caller.clone(), t0);
        assert_eq!(
            cache.get("t1", t0 + Duration::from_secs(29)),
            Some(caller.clone())
        );
        assert_eq!(cache.get("t1", t0 + Duration::from_secs(30)), None);
        cache.insert("t2", caller.clone(), t0 + Duration::from_secs(1));
        // Full: the entry closest to expiry (t1) makes room.
        cache.insert("t3", caller.clone(), t0 + Duration::from_secs(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("t1", t0), None);
        assert!(cache.get("t3", t0 + Duration::from_secs(2)).is_some());
        // Expired entries are dropped first.
        cache.insert("t4", caller, t0 + Duration::from_secs(31));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("t2", t0), None);
        assert!(cache.get("t3", t0).is_some());
    }
}
