//! String, path, header and query conditions, compiled once per config and evaluated per
//! request without allocating in the common cases.

use api::waypoint::{self as pb, path_match, string_match};
use http::HeaderMap;
use regex::Regex;

use super::compile::ConfigError;

/// Largest compiled program a config regex may produce: config comes from users' objects, and
/// a pathological pattern must not take the proxy's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` so that it must match a whole value (RE2 full-match semantics, as Envoy
/// applies `safe_regex`).
pub(crate) fn full_regex(pattern: &str, field: &str) -> Result<Regex, ConfigError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ConfigError(format!("{field}: invalid regex {pattern:?}: {e}")))
}

/// Compiles `pattern` for search-and-replace (no anchors).
pub(crate) fn search_regex(pattern: &str, field: &str) -> Result<Regex, ConfigError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ConfigError(format!("{field}: invalid regex {pattern:?}: {e}")))
}

/// A compiled [`pb::StringMatch`].
#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    /// Equal.
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Whole-value regex.
    Regex(Regex),
    /// Any value.
    Present,
}

impl StringMatcher {
    /// Compiles a string condition; a condition without a kind is refused.
    pub(crate) fn compile(m: &pb::StringMatch, field: &str) -> Result<Self, ConfigError> {
        let ic = m.ignore_case;
        Ok(match &m.kind {
            Some(string_match::Kind::Exact(s)) => StringMatcher::Exact(s.clone(), ic),
            Some(string_match::Kind::Prefix(s)) => StringMatcher::Prefix(s.clone(), ic),
            Some(string_match::Kind::Suffix(s)) => StringMatcher::Suffix(s.clone(), ic),
            Some(string_match::Kind::Regex(r)) => StringMatcher::Regex(full_regex(r, field)?),
            Some(string_match::Kind::Present(())) => StringMatcher::Present,
            None => return Err(ConfigError(format!("{field}: string match without a kind"))),
        })
    }

    /// Compiles a list of conditions.
    pub(crate) fn compile_all(
        ms: &[pb::StringMatch],
        field: &str,
    ) -> Result<Vec<Self>, ConfigError> {
        ms.iter()
            .enumerate()
            .map(|(i, m)| Self::compile(m, &format!("{field}[{i}]")))
            .collect()
    }

    /// Whether `value` satisfies the condition.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(p, false) => value == p,
            StringMatcher::Exact(p, true) => value.eq_ignore_ascii_case(p),
            StringMatcher::Prefix(p, false) => value.starts_with(p.as_str()),
            StringMatcher::Prefix(p, true) => starts_with_ci(value, p),
            StringMatcher::Suffix(p, false) => value.ends_with(p.as_str()),
            StringMatcher::Suffix(p, true) => {
                value.len() >= p.len()
                    && value.as_bytes()[value.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
            }
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }
}

fn starts_with_ci(value: &str, prefix: &str) -> bool {
    value.len() >= prefix.len()
        && value.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A compiled [`pb::PathMatch`].
#[derive(Debug, Clone)]
pub(crate) enum PathMatcher {
    /// Equal.
    Exact(String, bool),
    /// Starts with (Istio semantics).
    Prefix(String, bool),
    /// Starts with whole segments (Gateway API semantics); stored without trailing slashes.
    Segments(String, bool),
    /// Whole-path regex.
    Regex(Regex),
}

impl PathMatcher {
    /// Compiles a path condition.
    pub(crate) fn compile(m: &pb::PathMatch, field: &str) -> Result<Self, ConfigError> {
        let ic = m.ignore_case;
        Ok(match &m.kind {
            Some(path_match::Kind::Exact(s)) => PathMatcher::Exact(s.clone(), ic),
            Some(path_match::Kind::Prefix(s)) => PathMatcher::Prefix(s.clone(), ic),
            Some(path_match::Kind::SegmentPrefix(s)) => {
                // "/foo/" and "/foo" select the same segments.
                PathMatcher::Segments(s.trim_end_matches('/').to_string(), ic)
            }
            Some(path_match::Kind::Regex(r)) => PathMatcher::Regex(full_regex(r, field)?),
            None => return Err(ConfigError(format!("{field}: path match without a kind"))),
        })
    }

    /// Whether `path` (without query) satisfies the condition.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(p, false) => path == p,
            PathMatcher::Exact(p, true) => path.eq_ignore_ascii_case(p),
            PathMatcher::Prefix(p, false) => path.starts_with(p.as_str()),
            PathMatcher::Prefix(p, true) => starts_with_ci(path, p),
            PathMatcher::Segments(p, ic) => {
                let head = if *ic {
                    starts_with_ci(path, p)
                } else {
                    path.starts_with(p.as_str())
                };
                head && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/' || p.is_empty())
            }
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }

    /// The prefix a prefix rewrite replaces, for prefix-like conditions.
    pub(crate) fn rewrite_prefix(&self) -> Option<&str> {
        match self {
            PathMatcher::Prefix(p, _) | PathMatcher::Segments(p, _) => Some(p),
            _ => None,
        }
    }
}

