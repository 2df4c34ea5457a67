//! Request and response header edits, URL rewrites and redirects, and the request identity
//! header a proxy maintains (`x-request-id`), and the trace context a request arrives with.

use std::fmt::Write as _;

use api::waypoint::{self as pb, redirect, url_rewrite};
use http::header::{HOST, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use regex::Regex;

use super::compile::ConfigError;
use super::matching::search_regex;
use super::telemetry::TraceId;
use super::trace::{Continued, Incoming, hex_into, random_id};

/// `x-request-id`, generated when the client sent none.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError(format!("{field}: invalid header name {name:?}")))
}

fn header_value(value: &str, field: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value)
        .map_err(|_| ConfigError(format!("{field}: invalid header value {value:?}")))
}

/// A compiled [`pb::HeaderModifier`]: remove, then set, then add.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderMods {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderMods {
    /// Compiles an optional modifier (unset: no edits).
    pub(crate) fn compile(
        m: Option<&pb::HeaderModifier>,
        field: &str,
    ) -> Result<Self, ConfigError> {
        let Some(m) = m else {
            return Ok(Self::default());
        };
        let pairs = |hs: &[pb::Header], f: &str| -> Result<Vec<_>, ConfigError> {
            hs.iter()
                .enumerate()
                .map(|(i, h)| {
                    let at = format!("{field}.{f}[{i}]");
                    Ok((header_name(&h.name, &at)?, header_value(&h.value, &at)?))
                })
                .collect()
        };
        Ok(Self {
            set: pairs(&m.set, "set")?,
            add: pairs(&m.add, "add")?,
            remove: m
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| header_name(n, &format!("{field}.remove[{i}]")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the edits.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// How a forwarded path changes.
#[derive(Debug, Clone)]
enum PathRewrite {
    Full(String),
    Prefix(String),
    Regex(Regex, String),
}

/// A compiled [`pb::UrlRewrite`].
#[derive(Debug, Clone)]
pub(crate) struct Rewrite {
    path: Option<PathRewrite>,
    host: Option<HeaderValue>,
}

impl Rewrite {
    /// Compiles a rewrite.
    pub(crate) fn compile(r: &pb::UrlRewrite, field: &str) -> Result<Self, ConfigError> {
        let path = match &r.path {
            None => None,
            Some(url_rewrite::Path::FullPath(p)) => Some(PathRewrite::Full(p.clone())),
            Some(url_rewrite::Path::Prefix(p)) => Some(PathRewrite::Prefix(p.clone())),
            Some(url_rewrite::Path::Regex(re)) => Some(PathRewrite::Regex(
                search_regex(&re.pattern, &format!("{field}.regex"))?,
                substitution(&re.substitution),
            )),
        };
        let host = (!r.host.is_empty())
            .then(|| header_value(&r.host, &format!("{field}.host")))
            .transpose()?;
        Ok(Self { path, host })
    }

    /// Rewrites the request's path and authority; `matched_prefix` is what the route's path
    /// condition matched (for prefix rewrites).
    pub(crate) fn apply(&self, parts: &mut http::request::Parts, matched_prefix: &str) {
        if let Some(rewrite) = &self.path {
            let path = parts.uri.path();
            let new_path = match rewrite {
                PathRewrite::Full(p) => p.clone(),
                PathRewrite::Prefix(p) => replace_prefix(path, matched_prefix, p),
                PathRewrite::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
            };
            set_path(&mut parts.uri, &new_path);
        }
        if let Some(host) = &self.host {
            set_authority(parts, host);
        }
    }
}

/// Converts Envoy-style `\1` group references to the regex crate's `${1}` and escapes `$`.
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces `prefix` at the start of `path` by `replacement`, without doubling or losing the
/// slash between them (Gateway API `ReplacePrefixMatch`).
fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = if path.len() >= prefix.len() && path.is_char_boundary(prefix.len()) {
        &path[prefix.len()..]
    } else {
        path
    };
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    // A prefix that ended mid-segment (Istio's plain prefix form) keeps its remainder attached,
    // as Envoy does; only a doubled slash at the seam is collapsed.
    match rest.strip_prefix('/') {
        Some(tail) if out.ends_with('/') => out.push_str(tail),
        _ => out.push_str(rest),
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether the request is gRPC (by content type, as Envoy decides).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Replaces the path of `uri`, keeping its query.
pub(crate) fn set_path(uri: &mut Uri, path: &str) {
    let mut pq = String::with_capacity(path.len() + 16);
    if !path.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(path);
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
}

/// The request's authority: the URI's (HTTP/2, absolute form), else the Host header.
pub(crate) fn authority(parts: &http::request::Parts) -> &str {
    if let Some(a) = parts.uri.authority() {
        return a.as_str();
    }
    parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// Sets the authority in the URI (when it has one) and the Host header (when present, or when
/// the URI has none).
pub(crate) fn set_authority(parts: &mut http::request::Parts, host: &HeaderValue) {
    if parts.uri.authority().is_some()
        && let Ok(auth) = http::uri::Authority::try_from(host.as_bytes())
    {
        let mut up = std::mem::take(&mut parts.uri).into_parts();
        up.authority = Some(auth);
        if let Ok(new) = Uri::from_parts(up) {
            parts.uri = new;
        }
    }
    if parts.headers.contains_key(HOST) || parts.uri.authority().is_none() {
        parts.headers.insert(HOST, host.clone());
    }
}

/// `host` without its port (`[v6]:p` and `name:p` forms).
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The port of an authority, if it names one.
fn authority_port(authority: &str) -> Option<&str> {
    let host = strip_port(authority);
    authority
        .get(host.len()..)
        .and_then(|r| r.strip_prefix(':'))
        .filter(|p| !p.is_empty())
}

/// The authority of a mirrored copy: `-shadow` appended to the host, before any port, as
/// Envoy names shadow traffic.
pub(crate) fn shadow_authority(authority: &str) -> String {
    let host = strip_port(authority);
    let rest = &authority[host.len()..];
    format!("{host}-shadow{rest}")
}

/// A compiled [`pb::Redirect`].
#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    port: u16,
    path: Option<PathRewrite>,
    status: StatusCode,
}

impl Redirect {
    /// Compiles a redirect; the status must be a redirect status (0 means 302).
    pub(crate) fn compile(r: &pb::Redirect, field: &str) -> Result<Self, ConfigError> {
        let status = match r.status {
            0 => StatusCode::FOUND,
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(r.status as u16)
                .map_err(|_| ConfigError(format!("{field}.status: {}", r.status)))?,
            other => {
                return Err(ConfigError(format!(
                    "{field}.status: {other} is not a redirect status"
                )));
            }
        };
        let port = u16::try_from(r.port)
            .map_err(|_| ConfigError(format!("{field}.port: {} out of range", r.port)))?;
        Ok(Self {
            scheme: (!r.scheme.is_empty()).then(|| r.scheme.to_ascii_lowercase()),
            host: (!r.host.is_empty()).then(|| r.host.clone()),
            port,
            path: match &r.path {
                None => None,
                Some(redirect::Path::FullPath(p)) => Some(PathRewrite::Full(p.clone())),
                Some(redirect::Path::Prefix(p)) => Some(PathRewrite::Prefix(p.clone())),
            },
            status,
        })
    }

    /// The status and `Location` of the answer to a request.
    pub(crate) fn location(
        &self,
        parts: &http::request::Parts,
        matched_prefix: &str,
    ) -> (StatusCode, String) {
        let req_authority = authority(parts);
        let req_scheme = parts.uri.scheme_str().unwrap_or("http");
        let scheme = self.scheme.as_deref().unwrap_or(req_scheme);
        let host = self
            .host
            .as_deref()
            .unwrap_or_else(|| strip_port(req_authority));
        let port = if self.port != 0 {
            Some(self.port.to_string())
        } else if self.scheme.is_some() {
            // A scheme change moves to the scheme's default port.
            None
        } else {
            authority_port(req_authority).map(str::to_string)
        };
        let port =
            port.filter(|p| !matches!((scheme, p.as_str()), ("http", "80") | ("https", "443")));
        let path = parts.uri.path();
        let new_path = match &self.path {
            None => path.to_string(),
            Some(PathRewrite::Full(p)) => p.clone(),
            Some(PathRewrite::Prefix(p)) => replace_prefix(path, matched_prefix, p),
            Some(PathRewrite::Regex(re, sub)) => re.replace_all(path, sub.as_str()).into_owned(),
        };
        let mut location = format!("{scheme}://{host}");
        if let Some(p) = port {
            let _ = write!(location, ":{p}");
        }
        location.push_str(&new_path);
        if let Some(q) = parts.uri.query() {
            location.push('?');
            location.push_str(q);
        }
        (self.status, location)
    }
}

/// The response headers of a redirect.
pub(crate) fn redirect_headers(location: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h
}

/// A random version-4 UUID in its text form, as Envoy generates for `x-request-id`.
pub(crate) fn uuid_v4() -> [u8; 36] {
    let mut b: [u8; 16] = random_id();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    // 8-4-4-4-12 hex digits.
    for (from, to, at) in [(0, 4, 0), (4, 6, 9), (6, 8, 14), (8, 10, 19), (10, 16, 24)] {
        hex_into(&mut out[at..at + 2 * (to - from)], &b[from..to]);
    }
    out
}

/// Gives `headers` the `x-request-id` the engine gives every request it handles, and the
/// trace context a traced service sends upstream (the one they carry, continued, or a new
/// sampled one); returns that context's trace id.
///
/// Public only so the header parsing can be fuzzed; requests get this inside
/// `Engine::handle`.
#[doc(hidden)]
pub fn identify_request(headers: &mut HeaderMap) -> String {
    let (_, incoming, _) = identify(headers);
    let continued = Continued::from(&incoming, 100.0);
    continued.write(headers, random_id());
    trace_id_of(Some(continued.trace_id)).as_str().to_owned()
}

/// Ensures the request carries an `x-request-id`, and reads the trace context it carries
/// (W3C or B3; written on only for a traced service). Returns the request id, the context
/// and its trace id for the log.
pub(crate) fn identify(headers: &mut HeaderMap) -> (Option<HeaderValue>, Incoming, TraceId) {
    let request_id = match headers.get(&REQUEST_ID) {
        Some(id) if !id.is_empty() && id.to_str().is_ok() => Some(id.clone()),
        _ => HeaderValue::from_bytes(&uuid_v4()).ok().inspect(|v| {
            headers.insert(REQUEST_ID, v.clone());
        }),
    };
    let incoming = Incoming::read(headers);
    let trace_id = trace_id_of(incoming.trace_id);
    (request_id, incoming, trace_id)
}

/// The log's spelling of a trace id.
pub(crate) fn trace_id_of(id: Option<[u8; 16]>) -> TraceId {
    id.map_or_else(TraceId::default, |id| {
        let mut hex = [0u8; 32];
        hex_into(&mut hex, &id);
        TraceId::from_hex(&hex)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn modifiers_remove_set_add() {
        let m = HeaderMods::compile(
            Some(&pb::HeaderModifier {
                set: vec![pb::Header {
                    name: "X-Env".into(),
                    value: "prod".into(),
                }],
                add: vec![pb::Header {
                    name: "x-tag".into(),
                    value: "b".into(),
                }],
                remove: vec!["x-secret".into()],
            }),
            "h",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-env", "dev".parse().unwrap());
        h.insert("x-tag", "a".parse().unwrap());
        h.insert("x-secret", "s".parse().unwrap());
        m.apply(&mut h);
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h.get_all("x-tag").iter().count(), 2);
        assert!(!h.contains_key("x-secret"));
        assert!(
            HeaderMods::compile(
                Some(&pb::HeaderModifier {
                    set: vec![pb::Header {
                        name: "bad name".into(),
                        value: "x".into()
                    }],
                    ..Default::default()
                }),
                "h"
            )
            .is_err()
        );
    }

    #[test]
    fn prefix_rewrites() {
        assert_eq!(replace_prefix("/foo/bar", "/foo", "/bar"), "/bar/bar");
        assert_eq!(replace_prefix("/foo/bar", "/foo", "/"), "/bar");
        assert_eq!(replace_prefix("/foo", "/foo", "/"), "/");
        assert_eq!(replace_prefix("/foo", "/foo", ""), "/");
        assert_eq!(replace_prefix("/v1/items", "/", "/api/"), "/api/v1/items");
    }

    #[test]
    fn rewrite_path_keeps_query_and_sets_host() {
        let rw = Rewrite::compile(
            &pb::UrlRewrite {
                host: "new.example".into(),
                path: Some(url_rewrite::Path::Regex(pb::RegexRewrite {
                    pattern: "^/service/([^/]+)(/.*)$".into(),
                    substitution: "\\2/instance/\\1".into(),
                })),
            },
            "r",
        )
        .unwrap();
        let mut p = parts("/service/foo/v1/api?x=1", Some("old"));
        rw.apply(&mut p, "/");
        assert_eq!(p.uri.path(), "/v1/api/instance/foo");
        assert_eq!(p.uri.query(), Some("x=1"));
        assert_eq!(p.headers[HOST], "new.example");
    }

    #[test]
    fn redirect_location() {
        let r = Redirect::compile(
            &pb::Redirect {
                scheme: "https".into(),
                status: 301,
                path: Some(redirect::Path::Prefix("/new".into())),
                ..Default::default()
            },
            "r",
        )
        .unwrap();
        let p = parts("/old/page?q=1", Some("shop.example:8080"));
        let (status, loc) = r.location(&p, "/old");
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(loc, "https://shop.example/new/page?q=1");
        let keep = Redirect::compile(&pb::Redirect::default(), "r").unwrap();
        let (status, loc) = keep.location(&p, "/");
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(loc, "http://shop.example:8080/old/page?q=1");
        assert!(
            Redirect::compile(
                &pb::Redirect {
                    status: 200,
                    ..Default::default()
                },
                "r"
            )
            .is_err()
        );
    }

    #[test]
    fn shadow_host() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(shadow_authority("[fd00::1]:80"), "[fd00::1]-shadow:80");
    }

    #[test]
    fn request_ids_are_given_and_trace_contexts_read_not_written() {
        let mut h = HeaderMap::new();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        h.insert("traceparent", tp.parse().unwrap());
        let (id, incoming, trace) = identify(&mut h);
        assert_eq!(trace.as_str(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(incoming.sampled, Some(true));
        // Only a traced service continues the context.
        assert_eq!(h["traceparent"], tp);
        let id = id.unwrap();
        assert_eq!(h[&REQUEST_ID], id);
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(id.split('-').map(str::len).eq([8, 4, 4, 4, 12]), "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");

        let mut fresh = HeaderMap::new();
        fresh.insert(REQUEST_ID, "given".parse().unwrap());
        fresh.insert("traceparent", "garbage".parse().unwrap());
        let (id, incoming, trace) = identify(&mut fresh);
        assert_eq!(id.unwrap(), "given");
        assert_eq!(trace.as_str(), "");
        assert_eq!(incoming, Incoming::default());
    }
}
