//! The verbs of Kubernetes mode: `check`, `analyze`, `proxy-status`, `stat` (also from
//! Prometheus), `edges`, `routes`, `dashboard` and `ca`, printing exactly what they print on the sandbox; every other verb refuses,
//! naming itself (and, for those that need the proxies' admin port, why), rather than act on
//! a sandbox the operator did not mean.

use tokio::runtime::Runtime;

use super::analyze;
use super::api::ApiServer;
use super::args::KubeArgs;
use super::ca;
use super::check;
use super::error::{ClusterError, Result};
use super::metrics;
use super::proxies;
use crate::dashboard::Source;
use crate::operator::check as check_report;
use crate::operator::findings::print_analysis;
use crate::operator::format::wants_json;
use crate::operator::promql::PrometheusError;
use crate::operator::proxy_status;
use crate::operator::traffic;
use crate::sandbox::cli::{EdgesArgs, RoutesArgs, SandboxCommand, StatArgs};
use crate::sandbox::host::prometheus::{self, PrometheusUrl};
use crate::sandbox::model::manifest::load_path;

/// The verbs Kubernetes mode has.
const KUBE_VERBS: &str = "check, analyze, proxy-status, stat, edges, routes, dashboard and ca";

/// Whether `cmd` is one the sandbox runs for itself (a pod's container, a forwarder, the
/// reaper): those run on the sandbox whatever the mode.
pub fn internal(cmd: &SandboxCommand) -> bool {
    matches!(
        cmd,
        SandboxCommand::SandboxContainer(_)
            | SandboxCommand::SandboxForward(_)
            | SandboxCommand::SandboxReaper(_)
    )
}

/// Runs a verb against the cluster `kube` selects; returns the process exit code.
pub fn run(kube: &KubeArgs, cmd: SandboxCommand) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Local(format!("cannot start the async runtime: {e}")))?;
    match cmd {
        SandboxCommand::Check(a) => {
            let json = json_output(a.output.as_deref())?;
            let checks = runtime.block_on(async {
                let api = ApiServer::connect(kube).await?;
                Ok::<_, ClusterError>(if a.pre {
                    check::pre(&api).await
                } else {
                    check::run(&api).await
                })
            })?;
            Ok(check_report::print(&checks, json))
        }
        SandboxCommand::Analyze(a) => {
            let json = json_output(a.output.as_deref())?;
            let mut files = Vec::new();
            for path in &a.file {
                files.extend(load_path(path).map_err(|e| ClusterError::Local(e.to_string()))?);
            }
            let (found, analyzed) = runtime.block_on(async {
                let api = ApiServer::connect(kube).await?;
                analyze::findings(&api, &files).await
            })?;
            Ok(print_analysis(&found, analyzed, json))
        }
        SandboxCommand::ProxyStatus(a) => {
            let json = json_output(a.output.as_deref())?;
            let found = runtime.block_on(async {
                let api = ApiServer::connect(kube).await?;
                proxies::statuses(&api).await
            })?;
            Ok(proxy_status::print(&found, json))
        }
        SandboxCommand::Stat(a) => stat(&runtime, kube, a),
        SandboxCommand::Edges(a) => edges(&runtime, kube, a),
        SandboxCommand::Routes(a) => routes(&runtime, kube, a),
        SandboxCommand::Dashboard(a) => {
            drop(runtime);
            let source = Source::cluster(kube.clone()).map_err(ClusterError::Local)?;
            crate::dashboard::run(source, a.options())
                .map_err(|e| ClusterError::Invalid(e.to_string()))?;
            Ok(0)
        }
        SandboxCommand::Ca(a) => runtime.block_on(async {
            let api = ApiServer::connect(kube).await?;
            ca::run(&api, a).await
        }),
        other => Err(ClusterError::Invalid(refusal(&other))),
    }
}

/// `stat`: the proxies' metrics through the pod proxy (or Prometheus's answers), the rows
/// from the cluster's objects.
fn stat(runtime: &Runtime, kube: &KubeArgs, a: StatArgs) -> Result<i32> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let options = traffic::stat_options(&a.resource, &w.namespace, w.all_namespaces, w.window)
        .map_err(ClusterError::Invalid)?;
    let measured = match &a.prometheus {
        // The rows' objects and pods from the cluster, their figures from Prometheus, reached
        // directly (its client blocks: outside the runtime).
        Some(url) => {
            let url = PrometheusUrl::parse(url).map_err(prometheus_error)?;
            let targets = runtime.block_on(async {
                let api = ApiServer::connect(kube).await?;
                metrics::stat_targets(&api, &options).await
            })?;
            prometheus::measure(url, None, &options, &targets).map_err(prometheus_error)?
        }
        None => runtime.block_on(async {
            let api = ApiServer::connect(kube).await?;
            metrics::stat(&api, &options, |n| traffic::window_started(n, w.window)).await
        })?,
    };
    traffic::print_stat(&measured, &options, json);
    Ok(0)
}