/// What route matching looks at in a request.
pub(crate) struct RequestView<'a> {
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Authority (Host), with port if sent.
    pub authority: &'a str,
    /// Scheme ("http").
    pub scheme: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Service port the request arrived on.
    pub port: u16,
    /// Namespace of the caller's identity.
    pub source_namespace: Option<&'a str>,
}

impl RequestView<'_> {
    /// The value of header `name` (pseudo-headers included); several values are joined with
    /// "," as Envoy does before matching.
    pub(crate) fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match name {
            ":authority" | "host" => return Some(Cow::Borrowed(self.authority)),
            ":method" => return Some(Cow::Borrowed(self.method)),
            ":scheme" => return Some(Cow::Borrowed(self.scheme)),
            ":path" => {
                return Some(match self.query {
                    Some(q) => Cow::Owned(format!("{}?{q}", self.path)),
                    None => Cow::Borrowed(self.path),
                });
            }
            _ => {}
        }
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let first = first.to_str().ok()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = String::from(first);
                for v in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(v.to_str().unwrap_or(""));
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// The value of query parameter `name` (raw, first occurrence).
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// A compiled header condition.
#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    name: String,
    value: StringMatcher,
    invert: bool,
}

impl HeaderMatcher {
    fn compile(m: &pb::HeaderMatch, field: &str) -> Result<Self, ConfigError> {
        if m.name.is_empty() {
            return Err(ConfigError(format!("{field}.name: empty")));
        }
        let value = match &m.value {
            Some(v) => StringMatcher::compile(v, &format!("{field}.value"))?,
            None => StringMatcher::Present,
        };
        Ok(Self {
            name: m.name.to_ascii_lowercase(),
            value,
            invert: m.invert,
        })
    }

    fn matches(&self, req: &RequestView<'_>) -> bool {
        let hit = req
            .header(&self.name)
            .is_some_and(|v| self.value.matches(&v));
        hit != self.invert
    }
}

/// A compiled [`pb::RouteMatch`].
#[derive(Debug, Clone)]
pub(crate) struct RouteMatcher {
    path: Option<PathMatcher>,
    method: Option<StringMatcher>,
    headers: Vec<HeaderMatcher>,
    query: Vec<(String, StringMatcher)>,
    not_paths: Vec<PathMatcher>,
    not_methods: Vec<StringMatcher>,
    port: u16,
    source_namespace: Option<String>,
}

