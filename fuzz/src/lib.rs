//! Fuzz targets for every parser that faces a peer or a user, and the machinery for a
//! bounded fuzz run on the stable toolchain.
//!
//! Each target is a plain `fn(&[u8])` that must never panic, hang or allocate without
//! bound, whatever the bytes. The same functions run in three places:
//!
//! - the test `tests/bounded.rs`: the checked-in corpus (`corpus/<target>/`), then mutants
//!   ([`mutate`]) for `FUZZ_SECONDS` per target, under a counting allocator ([`alloc`]);
//! - `fuzz/libfuzzer/`: cargo-fuzz (nightly, coverage-guided) for long runs;
//! - `examples/seeds.rs`, which writes the seed corpus from the real encoders.
//!
//! See `docs/fuzzing.md` for how to run them and what they found.

pub mod alloc;
pub mod driver;
mod framing;
pub mod mesh;
pub mod mutate;
pub mod seeds;
mod target;
pub mod targets;

pub use framing::{frame, frames};
pub use target::Target;

/// Every target.
pub const TARGETS: &[Target] = &[
    targets::hbone::FRAMES,
    targets::hbone::CONNECT,
    targets::headers::CONNECT_HEADERS,
    targets::xds::ADDRESS,
    targets::xds::AUTHORIZATION,
    targets::waypoint::CONFIG,
    targets::http::WAYPOINT_HTTP,
    targets::zds::REQUESTS,
    targets::ca::CSR,
    targets::ca::REQUEST,
    targets::manifests::CONTROLLER,
    targets::manifests::MESHCTL,
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The folder holding the seed corpus of every target.
pub fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
