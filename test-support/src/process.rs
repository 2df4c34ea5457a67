//! Child processes a test starts.

use std::process::Child;

/// A child process killed and reaped when dropped, also when the test fails.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
