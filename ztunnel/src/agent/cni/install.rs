//! Putting the chained plugin into the node's CNI configuration, as istio-cni does: the
//! plugin binary is copied into the host's CNI bin folder, and its entry appended to the
//! `plugins` of the node's primary network configuration — the first `*.conflist` or
//! `*.conf` by name in the CNI conf folder (what the runtime loads). A `.conf` (a single
//! plugin) is rewritten as a `.conflist` holding it, and the `.conf` removed. Everything
//! else in the file is kept; installing again replaces our entry, so it is idempotent.
//!
//! The agent installs on start and leaves the entry when it stops (an upgrade replaces the
//! agent while pods keep being created); [`uninstall`] is for removing the mesh from a node.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The plugin's `type` (the binary's name in the CNI bin folder).
pub const PLUGIN_TYPE: &str = "ztunnel-cni";

/// What our entry in the conflist says.
#[derive(Clone, Debug)]
pub struct PluginEntry {
    /// The agent's CNI socket as the plugin (on the host) reaches it.
    pub agent_socket: PathBuf,
    /// Namespaces the plugin never asks about (the mesh's own, `kube-system`).
    pub exclude_namespaces: Vec<String>,
}

impl PluginEntry {
    fn to_json(&self) -> Value {
        json!({
            "type": PLUGIN_TYPE,
            "agent_socket": self.agent_socket.display().to_string(),
            "exclude_namespaces": self.exclude_namespaces,
        })
    }
}

/// Why the configuration could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be read, written or copied.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The primary configuration is not what the CNI spec describes.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No network configuration in the folder yet (the main plugin has not installed one).
    #[error("no *.conflist or *.conf in {0}")]
    NoConfig(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The node's primary network configuration: the first `*.conflist` / `*.conf` by name.
pub fn primary_config(conf_dir: &Path) -> Result<PathBuf, InstallError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(io(conf_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConfig(conf_dir.display().to_string()))
}

/// Copies `binary` to `bin_dir/ztunnel-cni` (through a temporary file and a rename, so a
/// runtime never runs a half-written plugin) and adds our entry to the primary
/// configuration. Returns the configuration file written.
pub fn install(
    binary: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    entry: &PluginEntry,
) -> Result<PathBuf, InstallError> {
    copy_binary(binary, bin_dir)?;
    add_to_config(conf_dir, entry)
}

fn copy_binary(binary: &Path, bin_dir: &Path) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin_dir).map_err(io(bin_dir))?;
    let target = bin_dir.join(PLUGIN_TYPE);
    let temp = bin_dir.join(format!(".{PLUGIN_TYPE}.tmp"));
    std::fs::copy(binary, &temp).map_err(io(binary))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).map_err(io(&temp))?;
    std::fs::rename(&temp, &target).map_err(io(&target))
}

/// Adds (or replaces) our entry at the end of the primary configuration's `plugins`,
/// turning a `.conf` into a `.conflist`. Returns the file written.
pub fn add_to_config(conf_dir: &Path, entry: &PluginEntry) -> Result<PathBuf, InstallError> {
    let path = primary_config(conf_dir)?;
    let mut config = read_json(&path)?;
    let is_list = path.extension().is_some_and(|e| e == "conflist");
    if !is_list {
        config = conf_to_conflist(config, &path)?;
    }
    let plugins = plugins_of(&mut config, &path)?;
    plugins.retain(|p| !is_ours(p));
    plugins.push(entry.to_json());
    let target = path.with_extension("conflist");
    write_json(&target, &config)?;
    if target != path {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    Ok(target)
}

/// Removes our entry from the primary configuration and the plugin binary from `bin_dir`
/// (what uninstalling the mesh from a node does). Absent pieces are fine.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<(), InstallError> {
    match primary_config(conf_dir) {
        Ok(path) if path.extension().is_some_and(|e| e == "conflist") => {
            let mut config = read_json(&path)?;
            let plugins = plugins_of(&mut config, &path)?;
            let before = plugins.len();
            plugins.retain(|p| !is_ours(p));
            if plugins.len() != before {
                write_json(&path, &config)?;
            }
        }
        Ok(_) | Err(InstallError::NoConfig(_)) => {}
        Err(e) => return Err(e),
    }
    let binary = bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&binary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&binary)(e)),
        _ => Ok(()),
    }
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// A single-plugin `.conf` as a list: its `cniVersion` and `name` lifted to the list.
fn conf_to_conflist(conf: Value, path: &Path) -> Result<Value, InstallError> {
    let Value::Object(mut plugin) = conf else {
        return Err(invalid(path, "not a JSON object"));
    };
    let mut list = Map::new();
    for key in ["cniVersion", "name"] {
        if let Some(v) = plugin.remove(key) {
            list.insert(key.to_string(), v);
        }
    }
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    Ok(Value::Object(list))
}

