//! `meshctl install` and `meshctl uninstall`: their flags and what they print.

use std::io::Write;

use super::options::{InstallOptions, KEYS};
use super::render;

/// Output format of the manifests.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Multi-document YAML.
    #[default]
    Yaml,
    /// A `v1` `List` of the objects.
    Json,
}

/// `install`.
#[derive(clap::Args, Debug)]
#[command(after_help = keys_help())]
pub struct InstallArgs {
    /// An option as key=value (repeatable); the keys are listed below.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

/// `uninstall`.
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The same options as given to `install` (only `namespace` changes what is deleted).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Delete the CRDs too, and with them every AuthorizationPolicy, VirtualService, ... of
    /// the cluster; left out by default, as Istio, SMI or Linkerd may own them.
    #[arg(long)]
    pub crds: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

/// Exit status when a `--set` is refused, as clap uses for a usage error.
pub const USAGE_ERROR: i32 = 2;

/// The `--set` keys, for `--help`.
fn keys_help() -> String {
    let mut help = String::from("Keys of --set:\n");
    for (key, what) in KEYS {
        help.push_str(&format!("  {key:<22}{what}\n"));
    }
    help
}

/// Prints the manifests; returns the exit status (2 when an option is refused).
pub fn install(args: &InstallArgs) -> i32 {
    let options = match InstallOptions::from_sets(&args.sets) {
        Ok(options) => options,
        Err(e) => return refuse(&e),
    };
    print(&render::objects(&options), args.output)
}

/// Prints what `kubectl delete -f -` removes, in reverse apply order; returns the exit status.
pub fn uninstall(args: &UninstallArgs) -> i32 {
    let options = match InstallOptions::from_sets(&args.sets) {
        Ok(options) => options,
        Err(e) => return refuse(&e),
    };
    let mut objects: Vec<_> = render::objects(&options)
        .into_iter()
        .filter(|o| args.crds || o["kind"] != "CustomResourceDefinition")
        .collect();
    objects.reverse();
    // The DaemonSet goes first: each node agent, stopping, finds it deleted and gives every
    // pod it captured its own network back before the rest goes.
    eprintln!(
        "note: the ztunnel DaemonSet is deleted first: each node agent then releases the pods \
         it captured (their traffic no longer goes through the mesh, nor its policies) before \
         the controller goes"
    );
    print(&render::references(&objects), args.output)
}

fn refuse(error: &super::options::OptionError) -> i32 {
    eprintln!("error: {error}");
    USAGE_ERROR
}

fn print(objects: &[serde_yaml_ng::Value], format: Format) -> i32 {
    let text = match format {
        Format::Yaml => render::to_yaml(objects),
        Format::Json => render::to_json(objects) + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing the manifests to standard output: {e}");
            1
        }
    }
}
