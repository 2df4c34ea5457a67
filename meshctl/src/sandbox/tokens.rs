//! Per-node bearer tokens: the sandbox's stand-in for the service-account
//! tokens a ztunnel DaemonSet pod would mount. Each node gets a random token
//! in `<state>/tokens/<node>` (mode 0600), and `<state>/tokens.yaml` maps
//! every token to the ztunnel identity and its node, which is what the
//! controller's CA checks impersonation against.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::control::{Layout, ZTUNNEL_IDENTITY};
use super::{Result, SandboxError};

/// Random bytes per token (64 hex characters).
const TOKEN_BYTES: usize = 32;

/// `n` bytes from the kernel's CSPRNG; unlike pod UIDs, tokens have no
/// fallback: a guessable token would let anyone impersonate a node.
fn os_random(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: writes at most `n - filled` bytes into our buffer.
        let got = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                n - filled,
                0,
            )
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += got as usize;
    }
    Ok(buf)
}

/// A new random token, hex-encoded.
pub fn generate() -> Result<String> {
    let bytes = os_random(TOKEN_BYTES).map_err(SandboxError::io("reading the OS random source"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The tokens file: one `token: {identity, node}` entry per node.
pub fn render(tokens: &[(String, String)]) -> String {
    let mut out =
        String::from("# Bearer token -> caller, read by the controller (--tokens-file).\n");
    for (node, token) in tokens {
        out.push_str(&format!(
            "{token}: {{identity: \"{ZTUNNEL_IDENTITY}\", node: \"{node}\"}}\n"
        ));
    }
    out
}

/// Writes `content` to `path` readable by root only, atomically.
fn write_private(path: &Path, content: &str) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(SandboxError::io(ctx()))?;
    f.write_all(content.as_bytes())
        .map_err(SandboxError::io(ctx()))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(SandboxError::io(ctx()))
}

/// Generates a token per node and writes the token files and the tokens
/// file; returns (node, token) pairs.
pub fn provision(layout: &Layout, nodes: &[String]) -> Result<Vec<(String, String)>> {
    let dir = layout.tokens_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(SandboxError::io(format!("creating {}", dir.display())))?;
    let mut tokens = Vec::new();
    for node in nodes {
        let token = generate()?;
        write_private(&layout.token_file(node), &token)?;
        tokens.push((node.clone(), token));
    }
    write_private(&layout.tokens_file(), &render(&tokens))?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        let dir = std::env::temp_dir().join(format!("meshctl-tokens-{}", generate().unwrap()));
        let layout = Layout::new(&dir, Path::new("/bin"));
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