impl RouteMatcher {
    /// Compiles one match of a route.
    pub(crate) fn compile(m: &pb::RouteMatch, field: &str) -> Result<Self, ConfigError> {
        let port = u16::try_from(m.port)
            .map_err(|_| ConfigError(format!("{field}.port: {} out of range", m.port)))?;
        Ok(Self {
            path: m
                .path
                .as_ref()
                .map(|p| PathMatcher::compile(p, &format!("{field}.path")))
                .transpose()?,
            method: m
                .method
                .as_ref()
                .map(|p| StringMatcher::compile(p, &format!("{field}.method")))
                .transpose()?,
            headers: m
                .headers
                .iter()
                .enumerate()
                .map(|(i, h)| HeaderMatcher::compile(h, &format!("{field}.headers[{i}]")))
                .collect::<Result<_, _>>()?,
            query: m
                .query_params
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let value = match &q.value {
                        Some(v) => {
                            StringMatcher::compile(v, &format!("{field}.query_params[{i}]"))?
                        }
                        None => StringMatcher::Present,
                    };
                    Ok((q.name.clone(), value))
                })
                .collect::<Result<_, ConfigError>>()?,
            not_paths: m
                .not_paths
                .iter()
                .enumerate()
                .map(|(i, p)| PathMatcher::compile(p, &format!("{field}.not_paths[{i}]")))
                .collect::<Result<_, _>>()?,
            not_methods: StringMatcher::compile_all(
                &m.not_methods,
                &format!("{field}.not_methods"),
            )?,
            port,
            source_namespace: (!m.source_namespace.is_empty()).then(|| m.source_namespace.clone()),
        })
    }

    /// Whether the request satisfies every set condition.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        if self.port != 0 && self.port != req.port {
            return false;
        }
        if let Some(ns) = &self.source_namespace
            && req.source_namespace != Some(ns.as_str())
        {
            return false;
        }
        if let Some(m) = &self.method
            && !m.matches(req.method)
        {
            return false;
        }
        if self.not_methods.iter().any(|m| m.matches(req.method)) {
            return false;
        }
        if let Some(p) = &self.path
            && !p.matches(req.path)
        {
            return false;
        }
        if self.not_paths.iter().any(|p| p.matches(req.path)) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(req)) {
            return false;
        }
        self.query
            .iter()
            .all(|(name, value)| req.query_param(name).is_some_and(|v| value.matches(v)))
    }

    /// The prefix a prefix rewrite replaces when this match selected the request: its prefix
    /// path condition, else "/".
    pub(crate) fn rewrite_prefix(&self) -> &str {
        self.path
            .as_ref()
            .and_then(PathMatcher::rewrite_prefix)
            .unwrap_or("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(kind: string_match::Kind, ignore_case: bool) -> StringMatcher {
        StringMatcher::compile(
            &pb::StringMatch {
                kind: Some(kind),
                ignore_case,
            },
            "t",
        )
        .unwrap()
    }

    #[test]
    fn string_forms() {
        assert!(sm(string_match::Kind::Exact("GET".into()), false).matches("GET"));
        assert!(!sm(string_match::Kind::Exact("GET".into()), false).matches("get"));
        assert!(sm(string_match::Kind::Exact("GET".into()), true).matches("get"));
        assert!(sm(string_match::Kind::Prefix("/api".into()), false).matches("/api/x"));
        assert!(sm(string_match::Kind::Prefix("/API".into()), true).matches("/api/x"));
        assert!(sm(string_match::Kind::Suffix(".js".into()), false).matches("/a.js"));
        assert!(sm(string_match::Kind::Suffix(".JS".into()), true).matches("/a.js"));
        assert!(!sm(string_match::Kind::Suffix("long.js".into()), true).matches(".js"));
        // Regexes must match the whole value.
        let r = sm(string_match::Kind::Regex("v[0-9]".into()), false);
        assert!(r.matches("v1"));
        assert!(!r.matches("xv1"));
        assert!(sm(string_match::Kind::Present(()), false).matches(""));
    }

    #[test]
    fn invalid_regex_is_refused() {
        let err = StringMatcher::compile(
            &pb::StringMatch {
                kind: Some(string_match::Kind::Regex("(".into())),
                ignore_case: false,
            },
            "routes[0]",
        )
        .unwrap_err();
        assert!(err.0.contains("routes[0]"));
    }

    #[test]
    fn segment_prefix() {
        let p = PathMatcher::compile(
            &pb::PathMatch {
                kind: Some(path_match::Kind::SegmentPrefix("/foo/".into())),
                ignore_case: false,
            },
            "t",
        )
        .unwrap();
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        let root = PathMatcher::compile(
            &pb::PathMatch {
                kind: Some(path_match::Kind::SegmentPrefix("/".into())),
                ignore_case: false,
            },
            "t",
        )
        .unwrap();
        assert!(root.matches("/anything"));
    }

    #[test]
    fn route_match_headers_query_and_negations() {
        let m = RouteMatcher::compile(
            &pb::RouteMatch {
                headers: vec![
                    pb::HeaderMatch {
                        name: "x-beta-user".into(),
                        value: Some(pb::StringMatch {
                            kind: Some(string_match::Kind::Exact("true".into())),
                            ignore_case: false,
                        }),
                        invert: false,
                    },
                    pb::HeaderMatch {
                        name: "x-block".into(),
                        value: None,
                        invert: true,
                    },
                ],
                query_params: vec![pb::QueryParamMatch {
                    name: "v".into(),
                    value: None,
                }],
                not_methods: vec![pb::StringMatch {
                    kind: Some(string_match::Kind::Exact("DELETE".into())),
                    ignore_case: false,
                }],
                ..Default::default()
            },
            "m",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-beta-user", "true".parse().unwrap());
        let view = |h: &'_ HeaderMap, method: &'static str, query: Option<&'static str>| {
            let v = RequestView {
                method,
                path: "/",
                query,
                authority: "svc",
                scheme: "http",
                headers: h,
                port: 80,
                source_namespace: None,
            };
            m.matches(&v)
        };
        assert!(view(&headers, "GET", Some("a=1&v=2")));
        assert!(!view(&headers, "GET", Some("a=1")));
        assert!(!view(&headers, "DELETE", Some("v")));
        let mut blocked = headers.clone();
        blocked.insert("x-block", "1".parse().unwrap());
        assert!(!view(&blocked, "GET", Some("v")));
        assert!(!view(&HeaderMap::new(), "GET", Some("v")));
    }
}