fn plugins_of<'a>(config: &'a mut Value, path: &Path) -> Result<&'a mut Vec<Value>, InstallError> {
    config
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| invalid(path, "no `plugins` list"))
}

fn invalid(path: &Path, message: &str) -> InstallError {
    InstallError::Invalid {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Value, InstallError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, &e.to_string()))
}

/// Writes through a temporary file and a rename: the runtime never reads half a file.
fn write_json(path: &Path, value: &Value) -> Result<(), InstallError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| invalid(path, &e.to_string()))?;
    text.push('\n');
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cni");
    let temp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temp, text).map_err(io(&temp))?;
    std::fs::rename(&temp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> PluginEntry {
        PluginEntry {
            agent_socket: "/var/run/ztunnel-cni/cni.sock".into(),
            exclude_namespaces: vec!["kube-system".into()],
        }
    }

    fn read(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn adds_once_at_the_end_of_the_first_conflist_and_removes() {
        let dir = test_support::TempDir::new("cni-conf");
        let conf = dir.join("net.d");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&conf).unwrap();
        let primary = json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [
                {"type": "calico", "ipam": {"type": "calico-ipam"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(conf.join("10-calico.conflist"), primary.to_string()).unwrap();
        std::fs::write(conf.join("99-other.conflist"), r#"{"plugins":[]}"#).unwrap();
        std::fs::write(conf.join("00-notes.txt"), "not a config").unwrap();
        let plugin = dir.join("ztunnel-cni-src");
        std::fs::write(&plugin, "#!/bin/sh\n").unwrap();

        let written = install(&plugin, &bin, &conf, &entry()).unwrap();
        assert_eq!(written, conf.join("10-calico.conflist"));
        // Installing again (an agent restart) changes nothing.
        install(&plugin, &bin, &conf, &entry()).unwrap();
        let config = read(&written);
        let plugins = config["plugins"].as_array().unwrap();
        let types: Vec<&str> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["calico", "portmap", "ztunnel-cni"]);
        assert_eq!(plugins[2]["agent_socket"], "/var/run/ztunnel-cni/cni.sock");
        assert_eq!(plugins[2]["exclude_namespaces"], json!(["kube-system"]));
        assert_eq!(config["name"], "k8s-pod-network");
        assert_eq!(plugins[0], primary["plugins"][0]);
        assert_eq!(
            read(&conf.join("99-other.conflist")),
            json!({"plugins": []})
        );
        assert!(bin.join("ztunnel-cni").is_file());

        uninstall(&bin, &conf).unwrap();
        assert_eq!(read(&written), primary);
        assert!(!bin.join("ztunnel-cni").exists());
        // Twice is fine.
        uninstall(&bin, &conf).unwrap();
    }

    #[test]
    fn a_conf_becomes_a_conflist() {
        let dir = test_support::TempDir::new("cni-conf");
        let conf = dir.join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("10-bridge.conf"),
            json!({
                "cniVersion": "0.4.0",
                "name": "bridge",
                "type": "bridge",
                "bridge": "cni0",
                "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}
            })
            .to_string(),
        )
        .unwrap();
        let written = add_to_config(&conf, &entry()).unwrap();
        assert_eq!(written, conf.join("10-bridge.conflist"));
        assert!(!conf.join("10-bridge.conf").exists());
        assert_eq!(
            read(&written),
            json!({
                "cniVersion": "0.4.0",
                "name": "bridge",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}
                    },
                    entry().to_json()
                ]
            })
        );
        // Now the .conflist is the primary one: adding again keeps one entry.
        add_to_config(&conf, &entry()).unwrap();
        assert_eq!(read(&written)["plugins"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn no_configuration_and_invalid_ones_are_errors() {
        let dir = test_support::TempDir::new("cni-conf");
        assert!(matches!(
            add_to_config(dir.path(), &entry()),
            Err(InstallError::NoConfig(_))
        ));
        std::fs::write(dir.join("10-x.conflist"), r#"{"name":"x"}"#).unwrap();
        let err = add_to_config(dir.path(), &entry()).unwrap_err();
        assert!(err.to_string().contains("no `plugins` list"), "{err}");
    }
}
