//! A counting global allocator: how many bytes an input had allocated at once (its peak over
//! what was live before it ran), so the bounded run can fail an input that makes a parser
//! allocate without limit.
//!
//! A binary opts in with `#[global_allocator] static A: fuzzing::alloc::Counting =
//! fuzzing::alloc::Counting;`. While [`arm`]ed, a single request larger than the hard cap is
//! refused (null) instead of taking the machine's memory: code using `try_reserve` sees an
//! error, anything else aborts; either way [`refused`] reports it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Largest single request allowed while armed; 0 when disarmed.
static HARD_CAP: AtomicUsize = AtomicUsize::new(0);
/// Size of the last request refused while armed (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// The input being run, printed when a request is refused: the process may abort next.
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak.
#[derive(Debug, Default)]
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !admit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

fn admit(size: usize) -> bool {
    INSTALLED.store(true, Ordering::Relaxed);
    let cap = HARD_CAP.load(Ordering::Relaxed);
    if cap != 0 && size > cap {
        if REFUSED.swap(size, Ordering::Relaxed) == 0 {
            report_refusal(size);
        }
        return false;
    }
    true
}

/// Writes the refused size and the input in hex to stderr without allocating (this runs
/// inside the allocator, and an abort may follow).
fn report_refusal(size: usize) {
    let ptr = INPUT_PTR.load(Ordering::Relaxed);
    let len = INPUT_LEN.load(Ordering::Relaxed);
    let mut line = [0u8; 160];
    let mut at = 0;
    for part in [&b"fuzz: refused an allocation of "[..], b"0x"] {
        line[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    at += hex(&size.to_be_bytes(), &mut line[at..]);
    let tail = b" bytes; the input, in hex:\n";
    line[at..at + tail.len()].copy_from_slice(tail);
    write_stderr(&line[..at + tail.len()]);
    if ptr.is_null() {
        return;
    }
    // SAFETY: `set_input` recorded a slice that outlives the run of the input.
    let input = unsafe { std::slice::from_raw_parts(ptr, len) };
    for chunk in input.chunks(64) {
        let mut out = [0u8; 129];
        let n = hex(chunk, &mut out);
        out[n] = b'\n';
        write_stderr(&out[..=n]);
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    2 * bytes.len()
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2; a failed write is of no consequence.
    let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Records the input about to run, for the report of a refused request. The slice must
/// stay alive until [`disarm`].
pub fn set_input(input: &[u8]) {
    INPUT_LEN.store(input.len(), Ordering::Relaxed);
    INPUT_PTR.store(input.as_ptr().cast_mut(), Ordering::Relaxed);
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Whether the counting allocator is the global allocator of this process.
pub fn installed() -> bool {
    drop(std::hint::black_box(Box::new(0u64)));
    INSTALLED.load(Ordering::Relaxed)
}

/// Starts measuring an input: the peak restarts from what is live now. While armed, a
/// single request above `hard_cap` bytes is refused.
pub fn arm(hard_cap: usize) -> usize {
    REFUSED.store(0, Ordering::Relaxed);
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    HARD_CAP.store(hard_cap, Ordering::Relaxed);
    live
}

/// Stops refusing and returns how far the live bytes rose above `baseline` (from [`arm`]).
pub fn disarm(baseline: usize) -> usize {
    HARD_CAP.store(0, Ordering::Relaxed);
    INPUT_PTR.store(std::ptr::null_mut(), Ordering::Relaxed);
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

/// The size of a request refused since the last [`arm`], if any.
pub fn refused() -> Option<usize> {
    match REFUSED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}
