//! `meshctl up`: a new sandbox from a folder of manifests.

use std::os::unix::fs::PermissionsExt;

use super::args::UpArgs;
use super::output;
use crate::sandbox::console;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::container;
use crate::sandbox::host::netns::{self, Tools};
use crate::sandbox::host::state::{self, StateLock};
use crate::sandbox::host::{procfs, reaper, teardown};
use crate::sandbox::model::addresses::{MAX_NODES, netns_prefix};
use crate::sandbox::model::cluster::Cluster;
use crate::sandbox::model::control::NodeProxyProgram;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::manifest::load_path;
use crate::sandbox::model::objects::Object;
use crate::sandbox::ops::findings;
use crate::sandbox::ops::sandbox::Sandbox;
use crate::sandbox::ops::system::SystemOptions;
use crate::sandbox::settings::{STATE_ROOT, SandboxSettings};

/// `meshctl up`: checks everything that can be checked first, makes the
/// sandbox's name ours, then builds nodes, system components and the
/// manifests' objects; a failure (or panic) part way removes what was built.
pub(super) fn up(cfg: &SandboxSettings, args: UpArgs) -> Result<()> {
    netns::require_root()?;
    let tools = Tools::find()?;
    let (objects, owner) = preflight(cfg, &args)?;
    let node_proxies = node_proxies(&args)?;
    if !node_proxies.is_empty() && !args.ztunnel_args.is_empty() {
        say!(
            "warning: --ztunnel-arg goes to the mesh's own ztunnel only; a node running a \
             --node-proxy program gets none of it (that program is configured through its \
             environment, see docs/interop.md)"
        );
    }
    let lock = claim(cfg, &tools)?;
    let system_opts = SystemOptions {
        ztunnel: !args.no_ztunnel,
        admin_port: args.admin_port,
        xds_port: args.xds_port,
        ztunnel_args: args.ztunnel_args,
        waypoint_args: args.waypoint_args,
        node_proxies,
    };
    let mut cluster = Cluster::new(&cfg.name, args.nodes, state::now());
    cluster.owner = owner;
    say!(
        "building sandbox {} ({} nodes, state in {})",
        cfg.name,
        args.nodes,
        cfg.state_dir.display()
    );
    let mut sb = Sandbox::create(cfg, tools.clone(), lock, cluster)?;
    // A panic half way must not leave namespaces behind either.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(cfg, &mut sb, owner, &system_opts, &objects)
    }))
    .unwrap_or_else(|_| {
        Err(SandboxError::Invalid(
            "internal error while building the sandbox".into(),
        ))
    });
    if let Err(e) = built {
        eprintln!("removing the partly built sandbox {}", cfg.name);
        teardown::destroy(&tools, &cfg.name, &cfg.state_dir, Some(&sb.cluster));
        return Err(e);
    }
    console::emit(&output::summary(&sb.cluster, state::now()));
    if let Some(c) = &sb.cluster.control {
        say!(
            "\ncontroller {}: admin http://127.0.0.1:{}, xDS/CA 127.0.0.1:{} (`meshctl get controller`)",
            c.ip,
            c.admin_port,
            c.xds_port
        );
    }
    Ok(())
}

/// What can be checked before anything is touched: the node count, whether
/// pods can run the binaries, the manifests (loaded: bad ones fail here) and
/// the owner process.
fn preflight(cfg: &SandboxSettings, args: &UpArgs) -> Result<(Vec<Object>, Option<ProcId>)> {
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(SandboxError::Invalid(format!(
            "--nodes must be 1..={MAX_NODES}"
        )));
    }
    if let Some(warning) = container::unreachable_bin_dir(&cfg.bin_dir) {
        say!("warning: {warning}");
    }
    // Fail on bad manifests before building anything.
    let objects = match &args.folder {
        Some(f) => load_path(f)?,
        None => Vec::new(),
    };
    let owner =
        match args.owner_pid {
            Some(pid) => Some(procfs::proc_id(pid).ok_or_else(|| {
                SandboxError::Invalid(format!("--owner-pid {pid}: no such process"))
            })?),
            None => None,
        };
    Ok((objects, owner))
}

/// The `--node-proxy [NODE=]PATH` values: the node must be one `up` builds,
/// the path an executable file (made absolute: processes start in `/`).
fn node_proxies(args: &UpArgs) -> Result<Vec<NodeProxyProgram>> {
    let nodes: Vec<String> = (1..=args.nodes).map(|i| format!("node{i}")).collect();
    args.node_proxies
        .iter()
        .map(|value| {
            let (node, path) = match value.split_once('=') {
                Some((node, path)) => (Some(node.to_string()), path),
                None => (None, value.as_str()),
            };
            if let Some(node) = node.as_ref().filter(|n| !nodes.contains(n)) {
                return Err(SandboxError::Invalid(format!(
                    "--node-proxy {value}: no node {node:?} (nodes: {})",
                    nodes.join(", ")
                )));
            }
            let path = std::fs::canonicalize(path)
                .map_err(|e| SandboxError::Invalid(format!("--node-proxy {value}: {path}: {e}")))?;
            let executable = std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !executable {
                return Err(SandboxError::Invalid(format!(
                    "--node-proxy {value}: {} is not an executable file",
                    path.display()
                )));
            }
            Ok(NodeProxyProgram { node, path })
        })
        .collect()
}

