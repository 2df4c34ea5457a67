//! The seed corpus, made from the real encoders: HTTP/2 bytes from a real client, protobuf
//! from the controller's own translation of the fixture mesh and of the repository's
//! manifests, CSRs from rcgen. `cargo run -p fuzzing --example seeds` rewrites
//! `fuzz/corpus/` with them; the bounded run and libFuzzer start from there.

mod ca;
mod zds;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Method, Request};
use prost::Message;

use crate::mesh::{MESH_YAML, mesh, served, translate_manifests};
use crate::targets::hbone::client_bytes;

/// Seeds by target name, then file name.
pub type Corpus = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

/// Every target's seeds. `repo` is the repository root (manifests are read from
/// `examples/` and `controller/tests/fixtures/`).
pub fn corpus(repo: &Path) -> Corpus {
    let manifests = manifests(repo);
    let mut corpus = Corpus::new();
    corpus.insert("hbone_frames", hbone_frames());
    corpus.insert("hbone_connect", text(HBONE_CONNECT));
    corpus.insert("connect_headers", text(CONNECT_HEADERS));
    corpus.insert("xds_address", encoded(&mesh().addresses));
    corpus.insert("xds_authorization", encoded(&mesh().authorizations));
    corpus.insert("waypoint_config", waypoint_configs(repo));
    corpus.insert("waypoint_http", waypoint_http());
    corpus.insert("zds_requests", zds::requests());
    corpus.insert("ca_csr", ca::csrs());
    corpus.insert("ca_request", ca::requests());
    corpus.insert("controller_manifests", manifests.clone());
    corpus.insert("meshctl_manifests", manifests);
    corpus
}

/// Inputs that once failed are kept under this prefix; the generator leaves them alone.
pub const FOUND_PREFIX: &str = "found-";

/// Writes `corpus` under `dir`, one folder per target, replacing the generated seeds that
/// were there (not the inputs found by fuzzing).
pub fn write(corpus: &Corpus, dir: &Path) -> std::io::Result<()> {
    for (target, seeds) in corpus {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder)?;
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            let found = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FOUND_PREFIX));
            if !found {
                std::fs::remove_file(&path)?;
            }
        }
        for (name, bytes) in seeds {
            std::fs::write(folder.join(name), bytes)?;
        }
    }
    Ok(())
}

fn text(seeds: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    seeds
        .iter()
        .map(|(name, body)| ((*name).to_owned(), body.as_bytes().to_vec()))
        .collect()
}

/// Resource names made file names.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn encoded<M: Message>(resources: &[(String, M)]) -> BTreeMap<String, Vec<u8>> {
    resources
        .iter()
        .map(|(name, m)| (file_name(name), m.encode_to_vec()))
        .collect()
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const BAGGAGE: &str = "k8s.namespace.name=shop,k8s.deployment.name=productpage,\
service.name=productpage,service.version=v1";

/// CONNECT as ztunnel sends it: `:authority` and the `forwarded`, `baggage` and
/// `traceparent` headers.
fn hbone_request(target: &str, forwarded_for: Option<&str>) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header("baggage", BAGGAGE)
        .header("traceparent", TRACEPARENT)
        .body(())
        .expect("a valid request");
    if let Some(client) = forwarded_for {
        let client: SocketAddr = client.parse().expect("a socket address");
        let value = hbone::forwarded::header_value(client);
        request
            .headers_mut()
            .insert("forwarded", value.parse().expect("a header value"));
    }
    request
}

/// A request and the bytes sent after it.
type Exchange = (Request<()>, Bytes);

