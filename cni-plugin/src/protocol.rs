//! What the CNI plugin and the node agent say to each other over the agent's CNI socket:
//! one JSON [`Request`] from the plugin, one JSON [`Answer`] back, one exchange per
//! connection (the plugin shuts its writing side after the request). Plain serde types, so
//! the plugin binary shares them without pulling in the agent.

use serde::{Deserialize, Serialize};

/// Longest request or answer either side reads.
pub const MAX_MESSAGE: u64 = 64 * 1024;

/// The CNI operations the agent acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// A pod sandbox got its network: capture it before any container runs.
    Add,
    /// The pod sandbox is going away: let go of it.
    Del,
    /// Is the pod captured as it should be?
    Check,
}

/// One pod event from the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// What happened.
    pub command: Command,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    pub namespace: String,
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    pub name: String,
    /// `CNI_CONTAINERID`: the pod sandbox.
    pub container_id: String,
    /// `CNI_NETNS`: the path of the pod's network namespace (may be empty on DEL).
    pub netns: String,
    /// The pod's IPs from the main plugin's result (`prevResult.ips[].address`, without
    /// the prefix length).
    #[serde(default)]
    pub ips: Vec<std::net::IpAddr>,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Empty on success; otherwise why the agent refused or failed (the plugin turns it into
    /// a CNI error).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Whether the pod is (now) captured: false for a pod that is not in the mesh.
    #[serde(default)]
    pub captured: bool,
}

impl Answer {
    /// Success; `captured` says whether the pod is in the mesh.
    pub fn ok(captured: bool) -> Answer {
        Answer {
            error: String::new(),
            captured,
        }
    }

    /// A failure, explained.
    pub fn failed(error: impl Into<String>) -> Answer {
        Answer {
            error: error.into(),
            captured: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_as_json() {
        let request = Request {
            command: Command::Add,
            namespace: "shop".into(),
            name: "web-1".into(),
            container_id: "abc".into(),
            netns: "/run/netns/cni-1".into(),
            ips: vec!["10.244.1.5".parse().unwrap()],
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains(r#""command":"ADD""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        assert_eq!(
            serde_json::to_string(&Answer::ok(true)).unwrap(),
            r#"{"captured":true}"#
        );
        let failed: Answer = serde_json::from_str(r#"{"error":"no proxy"}"#).unwrap();
        assert_eq!(failed, Answer::failed("no proxy"));
    }
}
