//! The verbs of Kubernetes mode: `check`, `analyze`, `proxy-status` and `stat --prometheus`,
//! printing exactly what they print on the sandbox; every other verb refuses, naming itself,
//! rather than act on a sandbox the operator did not mean.

use super::analyze;
use super::api::ApiServer;
use super::args::KubeArgs;
use super::check;
use super::error::{ClusterError, Result};
use super::proxies;
use super::stat;
use crate::operator::check as check_report;
use crate::operator::findings::print_analysis;
use crate::operator::format::wants_json;
use crate::operator::proxy_status;
use crate::sandbox::cli::output::stat_report;
use crate::sandbox::cli::{SandboxCommand, StatArgs};
use crate::sandbox::host::prometheus::PrometheusUrl;
use crate::sandbox::model::manifest::load_path;
use crate::sandbox::model::promql::PrometheusError;
use crate::sandbox::ops::stat::ask_prometheus;

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
        SandboxCommand::Stat(a) if a.prometheus.is_some() => {
            stat_from_prometheus(&runtime, kube, &a)
        }
        other => Err(ClusterError::Invalid(format!(
            "`{}` works on the sandbox only for now; in Kubernetes mode (--kubeconfig, \
             --context or MESHCTL_KUBE=1) meshctl has check, analyze, proxy-status and \
             stat --prometheus",
            verb_name(&other)
        ))),
    }
}

/// `stat --prometheus`: the rows' objects and pods from the cluster, their figures from
/// Prometheus, reached directly.
fn stat_from_prometheus(
    runtime: &tokio::runtime::Runtime,
    kube: &KubeArgs,
    a: &StatArgs,
) -> Result<i32> {
    let json = json_output(a.watch.output.as_deref())?;
    let options = a.options().map_err(ClusterError::Invalid)?;
    let prometheus = |e: PrometheusError| ClusterError::Invalid(e.to_string());
    let url =
        PrometheusUrl::parse(a.prometheus.as_deref().unwrap_or_default()).map_err(prometheus)?;
    let objects = runtime.block_on(async {
        let api = ApiServer::connect(kube).await?;
        stat::objects(&api).await
    })?;
    let targets = stat::targets(
        &objects,
        options.resource,
        options.namespace.as_deref(),
        options.name.as_deref(),
    );
    let measured = ask_prometheus(url, None, &options, &targets).map_err(prometheus)?;
    print!("{}", stat_report(&measured, &options, json));
    Ok(0)
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
}
