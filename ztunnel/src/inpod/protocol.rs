//! ZDS messages as the proxy understands them: a `WorkloadRequest` plus the descriptor that came
//! with it become one [`WorkloadMessage`], checked the way Istio checks them (an `Add` must carry
//! exactly one netns descriptor, nothing else may carry one); answers are `Ack`s.

use std::os::fd::OwnedFd;

use api::zds::{self, WorkloadRequest, WorkloadResponse, workload_request::Payload};

use super::error::InpodError;
use super::pod::PodInfo;

/// One request of the node agent, validated.
#[derive(Debug)]
pub enum WorkloadMessage {
    /// Serve a pod whose network namespace is `netns`.
    Add {
        /// Who the pod is.
        pod: PodInfo,
        /// The pod's network namespace.
        netns: OwnedFd,
    },
    /// During the snapshot: keep the pod `uid` (the agent has no descriptor to send again).
    Keep(String),
    /// Stop serving the pod `uid`.
    Del(String),
    /// The snapshot is complete: pods neither added nor kept since the connection began go.
    SnapshotSent,
}

/// Turns a received request into a message. The descriptor is dropped (closed) whenever the
/// request is refused, so a malformed request never leaks a namespace.
pub fn parse(request: WorkloadRequest, fd: Option<OwnedFd>) -> Result<WorkloadMessage, InpodError> {
    let payload = request
        .payload
        .ok_or_else(|| InpodError::Protocol("request without payload".into()))?;
    match (payload, fd) {
        (Payload::Add(add), Some(netns)) => {
            let info = add.workload_info.ok_or_else(|| {
                InpodError::Protocol(format!("AddWorkload {} without workload_info", add.uid))
            })?;
            if add.uid.is_empty() {
                return Err(InpodError::Protocol("AddWorkload without uid".into()));
            }
            Ok(WorkloadMessage::Add {
                pod: PodInfo {
                    uid: add.uid,
                    name: info.name,
                    namespace: info.namespace,
                    service_account: info.service_account,
                },
                netns,
            })
        }
        (Payload::Add(add), None) => Err(InpodError::Protocol(format!(
            "AddWorkload {} without a network namespace descriptor",
            add.uid
        ))),
        (_, Some(_)) => Err(InpodError::Protocol(
            "descriptor attached to a request other than AddWorkload".into(),
        )),
        (Payload::Keep(keep), None) => Ok(WorkloadMessage::Keep(keep.uid)),
        (Payload::Del(del), None) => Ok(WorkloadMessage::Del(del.uid)),
        (Payload::SnapshotSent(_), None) => Ok(WorkloadMessage::SnapshotSent),
    }
}

/// The answer to a request: an `Ack` whose error is empty on success.
pub fn ack(result: &Result<(), InpodError>) -> WorkloadResponse {
    let error = match result {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    WorkloadResponse {
        payload: Some(zds::workload_response::Payload::Ack(zds::Ack { error })),
    }
}

/// The first message of every connection.
pub fn hello() -> zds::ZdsHello {
    zds::ZdsHello {
        version: zds::Version::V1 as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn request(payload: Payload) -> WorkloadRequest {
        WorkloadRequest {
            payload: Some(payload),
        }
    }

    fn netns_fd() -> OwnedFd {
        File::open("/proc/self/ns/net").unwrap().into()
    }

    fn add(uid: &str, info: bool) -> Payload {
        Payload::Add(zds::AddWorkload {
            uid: uid.into(),
            workload_info: info.then(|| zds::WorkloadInfo {
                name: "web-0".into(),
                namespace: "shop".into(),
                service_account: "web".into(),
            }),
        })
    }

    #[test]
    fn add_with_descriptor_is_accepted() {
        let message = parse(request(add("u1", true)), Some(netns_fd())).unwrap();
        let WorkloadMessage::Add { pod, .. } = message else {
            panic!("expected Add, got {message:?}");
        };
        assert_eq!(
            pod,
            PodInfo {
                uid: "u1".into(),
                name: "web-0".into(),
                namespace: "shop".into(),
                service_account: "web".into(),
            }
        );
    }

    #[test]
    fn add_needs_a_descriptor_and_workload_info() {
        assert!(matches!(
            parse(request(add("u1", true)), None),
            Err(InpodError::Protocol(_))
        ));
        assert!(matches!(
            parse(request(add("u1", false)), Some(netns_fd())),
            Err(InpodError::Protocol(_))
        ));
        assert!(matches!(
            parse(request(add("", true)), Some(netns_fd())),
            Err(InpodError::Protocol(_))
        ));
    }

    #[test]
    fn only_add_may_carry_a_descriptor() {
        let del = request(Payload::Del(zds::DelWorkload { uid: "u1".into() }));
        assert!(matches!(
            parse(del, Some(netns_fd())),
            Err(InpodError::Protocol(_))
        ));
    }

    #[test]
    fn keep_del_and_snapshot_sent() {
        let keep = request(Payload::Keep(zds::KeepWorkload { uid: "k".into() }));
        assert!(matches!(parse(keep, None), Ok(WorkloadMessage::Keep(u)) if u == "k"));
        let del = request(Payload::Del(zds::DelWorkload { uid: "d".into() }));
        assert!(matches!(parse(del, None), Ok(WorkloadMessage::Del(u)) if u == "d"));
        let sent = request(Payload::SnapshotSent(zds::SnapshotSent {}));
        assert!(matches!(
            parse(sent, None),
            Ok(WorkloadMessage::SnapshotSent)
        ));
        assert!(matches!(
            parse(WorkloadRequest { payload: None }, None),
            Err(InpodError::Protocol(_))
        ));
    }

    #[test]
    fn acks_carry_the_error_text() {
        let ok = ack(&Ok(()));
        assert_eq!(
            ok.payload,
            Some(zds::workload_response::Payload::Ack(zds::Ack {
                error: String::new()
            }))
        );
        let failed = ack(&Err(InpodError::Protocol("boom".into())));
        let Some(zds::workload_response::Payload::Ack(a)) = failed.payload else {
            panic!("expected an Ack");
        };
        assert!(a.error.contains("boom"), "{}", a.error);
        assert_eq!(hello().version, 1);
    }
}
