//! The HTTP/2 frame layout (RFC 9113 §4.1), for code that reads or writes frames by hand:
//! the guard's parser, and tests and tools that play a misbehaving peer.

/// What every HTTP/2 client sends first.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header: 24-bit length, type, flags, 31-bit stream id.
pub const FRAME_HEADER_LEN: usize = 9;

/// Frame type HEADERS.
pub const HEADERS: u8 = 0x1;
/// Frame type RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// Frame type SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// Frame type PUSH_PROMISE.
pub const PUSH_PROMISE: u8 = 0x5;
/// Frame type GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// Frame type CONTINUATION.
pub const CONTINUATION: u8 = 0x9;

/// Flag END_STREAM (DATA, HEADERS).
pub const END_STREAM: u8 = 0x1;
/// Flag END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const END_HEADERS: u8 = 0x4;

/// One frame: header and `payload`.
pub fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The length, type and flags of a complete frame header.
pub fn header(bytes: &[u8; FRAME_HEADER_LEN]) -> (usize, u8, u8) {
    let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
    (len, bytes[3], bytes[4])
}

/// The (type, payload) of each whole frame at the start of `bytes`; a trailing partial frame
/// is left out.
pub fn decode(mut bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some(head) = bytes.first_chunk::<FRAME_HEADER_LEN>() {
        let (len, kind, _) = header(head);
        let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            break;
        };
        out.push((kind, payload));
        bytes = &bytes[FRAME_HEADER_LEN + len..];
    }
    out
}

/// The error codes of the GOAWAY frames in `bytes`.
pub fn goaway_codes(bytes: &[u8]) -> Vec<u32> {
    decode(bytes)
        .into_iter()
        .filter(|(kind, _)| *kind == GOAWAY)
        .filter_map(|(_, payload)| payload.get(4..8))
        .map(|code| u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut bytes = encode(SETTINGS, 0, 0, &[]);
        bytes.extend(encode(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0xb]));
        bytes.extend(encode(HEADERS, END_HEADERS, 1, b"abc"));
        bytes.extend(&encode(HEADERS, 0, 3, b"partial")[..12]);
        let frames = decode(&bytes);
        assert_eq!(
            frames,
            [
                (SETTINGS, &b""[..]),
                (GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 0xb][..]),
                (HEADERS, b"abc")
            ]
        );
        assert_eq!(goaway_codes(&bytes), [0xb]);
        let head = encode(CONTINUATION, END_HEADERS, 5, &[0; 70_000]);
        assert_eq!(
            header(head.first_chunk().unwrap()),
            (70_000, CONTINUATION, END_HEADERS)
        );
    }
}
