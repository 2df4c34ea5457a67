//! The hidden verb `meshctl sandbox-container`: reads what to run and runs
//! it confined.

use std::os::fd::RawFd;

use super::launch::read_launch;
use super::supervise::{self, SETUP_FAILED};

/// The hidden verb: reads the launch from descriptor `spec_fd`, runs it and
/// returns the container's exit status (125 when it could not be set up,
/// with the reason on stderr, which is the container's log).
pub fn run(spec_fd: RawFd) -> i32 {
    let launch = match read_launch(spec_fd) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshctl sandbox-container: {e}");
            return SETUP_FAILED;
        }
    };
    match supervise::run(&launch) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {}: {e}", launch.what);
            SETUP_FAILED
        }
    }
}
