//! The bounded run: every corpus entry, then mutants of them until the time is up, each
//! input checked for panics (on any thread), allocation beyond a bound and hangs.
//!
//! Runs are reproducible: the mutants come from a seeded [`Rng`], and a failure names the
//! target, the seed, the iteration and a file holding the input.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::alloc;
use crate::mutate::{Mutator, Rng};
use crate::target::Target;

/// How long and how hard to fuzz one target.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time for mutants once the corpus has run (0: the corpus only).
    pub duration: Duration,
    /// Seed of the mutations.
    pub seed: u64,
    /// Most bytes an input may have live at once above what was live before it.
    pub alloc_limit: usize,
    /// An input still running after this long is a hang: the process reports it and aborts.
    pub input_timeout: Duration,
    /// Where failing inputs are written.
    pub failures: PathBuf,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Inputs run (corpus and mutants).
    pub executions: u64,
    /// Corpus entries.
    pub corpus: usize,
    /// The most an input allocated at once, in bytes.
    pub peak_alloc: usize,
    /// The slowest input.
    pub slowest: Duration,
}

/// Why an input failed.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub reason: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where it was written.
    pub saved: Option<PathBuf>,
}

/// The panic message of the input running now, from any thread: panics inside spawned
/// tasks are caught by the runtime and would otherwise go unseen.
static PANICKED: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut slot = PANICKED.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| {
                let thread = std::thread::current();
                format!("panic on thread {:?}: {info}", thread.name().unwrap_or("?"))
            });
            drop(slot);
            previous(info);
        }));
    });
}

/// Runs one input under every check.
pub fn check_one(
    target: &Target,
    input: &[u8],
    settings: &Settings,
    watchdog: &Watchdog,
) -> Result<Duration, String> {
    install_panic_hook();
    *PANICKED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    watchdog.begin(input);
    alloc::set_input(input);
    let baseline = alloc::arm(settings.alloc_limit);
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    let elapsed = started.elapsed();
    let peak = alloc::disarm(baseline);
    watchdog.end();
    PEAK_SEEN.fetch_max(peak as u64, Ordering::Relaxed);
    if let Some(message) = PANICKED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(message);
    }
    if outcome.is_err() {
        return Err("panicked".into());
    }
    if let Some(size) = alloc::refused() {
        return Err(format!("asked for a single allocation of {size} bytes"));
    }
    if peak > settings.alloc_limit {
        return Err(format!(
            "had {peak} bytes allocated at once (limit {})",
            settings.alloc_limit
        ));
    }
    Ok(elapsed)
}

static PEAK_SEEN: AtomicU64 = AtomicU64::new(0);

/// Runs the corpus, then mutants until `settings.duration` has passed.
pub fn run(target: &Target, corpus: &[Vec<u8>], settings: &Settings) -> Result<Report, Failure> {
    PEAK_SEEN.store(0, Ordering::Relaxed);
    let watchdog = Watchdog::start(target.name, settings.input_timeout);
    let mut report = Report {
        corpus: corpus.len(),
        ..Report::default()
    };
    let mut record = |input: &[u8], what: String| -> Result<(), Failure> {
        report.executions += 1;
        match check_one(target, input, settings, &watchdog) {
            Ok(elapsed) => {
                report.slowest = report.slowest.max(elapsed);
                Ok(())
            }
            Err(reason) => Err(fail(target, settings, input, format!("{what}: {reason}"))),
        }
    };
    for (i, entry) in corpus.iter().enumerate() {
        record(entry, format!("corpus entry {i}"))?;
    }
    let mutator = Mutator::new(target.shape, target.dictionary, target.max_len);
    let mut rng = Rng::new(settings.seed);
    let deadline = Instant::now() + settings.duration;
    let mut iteration = 0u64;
    let empty = [Vec::new()];
    let pool = if corpus.is_empty() {
        &empty[..]
    } else {
        corpus
    };
    while Instant::now() < deadline {
        let base = &pool[rng.below(pool.len())];
        let mutant = mutator.mutate(&mut rng, base, pool);
        record(
            &mutant,
            format!("seed {} iteration {iteration}", settings.seed),
        )?;
        iteration += 1;
    }
    report.peak_alloc = PEAK_SEEN.load(Ordering::Relaxed) as usize;
    Ok(report)
}

fn fail(target: &Target, settings: &Settings, input: &[u8], reason: String) -> Failure {
    let name = format!("{}-{:016x}", target.name, fnv1a(input));
    let path = settings.failures.join(name);
    let saved = std::fs::create_dir_all(&settings.failures)
        .and_then(|()| std::fs::write(&path, input))
        .ok()
        .map(|()| path);
    Failure {
        reason,
        input: input.to_vec(),
        saved,
    }
}

/// A stable name for an input.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Aborts the process, naming the input, when one runs longer than its timeout: a hang
/// cannot be caught from the thread that hangs. One thread watches a whole run.
pub struct Watchdog {
    state: Arc<WatchState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WatchState {
    target: &'static str,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds after `epoch` at which the current input started, plus one; 0: idle.
    running_since: AtomicU64,
    input: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

impl Watchdog {
    /// Watches the inputs of `target`, allowing each `timeout`.
    pub fn start(target: &'static str, timeout: Duration) -> Self {
        let state = Arc::new(WatchState {
            target,
            timeout,
            epoch: Instant::now(),
            running_since: AtomicU64::new(0),
            input: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let watched = state.clone();
        let thread = std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || watched.watch())
            .ok();
        Watchdog { state, thread }
    }

    fn begin(&self, input: &[u8]) {
        let mut slot = self.state.input.lock().unwrap_or_else(|e| e.into_inner());
        slot.clear();
        slot.extend_from_slice(input);
        let now = self.state.epoch.elapsed().as_millis() as u64 + 1;
        self.state.running_since.store(now, Ordering::Release);
    }

    fn end(&self) {
        self.state.running_since.store(0, Ordering::Release);
    }
}

impl WatchState {
    fn watch(&self) {
        while !self.stop.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(100));
            let since = self.running_since.load(Ordering::Acquire);
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            if since != 0 && now.saturating_sub(since) > self.timeout.as_millis() as u64 {
                let input = self.input.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "fuzz: {}: an input ran longer than {:?}: b\"{}\"",
                    self.target,
                    self.timeout,
                    escape(&input)
                );
                std::process::abort();
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// `data` as a Rust byte string literal's contents, for messages.
pub fn escape(data: &[u8]) -> String {
    data.iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

/// Reads every file of `dir` (sorted by name), the target's seed corpus.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .map(std::fs::read)
        .collect()
}
