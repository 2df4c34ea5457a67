//! `meshctl check --pre`: whether this host can run a sandbox, before one is made: root, the
//! programs the sandbox and the node agent run, the mesh's binaries, and the in-pod
//! redirection itself, installed by `ztunnel preflight` in a throwaway network namespace.

use std::path::Path;
use std::process::Command;

use crate::operator::check::{Check, Status};
use crate::sandbox::settings::SandboxSettings;

/// The group of every pre-flight check.
pub const PRE_FLIGHT: &str = "pre-flight";

/// Programs the sandbox (namespaces, bridges, Service NAT) and the node agent (in-pod rules)
/// run.
const PROGRAMS: &[&str] = &[
    "ip",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// The binaries a sandbox starts, from its binaries folder.
const BINARIES: &[&str] = &["meshctl", "controller", "ztunnel", "waypoint"];

const PACKAGES: &str = "install them: `apt-get install iproute2 iptables` (or run \
                        scripts/host-packages.sh)";

/// Runs every pre-flight check, in the order they are shown.
pub fn run(cfg: &SandboxSettings) -> Vec<Check> {
    let mut checks = vec![root()];
    checks.push(programs(std::env::var_os("PATH").as_deref()));
    checks.push(binaries(&cfg.bin_dir));
    checks.extend(redirection(&cfg.bin_dir.join("ztunnel")));
    checks
}

fn root() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::ok(PRE_FLIGHT, "running as root")
    } else {
        Check::failed(
            PRE_FLIGHT,
            Status::Error,
            "not running as root",
            "the sandbox makes network namespaces and iptables rules: run meshctl as root",
        )
    }
}

/// Whether every program of [`PROGRAMS`] is on `path`.
fn programs(path: Option<&std::ffi::OsStr>) -> Check {
    let dirs: Vec<_> = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .collect();
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|program| !dirs.iter().any(|dir| dir.join(program).is_file()))
        .collect();
    if missing.is_empty() {
        Check::ok(PRE_FLIGHT, format!("{} are installed", PROGRAMS.join(", ")))
    } else {
        let message = format!("missing programs: {}", missing.join(", "));
        Check::failed(PRE_FLIGHT, Status::Error, message, PACKAGES)
    }
}

fn binaries(dir: &Path) -> Check {
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if missing.is_empty() {
        Check::ok(
            PRE_FLIGHT,
            format!("the mesh's binaries are in {}", dir.display()),
        )
    } else {
        Check::failed(
            PRE_FLIGHT,
            Status::Error,
            format!("missing from {}: {}", dir.display(), missing.join(", ")),
            "build them (`cargo build --workspace --bins`) or point --bin-dir at them",
        )
    }
}

/// One check per IP family from `ztunnel preflight`.
fn redirection(ztunnel: &Path) -> Vec<Check> {
    let hint = "the kernel or iptables lacks what in-pod capture needs (policy routing, the \
                mangle and nat tables, mark/connmark, TPROXY): use a kernel with netfilter \
                and iptables-nft or iptables-legacy";
    let output = match Command::new(ztunnel).arg("preflight").output() {
        Ok(output) => output,
        Err(e) => {
            let message = format!("{} preflight could not run: {e}", ztunnel.display());
            return vec![Check::failed(PRE_FLIGHT, Status::Error, message, hint)];
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut checks: Vec<Check> = stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(family, outcome)| match outcome {
            "ok" => Check::ok(PRE_FLIGHT, format!("in-pod capture installs ({family})")),
            why => Check::failed(
                PRE_FLIGHT,
                Status::Error,
                format!("in-pod capture cannot be installed ({family}): {why}"),
                hint,
            ),
        })
        .collect();
    if checks.is_empty()
        || (!output.status.success() && checks.iter().all(|c| c.status == Status::Ok))
    {
        let stderr = String::from_utf8_lossy(&output.stderr);
        checks.push(Check::failed(
            PRE_FLIGHT,
            Status::Error,
            format!("ztunnel preflight failed: {}", stderr.trim()),
            hint,
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_are_named() {
        let empty = tempfile_dir();
        let check = programs(Some(empty.path().as_os_str()));
        assert_eq!(check.status, Status::Error);
        assert_eq!(
            check.message,
            format!("missing programs: {}", PROGRAMS.join(", "))
        );
        for program in PROGRAMS {
            std::fs::write(empty.join(program), "").unwrap();
        }
        assert_eq!(programs(Some(empty.path().as_os_str())).status, Status::Ok);
    }

    #[test]
    fn missing_binaries_are_named() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("meshctl"), "").unwrap();
        let check = binaries(dir.path());
        assert_eq!(check.status, Status::Error);
        assert!(
            check.message.ends_with(": controller, ztunnel, waypoint"),
            "{}",
            check.message
        );
    }

    #[test]
    fn a_ztunnel_that_cannot_run_is_an_error_not_a_pass() {
        let checks = redirection(Path::new("/nonexistent/ztunnel"));
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Error);
    }

    fn tempfile_dir() -> test_support::TempDir {
        test_support::TempDir::new("meshctl-preflight")
    }
}
