//! Child processes a test starts.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

/// A child process killed and reaped when dropped, also when the test fails.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of another package of the workspace, from the folder the running test was built
/// into (`target/<profile>/<name>`: tests run from `target/<profile>/deps/`). `cargo test
/// --workspace` builds it; panics saying how to, when it is not there.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile.join(name);
    assert!(
        binary.is_file(),
        "{} is not built: `cargo build --bin {name}` (or test the whole workspace)",
        binary.display()
    );
    binary
}

/// Runs `command` with `stdin` as its whole standard input (closed after it), its standard
/// output and error captured: what a runtime does when it execs a plugin.
pub fn output_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    // Dropped right after the write: the command sees the end of its input.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("the command's output")
}
