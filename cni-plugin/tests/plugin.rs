//! The plugin binary as a runtime runs it, without an agent: `VERSION`, and configuration
//! errors in the spec's error format. Its exchanges with a real agent are tested with the
//! agent (ztunnel/tests/agent/cni.rs).

use std::process::Command;

use serde_json::{Value, json};
use test_support::process::output_with_stdin;

/// Runs the plugin with `env` and `stdin`: whether it succeeded, and what it printed.
fn run(env: Vec<(&'static str, &'static str)>, stdin: &'static str) -> (bool, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ztunnel-cni"));
    command.env_clear().envs(env);
    let out = output_with_stdin(command, stdin.as_bytes());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value)
}

#[test]
fn version_and_configuration_errors_follow_the_spec() {
    let (ok, version) = run(
        vec![("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert!(ok);
    assert_eq!(
        version,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let (ok, error) = run(
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ],
        r#"{"cniVersion":"0.2.0","name":"n","type":"ztunnel-cni"}"#,
    );
    assert!(!ok);
    assert_eq!(error["code"], 1);
    let (ok, error) = run(
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ],
        r#"{"cniVersion":"1.0.0","name":"n","type":"ztunnel-cni"}"#,
    );
    assert!(!ok);
    assert_eq!(error["code"], 4, "{error}");
}
