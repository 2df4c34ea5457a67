//! The proxies' heap: bulk buffers reused while connections run, freed memory given back to
//! the system once they are gone ([`follow_load`] does both).
//!
//! glibc's allocator keeps what connections freed inside its arenas: after 5 000 idle
//! connections closed, a ztunnel stayed at 113 MB instead of its idle 9 MB, because the freed
//! blocks are scattered through the heap and only its very top is ever returned. A proxy's
//! memory should follow its load both ways, so every few seconds the proxy asks how much is
//! free and, past a threshold, has the allocator release the free pages (`malloc_trim`).

use std::time::Duration;

use tracing::debug;

/// How often the proxy looks at its free heap memory.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);
/// Free heap memory worth giving back: below it a trim costs more than it returns.
pub const TRIM_THRESHOLD: usize = 4 << 20;

/// Largest allocation glibc serves from its heaps rather than mapping it on its own. Bulk
/// transfers cycle through buffers of up to a few MiB (the relay's reads into a tunnel,
/// HTTP/2's received frames): mapped one by one, or trimmed off a heap's top as soon as
/// freed, each comes back as fresh pages to fault in, which cost more CPU than the copies.
pub const HEAP_ALLOCATION_MAX: usize = 4 << 20;
/// Free memory at the top of a heap that a `free` leaves in place for the next allocation:
/// room for a few bulk buffers to come and go without being faulted in again. (glibc's
/// `malloc_trim` does not reach the top of a thread's heap, so this much may stay after a
/// bulk transfer.)
pub const HEAP_TOP_KEPT: usize = 4 << 20;

/// Has the heap follow the proxy's load both ways: freed bulk buffers are kept for reuse
/// ([`reuse_bulk_buffers`]) and what stays free is given back ([`trim_periodically`], in a
/// detached task that ends with the runtime). Called once, at startup, inside the runtime.
pub fn follow_load() {
    reuse_bulk_buffers();
    tokio::spawn(trim_periodically(TRIM_INTERVAL, TRIM_THRESHOLD));
}

/// Has the allocator keep freed bulk buffers for reuse (see [`HEAP_ALLOCATION_MAX`]); on its
/// own only in tests: [`follow_load`] pairs it with the trim that gives the memory back.
pub fn reuse_bulk_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets the allocator's parameters; both values fit in a c_int.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_ALLOCATION_MAX as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_TOP_KEPT as libc::c_int);
        }
    }
}

/// Bytes the allocator holds free in its arenas, where it can say (glibc).
pub fn free_heap_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Has the allocator release its free pages to the system; true if it released any.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim is safe to call at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Every `interval`, releases free heap memory if more than `threshold` bytes of it are held.
/// Runs until its task is dropped.
pub async fn trim_periodically(interval: Duration, threshold: usize) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(free) = free_heap_bytes() else {
            return;
        };
        if free > threshold {
            // Walks the arenas under their locks: off the proxy's worker threads.
            let released = tokio::task::spawn_blocking(release_free_memory)
                .await
                .unwrap_or(false);
            debug!(free_bytes = free, released, "heap trimmed");
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn scattered_free_memory_is_counted_and_released() {
        // Many blocks, every other one freed: free memory the heap's top cannot give back.
        let mut blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 4096]).collect();
        let before = free_heap_bytes().unwrap();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, block)| (i % 2 == 0).then_some(block))
            .collect();
        let free = free_heap_bytes().unwrap();
        // Other tests allocate and free too: half of the 32 MiB is the floor of what freed.
        assert!(
            free >= before + (8 << 20),
            "free heap grew from {before} to {free} only"
        );
        assert!(release_free_memory(), "freed pages were given back");
        drop(kept);
    }
}
