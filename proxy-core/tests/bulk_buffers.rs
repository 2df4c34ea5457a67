//! Freed bulk buffers are reused without faulting in fresh pages (a process of its own: the
//! allocator's parameters are process-wide).

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use proxy_core::memory::reuse_bulk_buffers;

/// Page faults this thread has taken so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_minflt
}

/// Allocates three 1 MiB buffers, writes every page, frees them: what a bulk transfer's
/// buffers go through, a few in flight at once.
fn cycle() {
    let buffers: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 1 << 20]).collect();
    std::hint::black_box(&buffers);
}

#[test]
fn bulk_buffers_freed_are_reused_without_fresh_pages() {
    reuse_bulk_buffers();
    cycle();
    let before = minor_faults();
    for _ in 0..4 {
        cycle();
    }
    let faults = minor_faults() - before;
    // Without the tuning glibc maps each buffer, or trims the freed ones off its heap, so
    // every round faults its 768 pages in again.
    assert!(
        faults < 128,
        "{faults} page faults in 4 rounds of reused buffers"
    );
}