/// Makes the sandbox's name and state folder ours: removes sandboxes whose
/// owner is gone, refuses one that is up, takes the lock, clears leftovers
/// of an earlier sandbox of this name and registers a state folder kept
/// elsewhere. Returns the lock.
fn claim(cfg: &SandboxSettings, tools: &Tools) -> Result<StateLock> {
    for name in teardown::reap_stale(tools, &cfg.name) {
        say!("removed sandbox {name}: its owner process is gone");
    }
    let entry = teardown::registry_entry(&cfg.name);
    if entry != cfg.state_dir && (entry.exists() || entry.is_symlink()) {
        let target = std::fs::read_link(&entry).unwrap_or_else(|_| entry.clone());
        if target != cfg.state_dir {
            return Err(SandboxError::AlreadyUp(cfg.name.clone()));
        }
    }
    let lock = state::lock(&cfg.state_dir, &cfg.name, true)?;
    if let Ok(old) = state::load(&cfg.state_dir, &cfg.name) {
        match old.owner {
            Some(o) if !procfs::alive(o) => {
                say!("removing sandbox {}: its owner process is gone", cfg.name);
                teardown::destroy_runtime(tools, &cfg.name, Some(&old));
            }
            _ => return Err(SandboxError::AlreadyUp(cfg.name.clone())),
        }
    }
    let prefix = netns_prefix(&cfg.name);
    if !netns::list_netns(&prefix).is_empty() {
        say!("removing leftovers of an earlier sandbox {}", cfg.name);
        teardown::destroy_runtime(tools, &cfg.name, None);
    }
    if entry != cfg.state_dir && !entry.is_symlink() {
        let _ = std::fs::create_dir_all(STATE_ROOT);
        std::os::unix::fs::symlink(&cfg.state_dir, &entry)
            .map_err(SandboxError::io(format!("registering {}", entry.display())))?;
    }
    Ok(lock)
}

/// Builds the recorded sandbox: the reaper first (if it has an owner), the
/// nodes, the system components, then the manifests' objects, whose
/// findings are reported without failing `up`.
fn build(
    cfg: &SandboxSettings,
    sb: &mut Sandbox,
    owner: Option<ProcId>,
    system_opts: &SystemOptions,
    objects: &[Object],
) -> Result<()> {
    if let Some(owner) = owner {
        // Started first: from here on, the owner dying cleans up.
        sb.cluster.reaper = Some(reaper::spawn(cfg, owner)?);
        sb.save()?;
    }
    sb.build_nodes()?;
    // The mesh is installed before the workloads, as on a cluster.
    sb.start_system(system_opts)?;
    if !objects.is_empty() {
        sb.apply(objects.to_vec())?;
        // Reported, but the sandbox stays up: what the mesh cannot read is what a user
        // comes to fix.
        crate::operator::findings::report(&findings::of_applied(&cfg.state_dir, objects));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use test_support::temp_dir::TempDir;

    fn up_args(extra: &[&str]) -> UpArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            up: UpArgs,
        }
        let argv = ["up", "--nodes", "2"].iter().chain(extra);
        Cli::parse_from(argv).up
    }

    #[test]
    fn node_proxies_name_a_built_node_and_an_executable() {
        let dir = TempDir::new("node-proxy");
        let program = dir.write("ztunnel", "#!/bin/sh\n");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.write("not-executable", "");
        let p = program.display().to_string();

        let all = node_proxies(&up_args(&["--node-proxy", &p])).unwrap();
        assert_eq!(
            all,
            [NodeProxyProgram {
                node: None,
                path: program.clone()
            }]
        );
        let one = node_proxies(&up_args(&["--node-proxy", &format!("node2={p}")])).unwrap();
        assert_eq!(one[0].node.as_deref(), Some("node2"));

        let err = |value: String| {
            node_proxies(&up_args(&["--node-proxy", &value]))
                .unwrap_err()
                .to_string()
        };
        assert!(err(format!("node3={p}")).contains("no node \"node3\" (nodes: node1, node2)"));
        assert!(err(plain.display().to_string()).contains("is not an executable file"));
        assert!(err(dir.join("missing").display().to_string()).contains("missing"));
    }
}
