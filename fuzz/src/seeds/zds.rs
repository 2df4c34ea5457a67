//! ZDS seeds: the node agent's requests as it sends them, framed one packet each
//! ([`frame`]); flags bit 0 attaches a network namespace descriptor.

use std::collections::BTreeMap;

use api::zds::workload_request::Payload;
use api::zds::{
    AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, WorkloadInfo, WorkloadRequest,
};
use prost::Message;

use crate::framing::frame;

/// Attach a descriptor.
const FD: u8 = 1;

fn add(uid: &str, name: &str) -> Payload {
    Payload::Add(AddWorkload {
        uid: uid.into(),
        workload_info: Some(WorkloadInfo {
            name: name.into(),
            namespace: "shop".into(),
            service_account: "reviews".into(),
        }),
    })
}

fn keep(uid: &str) -> Payload {
    Payload::Keep(KeepWorkload { uid: uid.into() })
}

fn del(uid: &str) -> Payload {
    Payload::Del(DelWorkload { uid: uid.into() })
}

fn snapshot() -> Payload {
    Payload::SnapshotSent(SnapshotSent {})
}

fn packets(list: Vec<(u8, Payload)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (flags, payload) in list {
        let request = WorkloadRequest {
            payload: Some(payload),
        };
        frame(&mut out, flags, &request.encode_to_vec());
    }
    out
}

const UID: &str = "0b4f6c9e-8d1c-4c3e-9a51-3f1a2b7c9d10";
const UID2: &str = "7d2e1a44-5b6f-4e21-8c3d-9e8f7a6b5c40";

/// The seeds, by name.
pub(super) fn requests() -> BTreeMap<String, Vec<u8>> {
    let seeds = [
        (
            "snapshot",
            packets(vec![
                (FD, add(UID, "reviews-v1-1")),
                (0, keep(UID2)),
                (0, snapshot()),
                (0, del(UID)),
            ]),
        ),
        (
            "replace-netns",
            packets(vec![
                (FD, add(UID, "reviews-v1-1")),
                (FD | 2, add(UID, "reviews-v1-1")),
                (0, snapshot()),
                (FD, add(UID2, "reviews-v2-1")),
            ]),
        ),
        (
            "add-without-fd",
            packets(vec![(0, add(UID, "reviews-v1-1"))]),
        ),
        ("del-before-snapshot", packets(vec![(0, del(UID))])),
        (
            "two-snapshots",
            packets(vec![(0, snapshot()), (0, snapshot())]),
        ),
        (
            "start-fails",
            packets(vec![(FD, add(UID, "fail")), (0, snapshot()), (0, del(UID))]),
        ),
        ("two-fds", packets(vec![(FD | 4, add(UID, "reviews-v1-1"))])),
        ("fd-on-keep", packets(vec![(FD, keep(UID))])),
        ("empty-packet", vec![0, 0, 0]),
    ];
    seeds
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect()
}
