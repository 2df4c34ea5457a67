//! `meshctl ca status` and `meshctl ca rotate-root`: the controller's CA through its admin
//! endpoint (`/debug/ca`, loopback only, reached inside the controller's namespace).

use std::time::Duration;

use serde_json::Value;

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
    #[arg(long, default_value = "3650d", value_parser = parse_lifetime)]
    pub new_root_ttl: Duration,
    /// Window over which proxies renew their certificates once the new root signs.
    #[arg(long, default_value = "60s", value_parser = parse_lifetime)]
    pub reissue_within: Duration,
    /// Wait until the rotation completes, printing each phase as it begins.
    #[arg(long)]
    pub wait: bool,
    /// Output format: text (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `90s`, `12h`, `3650d`, `500ms` or a bare number of seconds.
pub fn parse_lifetime(text: &str) -> std::result::Result<Duration, String> {
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number with a unit (ms, s, m, h, d), e.g. 3650d"))?;
    let seconds = |n: u64| Duration::from_secs(value.saturating_mul(n));
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    }
}

/// Runs a `ca` verb; returns the exit status.
pub fn run(cfg: &SandboxSettings, command: CaCommand) -> Result<i32> {
    let netns = Sandbox::open(cfg)?.control()?.netns.clone();
    match command {
        CaCommand::Status(a) => {
            let json = wants_json(a.output.as_deref()).map_err(SandboxError::Invalid)?;
            print(&status(&netns)?, json);
            Ok(0)
        }
        CaCommand::RotateRoot(a) => rotate_root(&netns, &a),
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
    let json = wants_json(a.output.as_deref()).map_err(SandboxError::Invalid)?;
    if a.new_root_ttl < Duration::from_secs(3600) {
        return Err(SandboxError::Invalid("--new-root-ttl: at least 1h".into()));
    }
    let path = format!(
        "/debug/ca/rotate-root?new_root_ttl={}&reissue_within={}",
        a.new_root_ttl.as_secs(),
        a.reissue_within.as_secs_f64()
    );
    let started = parse(&system::controller_post(netns, &path)?)?;
    print(&started, json);
    if !a.wait {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_days() {
        assert_eq!(
            parse_lifetime("3650d"),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        assert_eq!(parse_lifetime("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_lifetime("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_lifetime("1y").unwrap_err().contains("unit must be"));
        assert!(parse_lifetime("d").is_err());
    }
}
