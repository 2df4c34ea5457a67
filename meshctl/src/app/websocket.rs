//! The WebSocket protocol as far as the test apps need it (RFC 6455): the opening handshake's
//! key and accept values, and frames read and written whole (no extensions; fragments are
//! passed through as frames). Servers send unmasked frames, clients masked ones (§5.3).

use std::io;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version every client sends in `Sec-WebSocket-Version` (RFC 6455 §4.1).
pub const VERSION: &str = "13";
/// Largest frame payload the apps accept.
pub const MAX_PAYLOAD: u64 = 1 << 20;
/// Close code: normal closure (§7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;

/// The GUID a server appends to the client's key (§1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes (§5.2).
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub fn client_key() -> String {
    let nonce: [u8; 16] = std::array::from_fn(|_| random_byte());
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` answering `key`: base64 of SHA-1 of the key and the GUID.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{ACCEPT_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn random_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    // Masks and nonces need to be unpredictable to intermediaries, not secret.
    RandomState::new().hash_one(std::time::Instant::now()) as u8
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// See [`opcode`].
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A whole message or control frame.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            opcode,
            payload: payload.into(),
        }
    }

    /// A close frame with `code` and no reason.
    pub fn close(code: u16) -> Self {
        Self::new(opcode::CLOSE, code.to_be_bytes())
    }

    /// The status code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one frame; `None` when the stream ends cleanly before one starts.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 2];
    match reader.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut head[1..]).await?;
    let fin = head[0] & 0x80 != 0;
    if head[0] & 0x70 != 0 {
        return Err(invalid("reserved bits set without an extension"));
    }
    let opcode = head[0] & 0x0F;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_PAYLOAD {
        return Err(invalid("frame larger than the apps accept"));
    }
    let mut mask = [0u8; 4];
    if masked {
        reader.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).await?;
    if masked {
        apply_mask(&mut payload, mask);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Writes `frame`, masked when `masked` (a client's frames).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
    masked: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(frame.payload.len() + 14);
    out.push(if frame.fin { 0x80 } else { 0 } | frame.opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = frame.payload.len();
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let start = out.len();
    if masked {
        let mask: [u8; 4] = std::array::from_fn(|_| random_byte());
        out.extend_from_slice(&mask);
        out.extend_from_slice(&frame.payload);
        apply_mask(&mut out[start + 4..], mask);
    } else {
        out.extend_from_slice(&frame.payload);
    }
    writer.write_all(&out).await?;
    writer.flush().await
}

fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = client_key();
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(nonce.len(), 16);
    }

    #[tokio::test]
    async fn frames_round_trip_masked_or_not_at_every_length_form() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            for masked in [false, true] {
                let frame = Frame::new(opcode::BINARY, vec![0xA5; len]);
                let mut wire = Vec::new();
                write_frame(&mut wire, &frame, masked).await.unwrap();
                let mut reader = wire.as_slice();
                let read = read_frame(&mut reader).await.unwrap().unwrap();
                assert_eq!(read, frame, "len {len}, masked {masked}");
                assert!(reader.is_empty());
            }
        }
        let mut empty: &[u8] = &[];
        assert_eq!(read_frame(&mut empty).await.unwrap(), None);
    }

    #[tokio::test]
    async fn close_frames_carry_their_code_and_bad_frames_are_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &Frame::close(CLOSE_NORMAL), true)
            .await
            .unwrap();
        let read = read_frame(&mut wire.as_slice()).await.unwrap().unwrap();
        assert_eq!(read.close_code(), Some(CLOSE_NORMAL));
        // RSV1 set: no extension was negotiated.
        let reserved: &[u8] = &[0xC1, 0x00];
        assert!(read_frame(&mut &reserved[..]).await.is_err());
        let huge: &[u8] = &[0x82, 0x7F, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert!(read_frame(&mut &huge[..]).await.is_err());
    }
}
