//! Compiles the .proto files under `proto/` with protox (pure Rust, no
//! system protoc) and generates prost messages plus tonic clients/servers.

use std::path::{Path, PathBuf};

/// Every file to compile, relative to `proto/`.
const PROTOS: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/workload/zds/zds.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "google/rpc/status.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/discovery/v3/ads.proto",
    "mesh/waypoint/v1/waypoint.proto",
    "mesh/ca/v1/trust_bundle.proto",
    "mesh/telemetry/v1/access_logging.proto",
    "mesh/echo/v1/echo.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    // protox resolves google/protobuf/* itself; imports are included so
    // prost-build sees every referenced type.
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [Path::new(&root)])?;

    let mut config = prost_build::Config::new();
    // Lets `prost::Name::type_url()` yield "type.googleapis.com/<full name>",
    // the form xDS uses in `Any` and `type_url`.
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    // Resources served over xDS use ordered maps: prost encodes a map in
    // iteration order, and equal content must give equal bytes (resource
    // versions are hashes of the encoding).
    config.btree_map([".mesh", ".istio.workload"]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
