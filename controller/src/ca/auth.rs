//! Caller authentication for the controller's gRPC services.
//!
//! Every xDS stream and every certificate request carries `authorization: Bearer <token>`.
//! An [`Authenticator`] turns the token into a [`Caller`]: the workload identity it speaks for
//! and, for node proxies, the node it runs on. In Kubernetes the token is a service account
//! token checked with a TokenReview ([`super::tokenreview`]); in local mode (the sandbox) a
//! [`TokenFile`] maps provisioned tokens to callers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use hbone::Identity;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

/// Who is calling: the identity the token was issued for, and its node if it is a node proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's own workload identity.
    pub identity: Identity,
    /// The node the caller runs on, when the token is bound to one (node proxies).
    pub node: Option<String>,
}

/// Why a caller was not authenticated. The message is logged, never sent back in detail.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata, or not of the form `Bearer <token>`.
    #[error("missing or malformed bearer token")]
    Missing,
    /// The token is not known.
    #[error("unknown token")]
    Unknown,
    /// The token source could not be read.
    #[error("token source unavailable: {0}")]
    Source(String),
}

/// Checks bearer tokens.
///
/// Asynchronous because a Kubernetes implementation asks the API server (TokenReview).
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller `token` stands for.
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError>;
}

/// Extracts the bearer token from gRPC metadata.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Authenticates the request's metadata with `auth`.
pub async fn authenticate(
    auth: &dyn Authenticator,
    metadata: &MetadataMap,
) -> Result<Caller, AuthError> {
    let token = bearer_token(metadata)?;
    auth.authenticate(token).await
}

/// The remote address of a gRPC request, for logs (empty when unknown).
pub fn peer_of<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Authenticates a gRPC request's bearer token. A refusal is logged with the peer and `what`
/// was refused, and answered `Unauthenticated` without saying why (the log does).
pub async fn authenticate_request<T>(
    auth: &dyn Authenticator,
    request: &tonic::Request<T>,
    what: &str,
) -> Result<Caller, tonic::Status> {
    authenticate(auth, request.metadata()).await.map_err(|e| {
        tracing::warn!(peer = %peer_of(request), reason = %e, "refused {what}");
        tonic::Status::unauthenticated("a valid bearer token is required")
    })
}

/// One entry of a tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    identity: String,
    #[serde(default)]
    node: Option<String>,
}

/// Parses a tokens file: a YAML (or JSON) map from token to `{identity, node}`:
///
/// ```yaml
/// 3f9c...: { identity: spiffe://cluster.local/ns/istio-system/sa/ztunnel, node: node-1 }
/// ```
pub fn parse_tokens(text: &str) -> Result<HashMap<String, Caller>, AuthError> {
    if text.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let raw: HashMap<String, TokenEntry> =
        serde_yaml_ng::from_str(text).map_err(|e| AuthError::Source(e.to_string()))?;
    raw.into_iter()
        .map(|(token, entry)| {
            let identity: Identity = entry
                .identity
                .parse()
                .map_err(|e| AuthError::Source(format!("{e}")))?;
            Ok((
                token,
                Caller {
                    identity,
                    node: entry.node.filter(|n| !n.is_empty()),
                },
            ))
        })
        .collect()
}

/// A fixed set of tokens, for tests and embedding.
#[derive(Debug, Default, Clone)]
pub struct StaticTokens(pub HashMap<String, Caller>);

#[tonic::async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.0.get(token).cloned().ok_or(AuthError::Unknown)
    }
}

/// Tokens read from a file that may appear or change while the controller runs (the sandbox
/// provisions per-node tokens after starting it): the file is re-read whenever its size or
/// modification time changes. A missing file accepts no token.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    tokens: HashMap<String, Caller>,
}

impl TokenFile {
    /// Watches `path`; nothing is read until the first authentication.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            state: Mutex::new(Loaded::default()),
        }
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, token: &str) -> Result<Caller, AuthError> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut state = self
            .state
            .lock()
            .map_err(|_| AuthError::Source("token table lock poisoned".into()))?;
        if stamp != state.stamp {
            let text = match stamp {
                Some(_) => std::fs::read_to_string(&self.path)
                    .map_err(|e| AuthError::Source(format!("{}: {e}", self.path.display())))?,
                None => String::new(),
            };
            match parse_tokens(&text) {
                Ok(tokens) => {
                    tracing::info!(path = %self.path.display(), tokens = tokens.len(), "loaded tokens file");
                    state.tokens = tokens;
                    state.stamp = stamp;
                }
                // Keep the last good table: a half-written file must not lock everyone out.
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "ignoring invalid tokens file")
                }
            }
        }
        state.tokens.get(token).cloned().ok_or(AuthError::Unknown)
    }
}

#[tonic::async_trait]
impl Authenticator for TokenFile {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.lookup(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_json() {
        let yaml = "t1: { identity: spiffe://cluster.local/ns/istio-system/sa/ztunnel, node: n1 }\nt2:\n  identity: spiffe://cluster.local/ns/a/sa/b\n";
        let tokens = parse_tokens(yaml).unwrap();
        assert_eq!(tokens["t1"].node.as_deref(), Some("n1"));
        assert_eq!(tokens["t2"].node, None);
        let json = r#"{"t3": {"identity": "spiffe://cluster.local/ns/a/sa/b", "node": "n2"}}"#;
        assert_eq!(
            parse_tokens(json).unwrap()["t3"].node.as_deref(),
            Some("n2")
        );
        assert!(parse_tokens("t: { identity: nope }").is_err());
    }

    #[test]
    fn bearer_parsing() {
        let mut md = MetadataMap::new();
        assert!(bearer_token(&md).is_err());
        md.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&md).unwrap(), "abc");
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer_token(&md).is_err());
    }

    #[tokio::test]
    async fn token_file_reloads() {
        let dir = std::env::temp_dir().join(format!("tokens-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.yaml");
        let _ = std::fs::remove_file(&path);
        let file = TokenFile::new(&path);
        assert!(file.authenticate("t").await.is_err());
        std::fs::write(&path, "t: { identity: spiffe://cluster.local/ns/a/sa/b }\n").unwrap();
        assert_eq!(
            file.authenticate("t").await.unwrap().identity.to_string(),
            "spiffe://cluster.local/ns/a/sa/b"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