fn hbone_frames() -> BTreeMap<String, Vec<u8>> {
    let tunnel = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n");
    let get = Request::builder()
        .uri("http://10.244.2.10:8082/")
        .body(())
        .expect("a valid request");
    let sets: Vec<(&str, Vec<Exchange>)> = vec![
        (
            "connect-accepted",
            vec![(
                hbone_request("10.244.2.10:8082", Some("10.244.1.5:41234")),
                tunnel.clone(),
            )],
        ),
        (
            "connect-denied",
            vec![(hbone_request("10.244.2.10:8081", None), Bytes::new())],
        ),
        (
            "connect-unanswered",
            vec![(
                hbone_request("10.244.2.10:8080", Some("10.244.1.5:0")),
                Bytes::new(),
            )],
        ),
        (
            "connect-v6",
            vec![(
                hbone_request("[fd00::a]:9083", Some("[fd00::5]:443")),
                tunnel.clone(),
            )],
        ),
        ("get-refused", vec![(get, Bytes::new())]),
        (
            "three-streams",
            vec![
                (
                    hbone_request("10.244.2.10:8082", Some("10.244.1.5:1")),
                    tunnel.clone(),
                ),
                (
                    hbone_request("10.244.2.10:8081", Some("10.244.1.5:2")),
                    Bytes::new(),
                ),
                (
                    hbone_request("10.244.2.11:8082", Some("10.244.1.5:3")),
                    tunnel,
                ),
            ],
        ),
    ];
    sets.into_iter()
        .map(|(name, requests)| {
            let bytes = client_bytes(requests);
            // The target sends the preface itself.
            let frames = bytes[crate::targets::hbone::PREFACE.len()..].to_vec();
            (name.to_owned(), frames)
        })
        .collect()
}

const HBONE_CONNECT: &[(&str, &str)] = &[
    (
        "accepted",
        "CONNECT 10.244.2.10:8082\nforwarded: for=\"10.244.1.5:41234\"\n\
         baggage: k8s.namespace.name=shop\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n\n\
         GET / HTTP/1.1\r\nhost: reviews\r\n\r\n",
    ),
    (
        "denied",
        "CONNECT 10.244.2.10:8081\nforwarded: for=10.244.1.5\n",
    ),
    ("unanswered", "CONNECT 10.244.2.10:8080\n"),
    (
        "v6",
        "CONNECT [fd00::a]:9083\nforwarded: for=\"[fd00::5]:443\"\n\nhello",
    ),
    ("hostname", "CONNECT reviews.shop:9080\n"),
    ("no-port", "CONNECT 10.244.2.10\n"),
    ("get", "GET http://10.244.2.10:8082/\nuser-agent: curl\n"),
    (
        "post",
        "POST http://10.244.2.10:8082/upload\ncontent-length: 5\n\nhello",
    ),
];

const CONNECT_HEADERS: &[(&str, &str)] = &[
    (
        "ztunnel",
        "for=\"10.244.1.5:41234\"\n00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n\
         0f8fad5b-d9cb-469f-a165-70867728950e",
    ),
    ("ip-only", "for=10.244.1.5\n\n"),
    (
        "v6-chain",
        "for=10.9.9.9, proto=http;For=\"[fd00::7]:80\"\n\
         01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra\n",
    ),
    (
        "mapped",
        "for=\"[::ffff:10.0.0.1]:5\"\nff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    (
        "obfuscated",
        "for=_hidden;by=10.0.0.1\n00-00000000000000000000000000000000-00f067aa0ba902b7-01\n",
    ),
    (
        "unknown",
        "for=unknown\n 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 \nid",
    ),
];

