//! The bounded fuzz run of the test suite: each target's checked-in corpus, then mutants of
//! it for `FUZZ_SECONDS` (default 10) seconds, no input allowed to panic, hang or have more
//! than 64 MiB allocated at once.
//!
//! - `FUZZ_SECONDS=0`: the corpus only; `FUZZ_SECONDS=600`: a long run;
//! - `FUZZ_SEED=<n>`: the mutation seed (default: fixed per target; `random`: a new one;
//!   printed by every run, so a failure replays);
//! - `FUZZ_INPUT=<file>`: run one file through every selected target, nothing else;
//! - select targets as any test: `cargo test -p fuzzing --test bounded xds_`.
//!
//! A failing input is written under the target directory's `tmp/fuzz-failures/`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use fuzzing::driver::{self, Settings, Watchdog};

// Every allocation is counted, so the run can fail an input that allocates without bound.
#[global_allocator]
static ALLOCATOR: fuzzing::alloc::Counting = fuzzing::alloc::Counting;

/// The allocation counters are process-wide: targets run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ALLOC_LIMIT: usize = 64 << 20;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// The mutation seed: `FUZZ_SEED`, a new one each run for `FUZZ_SEED=random`, else one fixed
/// per target, so that the test suite's runs are the same every time.
fn seed(target: &str) -> u64 {
    match std::env::var("FUZZ_SEED").as_deref() {
        Ok("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        Ok(_) => env_u64("FUZZ_SEED").unwrap_or_default(),
        Err(_) => driver::fnv1a(target.as_bytes()),
    }
}

fn settings(target: &str) -> Settings {
    let seed = seed(target);
    Settings {
        duration: Duration::from_secs(env_u64("FUZZ_SECONDS").unwrap_or(10)),
        seed,
        alloc_limit: ALLOC_LIMIT,
        input_timeout: Duration::from_secs(env_u64("FUZZ_INPUT_TIMEOUT").unwrap_or(30)),
        failures: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures"),
    }
}

fn fuzz(name: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        fuzzing::alloc::installed(),
        "the counting allocator is not installed"
    );
    let target = fuzzing::target(name).expect("a known target");
    let settings = settings(name);
    if let Ok(file) = std::env::var("FUZZ_INPUT") {
        let input = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let watchdog = Watchdog::start(target.name, settings.input_timeout);
        if let Err(reason) = driver::check_one(target, &input, &settings, &watchdog) {
            panic!("{name}: {file}: {reason}");
        }
        return;
    }
    let corpus = driver::load_corpus(&fuzzing::corpus_dir().join(name))
        .unwrap_or_else(|e| panic!("{name}: reading its corpus: {e}"));
    assert!(!corpus.is_empty(), "{name} has no corpus");
    match driver::run(target, &corpus, &settings) {
        Ok(report) => println!(
            "{name}: seed {}, {} executions in {:?} ({} corpus entries), slowest input {:?}, \
             most allocated at once {} KiB",
            settings.seed,
            report.executions,
            settings.duration,
            report.corpus,
            report.slowest,
            report.peak_alloc / 1024,
        ),
        Err(failure) => panic!(
            "{name}: {}\nreplay: FUZZ_SEED={} cargo test -p fuzzing --test bounded {name}\n\
             input ({} bytes, saved to {:?}): b\"{}\"",
            failure.reason,
            settings.seed,
            failure.input.len(),
            failure.saved,
            driver::escape(&failure.input[..failure.input.len().min(4096)]),
        ),
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_run() {
            let here = [$(stringify!($name)),*];
            for target in fuzzing::TARGETS {
                assert!(here.contains(&target.name), "{} is not run", target.name);
            }
        }
    };
}

targets!(
    hbone_frames,
    hbone_connect,
    connect_headers,
    xds_address,
    xds_authorization,
    waypoint_config,
    waypoint_http,
    zds_requests,
    ca_csr,
    ca_request,
    controller_manifests,
    meshctl_manifests,
);
