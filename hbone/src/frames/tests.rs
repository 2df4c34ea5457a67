use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::wire::encode as frame;
use super::*;

fn preface_and_settings() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    out
}

const LIMITS: FrameLimits = FrameLimits {
    handshake_timeout: Duration::from_secs(10),
    header_block_timeout: Duration::from_secs(5),
    max_header_block_bytes: 64,
};

#[test]
fn the_parser_follows_settings_and_header_blocks_across_any_split() {
    let mut bytes = preface_and_settings();
    bytes.extend(frame(HEADERS, 0, 1, &[0x82; 10]));
    let open = bytes.len();
    bytes.extend(frame(CONTINUATION, 0, 1, &[0x82; 10]));
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82; 3]));
    let closed = bytes.len();
    bytes.extend(frame(HEADERS, END_HEADERS, 3, &[0x82; 4]));
    for chunk in [1, 2, 7, 9, 1000] {
        let mut parser = Parser::default();
        let mut states = Vec::new();
        for piece in bytes.chunks(chunk) {
            parser.feed(piece);
            states.push((parser.settings_seen, parser.in_block));
        }
        assert!(parser.settings_seen && !parser.in_block, "split {chunk}");
        assert_eq!(parser.blocks, 2, "split {chunk}");
        assert_eq!(parser.block_bytes, 0);
        if chunk == 1 {
            assert!(states[open - 1].1, "open after the first HEADERS");
            assert!(states[closed - 2].1, "open until END_HEADERS fully arrived");
            assert!(!states[closed - 1].1, "closed once it has");
        }
    }
}

#[test]
fn the_parser_gives_up_on_what_is_not_http2() {
    let mut parser = Parser::default();
    parser.feed(b"GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(parser.position, Position::Off));
    parser.feed(&frame(HEADERS, 0, 1, &[0; 10]));
    assert!(!parser.in_block);
}

/// A guard on one end of an in-memory pipe, read to the end by a task.
fn guarded(
    limits: FrameLimits,
) -> (
    DuplexStream,
    Tripped,
    tokio::task::JoinHandle<io::Result<Vec<u8>>>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut guard = FrameGuard::new(server, limits);
    let tripped = guard.tripped();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        guard.read_to_end(&mut seen).await.map(|_| seen)
    });
    (client, tripped, reader)
}

#[tokio::test(start_paused = true)]
async fn a_missing_preface_trips_the_handshake_deadline() {
    let (mut client, tripped, reader) = guarded(LIMITS);
    client.write_all(&PREFACE[..10]).await.unwrap();
    let error = reader.await.unwrap().expect_err("the read fails");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(tripped.get(), Some(Limit::Http2HandshakeTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_header_block_left_open_trips_the_header_deadline() {
    let (mut client, tripped, reader) = guarded(LIMITS);
    let mut bytes = preface_and_settings();
    bytes.extend(frame(HEADERS, 0, 1, &[0x82; 8]));
    client.write_all(&bytes).await.unwrap();
    assert!(reader.await.unwrap().is_err());
    assert_eq!(tripped.get(), Some(Limit::HeaderTimeout));
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_left_to_its_stack() {
    let (mut client, tripped, reader) = guarded(LIMITS);
    let mut bytes = preface_and_settings();
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &[0x82; 8]));
    client.write_all(&bytes).await.unwrap();
    // Long past every deadline: nothing is open, so nothing trips.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    client.shutdown().await.unwrap();
    let seen = reader.await.unwrap().expect("a clean end");
    assert_eq!(seen, bytes);
    assert_eq!(tripped.get(), None);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_header_block_trips_before_it_is_buffered() {
    let (mut client, tripped, reader) = guarded(LIMITS);
    let mut bytes = preface_and_settings();
    bytes.extend(frame(HEADERS, 0, 1, &[0x82; 40]));
    // Its header alone announces more than the bound.
    bytes.extend(&frame(CONTINUATION, 0, 1, &[0x82; 40])[..FRAME_HEADER_LEN]);
    client.write_all(&bytes).await.unwrap();
    assert!(reader.await.unwrap().is_err());
    assert_eq!(tripped.get(), Some(Limit::HeaderTooLarge));
}
