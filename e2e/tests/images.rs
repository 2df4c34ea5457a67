//! The container images (`scripts/build-images.sh`, which the test command runs before the
//! tests) under the security settings the manifests give their containers: the same user,
//! read-only root file system, no privilege escalation, and only the capabilities the
//! manifest adds. Each runs the program its manifest runs: the controller, the waypoint by
//! the template's `command: [waypoint]`, the ztunnel proxy, and for the node agent
//! `ztunnel preflight`, which installs the in-pod redirection (ip rules, iptables for IPv4
//! and IPv6) in a throwaway namespace: proof that the image carries what the agent runs and
//! that the listed capabilities suffice.
//!
//! Skipped, saying why, when neither podman nor docker can run containers here or the
//! images were not built; the test command installs podman and builds them.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The images' tag, as the manifests name them.
const TAG: &str = "0.1.0";

/// A container tool that can run the images.
struct Engine {
    program: &'static str,
    global: Vec<&'static str>,
}

impl Engine {
    /// The first of docker and podman that answers `info`, with the flags
    /// `scripts/build-images.sh` uses.
    fn find() -> Option<Engine> {
        let mut podman = vec!["--cgroup-manager=cgroupfs", "--events-backend=file"];
        if Command::new("runc").arg("--version").output().is_ok() {
            // crun refuses hosts whose cgroups are in hybrid mode; runc runs there.
            podman.push("--runtime=runc");
        }
        [("docker", vec![]), ("podman", podman)]
            .into_iter()
            .map(|(program, global)| Engine { program, global })
            .find(|engine| {
                engine
                    .command(&["info"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.global).args(args);
        command
    }

    /// The user the image runs as (`Config.User`), or None when the image is absent.
    fn image_user(&self, image: &str) -> Option<String> {
        let out = self
            .command(&["image", "inspect", "--format", "{{.Config.User}}", image])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// One container of a manifest, with its pod's security context.
struct ManifestContainer {
    pod: Value,
    container: Value,
}

impl ManifestContainer {
    /// Container `name` of the workload (Deployment, DaemonSet) in `manifests/<file>`.
    fn load(file: &str, name: &str) -> ManifestContainer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests")
            .join(file);
        let text = std::fs::read_to_string(&path).expect("the manifest");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let object = Value::deserialize(document).expect("YAML");
            let pod = &object["spec"]["template"]["spec"];
            let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
            if let Some(container) = containers.into_iter().find(|c| c["name"] == name) {
                return ManifestContainer {
                    pod: pod.clone(),
                    container,
                };
            }
        }
        panic!("{file} has no container {name}");
    }

    /// A security context field, the container's overriding the pod's.
    fn security(&self, field: &str) -> Option<&Value> {
        let own = &self.container["securityContext"][field];
        if own.is_null() {
            self.pod["securityContext"].get(field)
        } else {
            Some(own)
        }
    }

    fn security_flag(&self, field: &str) -> bool {
        self.security(field).and_then(Value::as_bool) == Some(true)
    }

    fn security_id(&self, field: &str) -> Option<u64> {
        self.security(field).and_then(Value::as_u64)
    }

    /// `run` flags applying the security context, the entrypoint override (`command`) and
    /// the check's resource limits (as in `scripts/build-images.sh`).
    fn run_flags(&self, engine: &Engine) -> Vec<String> {
        let mut flags: Vec<String> = ["--rm", "--network=none"]
            .into_iter()
            .chain([
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .map(str::to_string)
            .collect();
        if let Some(uid) = self.security_id("runAsUser") {
            let gid = self.security_id("runAsGroup").unwrap_or(uid);
            flags.push(format!("--user={uid}:{gid}"));
        }
        if self.security_flag("readOnlyRootFilesystem") {
            flags.push("--read-only".into());
            if engine.program == "podman" {
                // podman would mount its own tmpfs on /tmp and /run; Kubernetes does not.
                flags.push("--read-only-tmpfs=false".into());
            }
        }
        if self
            .security("allowPrivilegeEscalation")
            .and_then(Value::as_bool)
            == Some(false)
        {
            flags.push("--security-opt=no-new-privileges".into());
        }
        let capabilities = &self.container["securityContext"]["capabilities"];
        for (flag, list) in [("--cap-drop", "drop"), ("--cap-add", "add")] {
            for cap in capabilities[list].as_sequence().into_iter().flatten() {
                flags.push(format!(
                    "{flag}={}",
                    cap.as_str().expect("a capability name")
                ));
            }
        }
        if let Some(command) = self.container["command"].as_sequence() {
            assert_eq!(command.len(), 1, "an entrypoint of one program");
            flags.push(format!("--entrypoint={}", command[0].as_str().unwrap()));
        }
        flags
    }
}

/// What running `image` (a component's name) as `file`'s container `name` with `args` printed,
/// or None when it cannot be run here (said on stderr). Asserts the image's user is the one
/// the manifest runs it as.
fn run_as_manifest_says(file: &str, name: &str, image: &str, args: &[&str]) -> Option<String> {
    run_program_as_manifest_says(file, name, image, None, &[], args)
}

/// [`run_as_manifest_says`], running `program` of the image instead of its entrypoint when
/// one is given, with `env` (`KEY=VALUE`) set.
fn run_program_as_manifest_says(
    file: &str,
    name: &str,
    image: &str,
    program: Option<&str>,
    env: &[&str],
    args: &[&str],
) -> Option<String> {
    let Some(engine) = Engine::find() else {
        eprintln!("skipped: neither docker nor podman can run containers here");
        return None;
    };
    let image = format!("ghcr.io/ambient-mesh/{image}:{TAG}");
    let Some(image_user) = engine.image_user(&image) else {
        eprintln!("skipped: {image} is not built (scripts/build-images.sh builds it)");
        return None;
    };
    let container = ManifestContainer::load(file, name);
    if container.security_flag("runAsNonRoot") {
        // The image's own user is the manifest's, so the image runs as non-root anywhere.
        let uid = container.security_id("runAsUser").expect("runAsUser");
        let gid = container.security_id("runAsGroup").expect("runAsGroup");
        assert_eq!(image_user, format!("{uid}:{gid}"), "{image}'s user");
    } else {
        assert_eq!(container.security_id("runAsUser"), Some(0), "{file} {name}");
        assert_eq!(image_user, "0:0", "{image}'s user");
    }
    let mut run = engine.command(&["run"]);
    run.args(container.run_flags(&engine));
    if let Some(program) = program {
        run.arg(format!("--entrypoint={program}"));
    }
    for variable in env {
        run.arg(format!("--env={variable}"));
    }
    run.arg(&image).args(args);
    let out = run.output().expect("the container tool runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{run:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

#[test]
fn the_controller_image_runs_as_its_deployment_says() {
    let args = ["--help"];
    let out = run_as_manifest_says("controller.yaml", "controller", "controller", &args);
    let Some(out) = out else { return };
    assert!(out.contains("Usage: controller [OPTIONS]"), "{out}");
}

#[test]
fn the_waypoint_image_runs_the_templates_command() {
    let args = ["--help"];
    let out = run_as_manifest_says("waypoint-template.yaml", "istio-proxy", "waypoint", &args);
    let Some(out) = out else { return };
    assert!(out.contains("Usage: waypoint [OPTIONS]"), "{out}");
}

#[test]
fn the_ztunnel_image_runs_the_proxy_as_the_daemonset_says() {
    let args = ["proxy", "--help"];
    let out = run_as_manifest_says("ztunnel-daemonset.yaml", "proxy", "ztunnel", &args);
    let Some(out) = out else { return };
    assert!(out.contains("Usage: ztunnel proxy [OPTIONS]"), "{out}");
}

#[test]
fn the_node_agent_installs_the_redirection_with_the_daemonsets_capabilities_only() {
    let args = ["node-agent", "--help"];
    let help = run_as_manifest_says("ztunnel-daemonset.yaml", "node-agent", "ztunnel", &args);
    let Some(help) = help else { return };
    assert!(
        help.contains("Usage: ztunnel node-agent [OPTIONS]"),
        "{help}"
    );
    let preflight = run_as_manifest_says(
        "ztunnel-daemonset.yaml",
        "node-agent",
        "ztunnel",
        &["preflight"],
    );
    assert_eq!(preflight.as_deref(), Some("ipv4: ok\nipv6: ok\n"));
    // The node's probe rule goes in whichever variant the node's own rules use: both run.
    for (program, variant) in [
        ("iptables-nft-save", "nf_tables"),
        ("ip6tables-nft-restore", "nf_tables"),
        ("iptables-legacy-save", "legacy"),
        ("ip6tables-legacy-restore", "legacy"),
    ] {
        let path = format!("/usr/sbin/{program}");
        let version = run_program_as_manifest_says(
            "ztunnel-daemonset.yaml",
            "node-agent",
            "ztunnel",
            Some(&path),
            &[],
            &["--version"],
        )
        .unwrap_or_default();
        assert!(version.contains(variant), "{program}: {version}");
    }
    // The chained CNI plugin the agent copies onto the node answers as a runtime asks it.
    let versions = run_program_as_manifest_says(
        "ztunnel-daemonset.yaml",
        "node-agent",
        "ztunnel",
        Some("/usr/local/bin/ztunnel-cni"),
        &["CNI_COMMAND=VERSION"],
        &[],
    )
    .unwrap_or_default();
    assert!(versions.contains("\"supportedVersions\""), "{versions}");
}
