//! Network namespaces for tests that need real ones (and so root).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace (`ip netns add`) with loopback up, deleted on drop (also when
/// the test fails). Its name is `<tag>-<pid>-<n>`, so tests running in parallel never share
/// one. Needs root.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates the namespace; panics when it cannot.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{tag}-{}-{n}", std::process::id());
            // A name left by an earlier process with the same pid is skipped.
            if Path::new("/run/netns").join(&name).exists() {
                continue;
            }
            run("ip", &["netns", "add", &name]);
            let ns = Self { name };
            ns.ip(&["link", "set", "lo", "up"]);
            return ns;
        }
    }

    /// As [`TestNetns::new`] when the test runs as root; otherwise `None`, and the test
    /// says on stderr that it is skipped.
    pub fn if_root(tag: &str) -> Option<Self> {
        if nix::unistd::geteuid().is_root() {
            Some(Self::new(tag))
        } else {
            eprintln!("skipped: needs root for a network namespace");
            None
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its handle under `/run/netns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <name> args…`: its output; panics when it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `args` inside the namespace (`ip netns exec`): its output; panics when it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` on a thread inside the namespace: sockets it creates stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = File::open(self.path()).expect("the namespace's handle");
        std::thread::spawn(move || {
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            f()
        })
        .join()
        .expect("the thread in the namespace")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `program args…`: its standard output; panics with its standard error when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
