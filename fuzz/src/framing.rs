//! Several messages in one input: each is a flags byte, a big-endian `u16` length and that
//! many bytes. A length running past the end takes what is left, so every input splits.

/// The messages of `data`, each with its flags byte.
pub fn frames(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let [flags, rest @ ..] = data {
        let (len, rest) = match rest {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (0, &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        out.push((*flags, body));
        data = rest;
    }
    out
}

/// Appends one message to `out`, as [`frames`] reads it back.
pub fn frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("a framed message fits in 64 KiB");
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_framed_splits_back() {
        let mut data = Vec::new();
        frame(&mut data, 1, b"hello");
        frame(&mut data, 0, b"");
        frame(&mut data, 2, b"world");
        assert_eq!(
            frames(&data),
            vec![(1, &b"hello"[..]), (0, &b""[..]), (2, &b"world"[..])]
        );
        // Truncated input still splits.
        assert_eq!(frames(&data[..6]), vec![(1, &b"hel"[..])]);
        assert_eq!(frames(&[7]), vec![(7, &b""[..])]);
    }
}
