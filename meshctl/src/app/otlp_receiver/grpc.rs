//! Just enough gRPC for one unary method: the 5-byte message framing (a compressed flag and a
//! big-endian length) and responses that end with `grpc-status` trailers.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The response body type of every route of the receiver.
pub type Body = BoxBody<Bytes, Infallible>;

/// The content type of gRPC requests and responses (`+proto` is the same thing).
pub const CONTENT_TYPE_GRPC: &str = "application/grpc";

/// gRPC status codes the receiver answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: the export was accepted.
    Ok = 0,
    /// 3: the message is not an `ExportTraceServiceRequest`, or the framing is wrong.
    InvalidArgument = 3,
    /// 12: another method, or a compressed message.
    Unimplemented = 12,
    /// 14: `--fail-rate` refused the export; exporters retry.
    Unavailable = 14,
}

/// Whether a request's content type is gRPC's.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == CONTENT_TYPE_GRPC || v.starts_with("application/grpc+proto"))
}

/// The one message of a unary request body.
pub fn unframe(body: &[u8]) -> Result<&[u8], (Code, String)> {
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err((
            Code::InvalidArgument,
            format!(
                "a gRPC message needs a 5-byte prefix, got {} bytes",
                body.len()
            ),
        ));
    };
    if header[0] != 0 {
        return Err((
            Code::Unimplemented,
            "compressed messages are not supported (send grpc-encoding identity)".into(),
        ));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if rest.len() != len {
        return Err((
            Code::InvalidArgument,
            format!(
                "a unary request holds exactly one message: prefix says {len} bytes, {} follow",
                rest.len()
            ),
        ));
    }
    Ok(rest)
}

/// A 200 carrying `message` framed, then the trailers `grpc-status: 0`.
pub fn reply(message: &[u8]) -> Response<Body> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    let trailers = status_headers(Code::Ok, "");
    let body = Full::new(framed.freeze())
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    with_grpc_content_type(Response::new(body))
}

/// A "trailers-only" failure: the status travels in the headers of an empty 200.
pub fn failure(code: Code, message: &str) -> Response<Body> {
    let mut response = with_grpc_content_type(Response::new(Empty::new().boxed()));
    response.headers_mut().extend(status_headers(code, message));
    response
}

fn with_grpc_content_type(mut response: Response<Body>) -> Response<Body> {
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_GRPC));
    response
}

fn status_headers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    if !message.is_empty() {
        // grpc-message is percent-encoded; keep printable ASCII, encode the rest.
        let encoded: String = message
            .bytes()
            .map(|b| match b {
                b' '..=b'~' if b != b'%' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframes_exactly_one_uncompressed_message() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 7, 8]), Ok(&[7u8, 8][..]));
        assert_eq!(unframe(&[0, 0, 0, 0, 0]), Ok(&[][..]));
        assert_eq!(unframe(&[0, 0]).unwrap_err().0, Code::InvalidArgument);
        assert_eq!(
            unframe(&[0, 0, 0, 0, 3, 1]).unwrap_err().0,
            Code::InvalidArgument
        );
        assert_eq!(
            unframe(&[1, 0, 0, 0, 1, 1]).unwrap_err().0,
            Code::Unimplemented
        );
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        let headers = status_headers(Code::Unavailable, "50% busy\n");
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(headers["grpc-message"], "50%25 busy%0A");
    }
}
