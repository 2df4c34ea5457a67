//! Identifiers: random UIDs, Kubernetes-style name suffixes, a stable hash,
//! and process identities that survive PID reuse.

use serde::{Deserialize, Serialize};

/// A process, identified beyond its PID by its start time so a recycled PID
/// is never mistaken for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcId {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

/// Source of random bytes (a trait so tests can be deterministic).
pub trait Entropy {
    /// `n` random bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8>;
}

/// `n` bytes from the kernel's CSPRNG (getrandom(2)).
pub fn os_random(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: writes at most `n - filled` bytes into our buffer.
        let got = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                n - filled,
                0,
            )
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += got as usize;
    }
    Ok(buf)
}

/// Random bytes from the kernel.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        os_random(n).unwrap_or_else(|_| {
            // Without the kernel's source, std's per-process random hasher
            // keys are still unpredictable enough for names and UIDs.
            use std::hash::{BuildHasher, RandomState};
            let mut buf = vec![0u8; n];
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                let v = RandomState::new().hash_one(i).to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            buf
        })
    }
}

/// FNV-1a, 64 bit: stable across runs and builds (unlike std's hasher).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Kubernetes' "safe" alphabet for generated names (no vowels, no confusable
/// characters).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `len` characters of the safe alphabet derived from `n`.
pub fn k8s_suffix(mut n: u64, len: usize) -> String {
    let base = ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % base) as usize] as char;
            n /= base;
            if n == 0 {
                n = fnv64(&[c as u8]) ^ 0x9e37_79b9_7f4a_7c15;
            }
            c
        })
        .collect()
}

/// A random UUID in version-4 format.
pub fn uid(rng: &mut dyn Entropy) -> String {
    let mut b = rng.bytes(16);
    b.resize(16, 0);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic "random" bytes for tests.
    pub(crate) struct Counter(pub u64);

    impl Entropy for Counter {
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n)
                .map(|_| {
                    self.0 = self.0.wrapping_add(1);
                    (fnv64(&self.0.to_le_bytes()) & 0xff) as u8
                })
                .collect()
        }
    }

    #[test]
    fn uid_is_v4_format() {
        let u = uid(&mut OsEntropy);
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uid(&mut OsEntropy));
    }

    #[test]
    fn suffixes_use_the_safe_alphabet() {
        let s = k8s_suffix(fnv64(b"template"), 10);
        assert_eq!(s.len(), 10);
        assert!(s.bytes().all(|c| ALPHABET.contains(&c)));
        assert_eq!(s, k8s_suffix(fnv64(b"template"), 10));
        assert_eq!(k8s_suffix(0, 5).len(), 5);
    }
}
