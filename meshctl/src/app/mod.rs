//! Built-in test apps, run as container commands inside sandbox pods
//! (`meshctl app http-echo --port 8080`): an HTTP echo server, a TCP echo
//! server, an HTTP load generator and a minimal curl.

pub mod client;
mod command;
pub mod curl;
pub mod echo_reply;
mod error;
pub mod http_echo;
pub mod identity;
mod listen;
pub mod load;
pub mod load_report;
pub mod tcp_echo;

pub use command::{AppCommand, run};
pub use error::AppError;
pub use listen::MAX_CONNECTIONS;
