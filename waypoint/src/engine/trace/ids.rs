//! Trace and span ids: random (never all zero, which W3C and B3 forbid) and their lowercase
//! hex spelling.

/// Lowercase hex of `bytes` into `out` (two digits per byte).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Random bytes that are not all zero.
pub(crate) fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        fastrand::fill(&mut out);
        if out.iter().any(|b| *b != 0) {
            return out;
        }
    }
}

/// The bytes spelled by `hex` (lowercase or uppercase digits, exactly `2 * N` of them, not
/// all zero); `None` otherwise.
pub(crate) fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    out.iter().any(|b| *b != 0).then_some(out)
}

fn digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// `bytes` as lowercase hex.
#[cfg(test)]
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(&mut out, bytes);
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_zero_and_junk() {
        let id: [u8; 8] = random_id();
        assert_eq!(parse_hex::<8>(&to_hex(&id)), Some(id));
        assert_eq!(parse_hex::<2>("0A1f"), Some([0x0a, 0x1f]));
        assert_eq!(parse_hex::<2>("0000"), None);
        assert_eq!(parse_hex::<2>("0g00"), None);
        assert_eq!(parse_hex::<2>("000"), None);
    }
}
