//! `/tap` on the admin endpoint: a listener's events as newline-delimited JSON, streamed for
//! as long as the connection lasts. Query: `kind` (`request` or `connection`), `method`, `path`
//! (a prefix), `workload`, `service`, `namespace` (of the destination; with `side=source` of
//! the source, with `side=either` of either).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::tap::{Side, Tap, TapFilter, TapStream};

/// What the admin endpoint answers with: a whole body, or a tap's stream.
pub(super) type AdminBody = Either<Full<Bytes>, TapBody>;

/// A tap's events as a response body; ends when the tap goes away.
pub(super) struct TapBody(TapStream);

impl Body for TapBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_line(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The filter a `/tap` query asks for (`%2F` style escapes decoded).
pub(super) fn filter(query: Option<&str>) -> TapFilter {
    let mut filter = TapFilter::default();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = Some(decode(value)).filter(|v| !v.is_empty());
        match key {
            "method" => filter.method = value,
            "path" => filter.path_prefix = value,
            "workload" => filter.workload = value,
            "service" => filter.service = value,
            "namespace" => filter.namespace = value,
            "kind" => filter.kind = value,
            "side" => {
                filter.side = match value.as_deref() {
                    Some("source") => Side::Source,
                    Some("either") => Side::Either,
                    _ => Side::Destination,
                }
            }
            _ => {}
        }
    }
    filter
}

/// Percent-decoding of a query value (`+` stays itself: paths may hold it).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers `/tap`: the stream, or why not (no tap in this proxy, too many listeners).
pub(super) fn respond(tap: Option<&Arc<Tap>>, query: Option<&str>) -> Response<AdminBody> {
    let refuse = |status, text: String| {
        let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
        *response.status_mut() = status;
        response
    };
    let Some(tap) = tap else {
        return refuse(StatusCode::NOT_FOUND, "this proxy has no tap\n".into());
    };
    match tap.listen(filter(query)) {
        Ok(stream) => {
            let mut response = Response::new(Either::Right(TapBody(stream)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_filters() {
        let f = filter(Some(
            "method=GET&path=%2Fapi%2Fv1&workload=orders&namespace=shop&x=1",
        ));
        assert_eq!(f.method.as_deref(), Some("GET"));
        assert_eq!(f.path_prefix.as_deref(), Some("/api/v1"));
        assert_eq!(f.workload.as_deref(), Some("orders"));
        assert_eq!(f.namespace.as_deref(), Some("shop"));
        assert_eq!(f.service, None);
        assert_eq!(f.side, Side::Destination);
        let f = filter(Some("kind=connection&workload=orders&side=either"));
        assert_eq!(f.kind.as_deref(), Some("connection"));
        assert_eq!(f.side, Side::Either);
        assert_eq!(filter(Some("side=source")).side, Side::Source);
        assert_eq!(filter(None), TapFilter::default());
        assert_eq!(decode("a%zz%2"), "a%zz%2");
    }
}
