//! Built-in test apps, run as container commands inside sandbox pods
//! (`meshctl app http-echo --port 8080`): an HTTP echo server, a TCP echo
//! server, an HTTP load generator, a minimal curl, a WebSocket client for the
//! echo server's WebSocket side, a gRPC echo server and its client, and an OTLP trace
//! receiver.

pub mod client;
mod command;
pub mod curl;
pub mod echo_reply;
mod error;
pub mod grpc_client;
pub mod grpc_echo;
pub mod http_echo;
pub mod identity;
mod listen;
pub mod load;
pub mod load_report;
pub mod otlp_receiver;
pub mod tcp_echo;
pub mod websocket;
pub mod ws_client;
pub mod ws_echo;

pub use command::{AppCommand, run};
pub use error::AppError;
pub use listen::MAX_CONNECTIONS;
