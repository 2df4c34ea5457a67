//! `meshctl ca status` and `meshctl ca rotate-root`: the controller's CA through its admin
//! endpoint (`/debug/ca`, loopback only, reached inside the controller's namespace).

use std::time::Duration;

use controller::ca::rotation::LAYOUT;
use serde_json::Value;

use super::duration::parse_duration;
use crate::operator::ca::status_text;
use crate::operator::format::wants_json;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::state;
use crate::sandbox::ops::sandbox::Sandbox;
use crate::sandbox::ops::system;
use crate::sandbox::settings::SandboxSettings;

/// `ca` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Where a root rotation stands: phase, roots and their expiry, proxies on the served
    /// trust bundle, what the next phase waits for.
    Status(CaStatusArgs),
    /// Rotate the CA's root without a failed request.
    ///
    /// Phases, each persisted before it takes effect and resumed after a controller restart:
    /// (1) the new root is published beside the old one; (2) once every proxy has loaded that
    /// trust bundle, (3) the new root signs and proxies renew their certificates, spread over
    /// --reissue-within; (4) once no certificate from the old root can be valid, the old root
    /// is dropped. Follow it with `meshctl ca status`, or --wait.
    RotateRoot(RotateRootArgs),
    /// Replace the CA's signing material with a folder's, in the same phases.
    ///
    /// The folder holds Istio's plug-in layout (ca-cert.pem, ca-key.pem, cert-chain.pem,
    /// root-cert.pem: an intermediate, as cert-manager or an offline root issue it) or a
    /// root and its key (root-cert.pem, root-key.pem). Material that does not load (a key
    /// that is not the certificate's, an expired or not yet valid certificate, a chain that
    /// does not lead to the given roots) is refused with the reason and changes nothing.
    Replace(ReplaceArgs),
}

/// `ca replace`.
#[derive(clap::Args, Debug)]
pub struct ReplaceArgs {
    /// The folder of the new CA material.
    pub folder: std::path::PathBuf,
    /// How it runs.
    #[command(flatten)]
    pub phases: PhaseArgs,
}

/// What `rotate-root` and `replace` share.
#[derive(clap::Args, Debug)]
pub struct PhaseArgs {
    /// Window over which proxies renew their certificates once the new material signs.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub reissue_within: Duration,
    /// Wait until the rotation completes, printing each phase as it begins.
    #[arg(long)]
    pub wait: bool,
    /// Output format: text (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `ca status`.
#[derive(clap::Args, Debug)]
pub struct CaStatusArgs {
    /// Output format: text (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `ca rotate-root`.
#[derive(clap::Args, Debug)]
pub struct RotateRootArgs {
    /// Lifetime of the new root: a number with a unit (s, m, h, d), at least 1h.
    #[arg(long, default_value = "3650d", value_parser = parse_duration)]
    pub new_root_ttl: Duration,
    /// How it runs.
    #[command(flatten)]
    pub phases: PhaseArgs,
}

/// Runs a `ca` verb; returns the exit status.
pub fn run(cfg: &SandboxSettings, command: CaCommand) -> Result<i32> {
    let (netns, ca_dir) = {
        let sb = Sandbox::open(cfg)?;
        (sb.control()?.netns.clone(), sb.layout().ca_dir())
    };
    match command {
        CaCommand::Status(a) => {
            let json = wants_json(a.output.as_deref()).map_err(SandboxError::Invalid)?;
            print(&status(&netns)?, json);
            Ok(0)
        }
        CaCommand::RotateRoot(a) => rotate_root(&netns, &a),
        CaCommand::Replace(a) => replace(&netns, &ca_dir, &a),
    }
}

/// The controller's `/debug/ca`.
fn status(netns: &str) -> Result<Value> {
    let answer = system::controller_get(netns, "/debug/ca")?;
    parse(&answer)
}

fn parse(answer: &crate::sandbox::host::admin::Response) -> Result<Value> {
    let body = String::from_utf8_lossy(&answer.body);
    if answer.status != 200 {
        return Err(SandboxError::Invalid(format!(
            "the controller says: {}",
            body.trim()
        )));
    }
    serde_json::from_str(&body)
        .map_err(|e| SandboxError::Invalid(format!("controller /debug/ca: {e}")))
}

fn rotate_root(netns: &str, a: &RotateRootArgs) -> Result<i32> {
    let json = wants_json(a.phases.output.as_deref()).map_err(SandboxError::Invalid)?;
    if a.new_root_ttl < Duration::from_secs(3600) {
        return Err(SandboxError::Invalid("--new-root-ttl: at least 1h".into()));
    }
    let path = format!(
        "/debug/ca/rotate-root?new_root_ttl={}&reissue_within={}",
        a.new_root_ttl.as_secs(),
        a.phases.reissue_within.as_secs_f64()
    );
    let started = parse(&system::controller_post(netns, &path)?)?;
    follow(netns, &started, a.phases.wait, json)
}

/// `ca replace`: the folder's layout files copied beside the CA's (the controller reads
/// nothing outside its folder), then handed over by name; the copy goes once it is staged.
fn replace(netns: &str, ca_dir: &std::path::Path, a: &ReplaceArgs) -> Result<i32> {
    let json = wants_json(a.phases.output.as_deref()).map_err(SandboxError::Invalid)?;
    let name = format!("incoming-{}", std::process::id());
    let incoming = ca_dir.join(&name);
    let copied = copy_layout(&a.folder, &incoming);
    let answer = copied.and_then(|()| {
        let path = format!(
            "/debug/ca/replace?from={name}&reissue_within={}",
            a.phases.reissue_within.as_secs_f64()
        );
        system::controller_post(netns, &path)
    });
    let _ = std::fs::remove_dir_all(&incoming);
    let started = parse(&answer?)?;
    follow(netns, &started, a.phases.wait, json)
}

/// The CA layout files of `from` (those present) copied into a new folder `to`, mode 0700.
fn copy_layout(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |what: &std::path::Path, e: std::io::Error| {
        SandboxError::Invalid(format!("{}: {e}", what.display()))
    };
    let _ = std::fs::remove_dir_all(to);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(|e| fail(to, e))?;
    let mut found = 0;
    for name in LAYOUT {
        let source = from.join(name);
        if source.exists() {
            std::fs::copy(&source, to.join(name)).map_err(|e| fail(&source, e))?;
            found += 1;
        }
    }
    if found == 0 {
        return Err(SandboxError::Invalid(format!(
            "{}: no CA files ({})",
            from.display(),
            LAYOUT.join(", ")
        )));
    }
    Ok(())
}

/// Prints `started`, then with `wait` each phase as it begins until the rotation is over.
fn follow(netns: &str, started: &Value, wait: bool, json: bool) -> Result<i32> {
    print(started, json);
    if !wait {
        return Ok(0);
    }
    let mut phase = started["phase_number"].as_u64();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let current = status(netns)?;
        if current["phase_number"].as_u64() != phase {
            phase = current["phase_number"].as_u64();
            print(&current, json);
            if phase == Some(0) {
                return Ok(0);
            }
        }
    }
}

fn print(status: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string(status).unwrap_or_default());
    } else {
        println!("{}", status_text(status, state::now()));
    }
}
