//! HTTP/2 settings of HBONE connections, sized for bulk transfer as Istio's ztunnel does.

use std::time::Duration;

/// Per-stream flow-control window: 4 MiB keeps one fast stream from stalling on round trips.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Per-connection flow-control window: 16 MiB, shared by every stream on the connection.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest frame we accept: 1 MiB, so bulk data needs few frame headers.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Streams one connection carries at most; further callers get another connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Bound on a request's or response's header block.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Bound on data buffered per stream waiting for the peer's window.
pub const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Time allowed for TCP connect plus the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies the HBONE settings to an HTTP/2 client builder.
pub(crate) fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        // The server opens no streams towards us.
        .max_concurrent_streams(0)
        .enable_push(false);
    builder
}