/// `edges`: who talked to whom, from the proxies' metrics through the pod proxy.
fn edges(runtime: &Runtime, kube: &KubeArgs, a: EdgesArgs) -> Result<i32> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let namespace = traffic::edges_namespace(&a.resource, &w.namespace, w.all_namespaces)
        .map_err(ClusterError::Invalid)?;
    let seen = runtime.block_on(async {
        let api = ApiServer::connect(kube).await?;
        let started = |n| traffic::window_started(n, w.window);
        metrics::edges(&api, namespace.as_deref(), w.window, started).await
    })?;
    traffic::print_edges(&seen, json);
    Ok(0)
}

/// `routes`: one service's routes, from the waypoints' metrics through the pod proxy.
fn routes(runtime: &Runtime, kube: &KubeArgs, a: RoutesArgs) -> Result<i32> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let (namespace, name) = traffic::routes_service(&a.resource, &w.namespace, w.all_namespaces)
        .map_err(ClusterError::Invalid)?;
    let measured = runtime.block_on(async {
        let api = ApiServer::connect(kube).await?;
        let started = |n| traffic::window_started(n, w.window);
        metrics::routes(&api, &namespace, &name, w.window, started).await
    })?;
    traffic::print_routes(&measured, json);
    Ok(0)
}

/// Why `cmd` does not run in Kubernetes mode.
fn refusal(cmd: &SandboxCommand) -> String {
    let verb = verb_name(cmd);
    let reason = match cmd {
        SandboxCommand::Tap(_) | SandboxCommand::Top(_) | SandboxCommand::ProxyConfig(_) => {
            " (it reads the proxies' admin port, which listens on their pods' loopback only, \
             out of the API server's reach)"
        }
        _ => "",
    };
    format!(
        "`{verb}` works on the sandbox only{reason}; in Kubernetes mode (--kubeconfig, \
         --context or MESHCTL_KUBE=1) meshctl has {KUBE_VERBS}"
    )
}

/// Prometheus's refusals, as Kubernetes mode reports them.
fn prometheus_error(e: PrometheusError) -> ClusterError {
    ClusterError::Invalid(e.to_string())
}

fn json_output(output: Option<&str>) -> Result<bool> {
    wants_json(output).map_err(ClusterError::Invalid)
}

/// The verb as typed: the variant's name in kebab case (`ProxyConfig` → `proxy-config`).
fn verb_name(cmd: &SandboxCommand) -> String {
    let debug = format!("{cmd:?}");
    let variant = debug.split(['(', ' ', '{']).next().unwrap_or_default();
    let mut name = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SandboxCommand,
    }

    fn parsed(args: &[&str]) -> SandboxCommand {
        Cli::try_parse_from([&["meshctl"], args].concat())
            .unwrap()
            .command
    }

    #[test]
    fn verbs_are_named_as_typed_and_the_sandboxs_own_pass_through() {
        let config = parsed(&["proxy-config", "certs", "ztunnel", "node1"]);
        assert_eq!(verb_name(&config), "proxy-config");
        assert_eq!(verb_name(&parsed(&["stat", "deploy"])), "stat");
        assert!(!internal(&config));
        assert!(internal(&parsed(&["sandbox-container", "--spec-fd", "3"])));
    }

    #[test]
    fn verbs_needing_the_admin_port_say_why_they_refuse() {
        let tap = refusal(&parsed(&["tap", "deploy/orders"]));
        assert!(
            tap.starts_with("`tap` works on the sandbox only (it reads the proxies' admin port"),
            "{tap}"
        );
        assert_eq!(
            refusal(&parsed(&["get", "pods"])),
            "`get` works on the sandbox only; in Kubernetes mode (--kubeconfig, --context or \
             MESHCTL_KUBE=1) meshctl has check, analyze, proxy-status, stat, edges, routes, \
             dashboard and ca"
        );
    }
}
