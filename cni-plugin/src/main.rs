//! `ztunnel-cni`: the chained CNI plugin that captures a mesh pod before its containers
//! start. The runtime runs it after the main plugin (which gave the pod its interface and
//! IPs, `prevResult`); on `ADD` it asks the node agent, over the agent's CNI socket, to
//! install the pod's in-pod redirection and hand it to the node proxy, waits for the answer,
//! then passes `prevResult` on unchanged. Synchronous and small: it runs once per pod.
//!
//! Network configuration keys besides the spec's: `agent_socket` (default
//! `/var/run/ztunnel-cni/cni.sock`) and `exclude_namespaces` (pods there are never asked about).

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use ztunnel_cni::protocol::{Answer, Command, MAX_MESSAGE, Request};

/// The spec versions this plugin speaks (its configuration and results are the same in all).
const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where the agent listens unless the configuration says otherwise.
const DEFAULT_SOCKET: &str = "/var/run/ztunnel-cni/cni.sock";

/// Longest wait for the agent's answer to `ADD` / `CHECK` (it waits up to 10 s for the
/// pod to be listed, then for the rules and the proxy).
const ANSWER_WAIT: Duration = Duration::from_secs(45);

/// Longest wait on `DEL`, which never fails.
const DEL_WAIT: Duration = Duration::from_secs(5);

/// Largest network configuration read from stdin.
const MAX_CONFIG: u64 = 1024 * 1024;

/// A CNI error: the spec's well-known code (or ours, from 100) and its message.
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

/// Well-known codes (CNI spec, "Error").
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENV: u32 = 4;
const DECODE: u32 = 6;
const INVALID_CONFIG: u32 = 7;
const TRY_AGAIN_LATER: u32 = 11;
/// Ours: the agent answered that the pod could not be captured.
const NOT_CAPTURED: u32 = 100;

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = String::new();
    let read = std::io::stdin().take(MAX_CONFIG).read_to_string(&mut stdin);
    let config: Value = match read {
        Ok(_) if stdin.trim().is_empty() => Value::Null,
        Ok(_) => match serde_json::from_str(&stdin) {
            Ok(v) => v,
            Err(e) => {
                return fail(
                    "",
                    CniError::new(DECODE, "network configuration is not JSON", e.to_string()),
                );
            }
        },
        Err(e) => {
            return fail(
                "",
                CniError::new(DECODE, "reading the network configuration", e.to_string()),
            );
        }
    };
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let outcome = match command.as_str() {
        "VERSION" => {
            let answer = json!({
                "cniVersion": if version.is_empty() { "1.1.0" } else { version.as_str() },
                "supportedVersions": SUPPORTED_VERSIONS,
            });
            println!("{answer}");
            return ExitCode::SUCCESS;
        }
        "ADD" | "DEL" | "CHECK" => run(&command, &config, &version),
        // Nothing of ours to report or collect: ready whenever the runtime is.
        "STATUS" | "GC" => Ok(None),
        other => Err(CniError::new(
            INVALID_ENV,
            "unknown CNI_COMMAND",
            format!("{other:?}"),
        )),
    };
    match outcome {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&version, e),
    }
}

/// Prints the spec's error object on stdout and exits non-zero.
fn fail(version: &str, e: CniError) -> ExitCode {
    let error = json!({
        "cniVersion": if version.is_empty() { "1.1.0" } else { version },
        "code": e.code,
        "msg": e.msg,
        "details": e.details,
    });
    println!("{error}");
    eprintln!("ztunnel-cni: {}: {}", e.msg, e.details);
    ExitCode::FAILURE
}

/// ADD, DEL or CHECK: the output to print on success.
fn run(command: &str, config: &Value, version: &str) -> Result<Option<Value>, CniError> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("{version:?}; supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    for key in ["name", "type"] {
        if config.get(key).and_then(Value::as_str).is_none() {
            return Err(CniError::new(
                INVALID_CONFIG,
                "invalid network configuration",
                format!("`{key}` is missing"),
            ));
        }
    }
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let args = env("CNI_ARGS");
    let namespace = cni_arg(&args, "K8S_POD_NAMESPACE");
    let name = cni_arg(&args, "K8S_POD_NAME");
    let prev = config.get("prevResult").cloned();
    let excluded = config
        .get("exclude_namespaces")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|n| n.as_str() == Some(namespace.as_str())));
    let container_id = env("CNI_CONTAINERID");
    if container_id.is_empty() {
        return Err(CniError::new(
            INVALID_ENV,
            "CNI_CONTAINERID is required",
            "",
        ));
    }
    if command == "ADD" {
        for var in ["CNI_NETNS", "CNI_IFNAME"] {
            if env(var).is_empty() {
                return Err(CniError::new(INVALID_ENV, format!("{var} is required"), ""));
            }
        }
    }
    let Some(prev) = prev.filter(|_| command != "DEL") else {
        if command == "DEL" {
            // Best effort: the pod goes whatever the agent says.
            if !namespace.is_empty() && !excluded {
                let _ = ask(
                    config,
                    request(Command::Del, &namespace, &name, &container_id, vec![]),
                    DEL_WAIT,
                );
            }
            return Ok(None);
        }
        return Err(CniError::new(
            INVALID_CONFIG,
            "no prevResult",
            "ztunnel-cni is chained after the main plugin of a conflist",
        ));
    };
    // Not a Kubernetes pod (no pod name), or a namespace the mesh never captures.
    if namespace.is_empty() || name.is_empty() || excluded {
        return Ok((command == "ADD").then_some(prev));
    }
    let command = if command == "ADD" {
        Command::Add
    } else {
        Command::Check
    };
    let answer = ask(
        config,
        request(command, &namespace, &name, &container_id, prev_ips(&prev)),
        ANSWER_WAIT,
    )
    .map_err(|e| CniError::new(TRY_AGAIN_LATER, "the node agent cannot be reached", e))?;
    if !answer.error.is_empty() {
        return Err(CniError::new(
            NOT_CAPTURED,
            "the pod could not be captured by the mesh",
            answer.error,
        ));
    }
    Ok((command == Command::Add).then_some(prev))
}

fn request(
    command: Command,
    namespace: &str,
    name: &str,
    container_id: &str,
    ips: Vec<IpAddr>,
) -> Request {
    Request {
        command,
        namespace: namespace.to_string(),
        name: name.to_string(),
        container_id: container_id.to_string(),
        netns: std::env::var("CNI_NETNS").unwrap_or_default(),
        ips,
    }
}

/// `KEY`'s value in `CNI_ARGS` (`K1=V1;K2=V2`).
fn cni_arg(args: &str, key: &str) -> String {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// The addresses of `prevResult.ips` (`"10.244.1.5/24"` → 10.244.1.5).
fn prev_ips(prev: &Value) -> Vec<IpAddr> {
    prev.get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// One exchange with the agent, bounded by `wait`.
fn ask(config: &Value, request: Request, wait: Duration) -> Result<Answer, String> {
    let socket = config
        .get("agent_socket")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SOCKET);
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connecting to {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(wait))
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .map_err(|e| e.to_string())?;
    let text = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    stream
        .write_all(&text)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("sending to {socket}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_MESSAGE)
        .read_to_end(&mut answer)
        .map_err(|e| format!("waiting for the answer on {socket}: {e}"))?;
    serde_json::from_slice(&answer).map_err(|e| format!("the agent's answer: {e}"))
}