/// The waypoint configs the controller serves for its route fixtures and for the
/// repository's L7 examples.
fn waypoint_configs(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let fixtures = repo.join("controller/tests/fixtures");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut sets: Vec<(String, String)> = vec![("mesh".into(), MESH_YAML.to_owned())];
    let base = read(&fixtures.join("routes-mesh.yaml"));
    for name in ["istio", "httproute", "smi-linkerd", "ratelimit", "authz"] {
        let routes = read(&fixtures.join(format!("routes-{name}.yaml")));
        sets.push((format!("routes-{name}"), format!("{base}\n---\n{routes}")));
    }
    let l7 = repo.join("examples/l7");
    let l7_base = yaml_files(&l7.join("base"))
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("\n---\n");
    for (name, text) in yaml_files_recursive(&l7) {
        if !name.starts_with("base") {
            sets.push((format!("l7-{name}"), format!("{l7_base}\n---\n{text}")));
        }
    }
    let mut out = BTreeMap::new();
    for (set, text) in sets {
        let translation = translate_manifests("seed.yaml", &text);
        for (name, config) in served(&translation).waypoints {
            out.insert(file_name(&format!("{set}-{name}")), config.encode_to_vec());
        }
    }
    out
}

/// The `*.yaml` files of `dir`, by file name.
fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            Some((name, std::fs::read_to_string(&p).ok()?))
        })
        .collect();
    files.sort();
    files
}

/// The `*.yaml` files under `dir`, named by their path below it.
fn yaml_files_recursive(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_dir() {
            for (inner, text) in yaml_files_recursive(&path) {
                out.push((format!("{name}-{inner}"), text));
            }
        } else if name.ends_with(".yaml") {
            out.push((name, std::fs::read_to_string(&path).unwrap_or_default()));
        }
    }
    out
}

/// Every manifest of the repository's examples and controller fixtures, and the fixture
/// mesh.
fn manifests(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    out.insert("mesh.yaml".to_owned(), MESH_YAML.as_bytes().to_vec());
    for (dir, prefix) in [
        ("examples", "examples"),
        ("controller/tests/fixtures", "fixtures"),
    ] {
        for (name, text) in yaml_files_recursive(&repo.join(dir)) {
            out.insert(format!("{prefix}-{name}"), text.into_bytes());
        }
    }
    out
}

fn waypoint_http() -> BTreeMap<String, Vec<u8>> {
    let mut out = text(HTTP1);
    let h2 = client_bytes(vec![
        (
            Request::builder()
                .uri("http://reviews.shop:9080/api/v1?v=12")
                .header("end-user", "jason")
                .header("x-debug", "1")
                .body(())
                .expect("a valid request"),
            Bytes::new(),
        ),
        (
            Request::builder()
                .method(Method::POST)
                .uri("http://reviews.shop:9080/reviews/1")
                .header("traceparent", TRACEPARENT)
                .body(())
                .expect("a valid request"),
            Bytes::from_static(b"{\"stars\": 5}"),
        ),
    ]);
    out.insert("h2-get-post".to_owned(), h2);
    out
}

const HTTP1: &[(&str, &str)] = &[
    (
        "get",
        "GET /api/v1?v=12 HTTP/1.1\r\nHost: reviews.shop:9080\r\nend-user: jason\r\nx-debug: 1\r\n\r\n",
    ),
    (
        "post-length",
        "POST /reviews/1 HTTP/1.1\r\nHost: reviews\r\nContent-Length: 12\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n{\"stars\": 5}",
    ),
    (
        "post-chunked",
        "POST /reviews HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n",
    ),
    (
        "pipelined",
        "GET /a HTTP/1.1\r\nHost: reviews\r\n\r\nGET /fail HTTP/1.1\r\nHost: reviews\r\n\r\n\
         DELETE /old HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
    ),
    (
        "expect-continue",
        "PUT /reset HTTP/1.1\r\nHost: reviews\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    ),
    ("http10", "GET /tea/pot HTTP/1.0\r\n\r\n"),
    (
        "absolute-form",
        "GET http://reviews.shop:9080/api/x HTTP/1.1\r\nHost: other\r\nx-token: secret-1\r\n\r\n",
    ),
    (
        "upgrade",
        "GET / HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    ),
    (
        "short-body",
        "POST /refuse HTTP/1.1\r\nHost: reviews\r\nContent-Length: 100\r\n\r\nonly this",
    ),
    (
        "bad-chunk",
        "POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    ),
];
