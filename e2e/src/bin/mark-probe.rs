//! `mark-probe [MARK]`: tries to set `SO_MARK` (default 0x539, the mark the
//! in-pod capture lets through untouched) on a TCP socket. Prints `marked`
//! and exits 0 when the kernel allows it, else prints the error and exits
//! with status 1. Tests run it inside sandbox pods to show a pod cannot slip
//! past the capture.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mark: u32 = match std::env::args().nth(1) {
        None => 0x539,
        Some(arg) => {
            let parsed = match arg.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => arg.parse(),
            };
            match parsed {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("mark-probe: {arg:?}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        println!("socket: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    // SAFETY: setsockopt with a pointer to a live u32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if rc == 0 {
        println!("marked");
        ExitCode::SUCCESS
    } else {
        println!("SO_MARK {mark:#x}: {error}");
        ExitCode::FAILURE
    }
}
