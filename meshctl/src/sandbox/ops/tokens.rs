//! Bearer tokens: the sandbox's stand-in for the service-account tokens a
//! ztunnel DaemonSet pod or a waypoint pod would mount. Each node gets a
//! random token in `<state>/tokens/<node>` and each waypoint one in
//! `<state>/tokens/waypoint-<namespace>.<gateway>` (mode 0600);
//! `<state>/tokens.yaml` maps every token to its caller: the ztunnel
//! identity and its node (what the controller's CA checks impersonation
//! against), or a waypoint's own identity with no node.

use std::path::Path;

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::state::{private_dir, write_private};
use crate::sandbox::model::control::{
    Layout, WAYPOINT_TOKEN_PREFIX, ZTUNNEL_IDENTITY, waypoint_identity,
};
use crate::sandbox::model::ids::os_random;

/// Random bytes per token (64 hex characters).
const TOKEN_BYTES: usize = 32;

/// A new random token, hex-encoded.
pub fn generate() -> Result<String> {
    // No fallback, unlike pod UIDs: a guessable token would let anyone
    // impersonate a node.
    let bytes = os_random(TOKEN_BYTES).map_err(SandboxError::io("reading the OS random source"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One line of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bearer token.
    pub token: String,
    /// The SPIFFE identity it speaks for.
    pub identity: String,
    /// The node, for node proxies (which may impersonate that node's pods).
    pub node: Option<String>,
}

/// The tokens file: one `token: {identity, node}` entry per caller.
pub fn render(entries: &[Entry]) -> String {
    let mut out =
        String::from("# Bearer token -> caller, read by the controller (--tokens-file).\n");
    for e in entries {
        let (token, identity) = (&e.token, &e.identity);
        match &e.node {
            Some(node) => out.push_str(&format!(
                "{token}: {{identity: \"{identity}\", node: \"{node}\"}}\n"
            )),
            None => out.push_str(&format!("{token}: {{identity: \"{identity}\"}}\n")),
        }
    }
    out
}

/// Node tokens as tokens-file entries.
fn node_entries(tokens: &[(String, String)]) -> Vec<Entry> {
    tokens
        .iter()
        .map(|(node, token)| Entry {
            token: token.clone(),
            identity: ZTUNNEL_IDENTITY.to_string(),
            node: Some(node.clone()),
        })
        .collect()
}

/// Generates a token per node, writes the token files, then the tokens file
/// (with no waypoint yet); returns (node, token) pairs.
pub fn provision(layout: &Layout, nodes: &[String]) -> Result<Vec<(String, String)>> {
    private_dir(&layout.tokens_dir())?;
    let mut tokens = Vec::new();
    for node in nodes {
        let token = generate()?;
        write_private(&layout.token_file(node), &token)?;
        tokens.push((node.clone(), token));
    }
    sync_waypoints(layout, nodes, &[])?;
    Ok(tokens)
}

/// Reads a token file, `None` when it does not exist.
fn read_token(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::io(format!("reading {}", path.display()))(e)),
    }
}

/// Gives every waypoint (`(namespace, gateway)`) a token, keeping the ones
/// already issued, removes the tokens of waypoints that are gone, and
/// rewrites the tokens file when its content changes (the controller
/// re-reads it on change). Returns whether the tokens file changed.
pub fn sync_waypoints(
    layout: &Layout,
    nodes: &[String],
    waypoints: &[(String, String)],
) -> Result<bool> {
    let dir = layout.tokens_dir();
    private_dir(&dir)?;
    let mut node_tokens = Vec::new();
    for node in nodes {
        if let Some(token) = read_token(&layout.token_file(node))? {
            node_tokens.push((node.clone(), token));
        }
    }
    let mut entries = node_entries(&node_tokens);
    let mut wanted = std::collections::BTreeSet::new();
    for (namespace, name) in waypoints {
        let file = layout.waypoint_token_file(namespace, name);
        let token = match read_token(&file)? {
            Some(t) if !t.is_empty() => t,
            _ => {
                let t = generate()?;
                write_private(&file, &t)?;
                t
            }
        };
        wanted.insert(file);
        entries.push(Entry {
            token,
            identity: waypoint_identity(namespace, name),
            node: None,
        });
    }
    if let Ok(listing) = std::fs::read_dir(&dir) {
        for e in listing.flatten() {
            let stale = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(WAYPOINT_TOKEN_PREFIX))
                && !wanted.contains(&e.path());
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let text = render(&entries);
    let current = std::fs::read_to_string(layout.tokens_file()).unwrap_or_default();
    if current == text {
        return Ok(false);
    }
    write_private(&layout.tokens_file(), &text)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use test_support::TempDir;

    #[test]
    fn tokens_are_random_hex() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn files_are_private_and_the_map_parses() {
        let dir = TempDir::new("meshctl-tokens");
        let layout = Layout::new(dir.path(), Path::new("/bin"));
        let nodes = vec!["node1".to_string(), "node2".to_string()];
        let tokens = provision(&layout, &nodes).unwrap();
        for (node, token) in &tokens {
            let file = layout.token_file(node);
            assert_eq!(&std::fs::read_to_string(&file).unwrap(), token);
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(layout.tokens_file()).unwrap();
        let map: std::collections::BTreeMap<String, serde_json::Value> =
            serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(map.len(), 2);
        let entry = &map[&tokens[1].1];
        assert_eq!(entry["identity"], ZTUNNEL_IDENTITY);
        assert_eq!(entry["node"], "node2");
    }

    #[test]
    fn waypoints_get_their_own_identity_and_keep_their_token() {
        let dir = TempDir::new("meshctl-tokens");
        let layout = Layout::new(dir.path(), Path::new("/bin"));
        let nodes = vec!["node1".to_string()];
        let node_tokens = provision(&layout, &nodes).unwrap();
        let wp = vec![("shop".to_string(), "waypoint".to_string())];
        assert!(sync_waypoints(&layout, &nodes, &wp).unwrap());
        let file = layout.waypoint_token_file("shop", "waypoint");
        assert_eq!(file, dir.join("tokens/waypoint-shop.waypoint"));
        let token = std::fs::read_to_string(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(layout.tokens_file()).unwrap();
        let map: std::collections::BTreeMap<String, serde_json::Value> =
            serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(
            map[&token]["identity"],
            "spiffe://cluster.local/ns/shop/sa/waypoint"
        );
        assert!(map[&token].get("node").is_none());
        assert_eq!(map[&node_tokens[0].1]["node"], "node1");

        // Unchanged: same token, file left alone.
        assert!(!sync_waypoints(&layout, &nodes, &wp).unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), token);

        // Gone: its token is revoked.
        assert!(sync_waypoints(&layout, &nodes, &[]).unwrap());
        assert!(!file.exists());
        let text = std::fs::read_to_string(layout.tokens_file()).unwrap();
        assert!(!text.contains(&token));
        assert!(text.contains(&node_tokens[0].1));
    }
}
