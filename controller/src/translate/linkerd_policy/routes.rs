//! Linkerd's inbound routes: HTTPRoutes (`policy.linkerd.io`, or the Gateway API's) whose
//! parent is a Server. Each match becomes the request conditions a waypoint authorization
//! rule tests (paths, method, headers), and their negation, for the requests no route of a
//! Server matches (answered 404, as Linkerd's proxy does).
//!
//! A part an authorization rule cannot test (query parameters, hostnames) is left out of the
//! match, which then covers more requests; the route then admits nobody (fail closed), and a
//! warning says so.

use std::collections::BTreeMap;

use api::waypoint::{Condition, ConditionKey, Operation, StringMatch, string_match::Kind};
use serde_json::Value;

use super::decode::Invalid;
use crate::model::linkerd::LINKERD_POLICY_GROUP;
use crate::model::routes::{HttpHeaderMatch, HttpRoute, HttpRouteMatch, decode};

/// One request condition of a match, testable on its own and negatable.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Part {
    /// The path matches one of these.
    Paths(Vec<StringMatch>),
    /// The method is this one.
    Method(StringMatch),
    /// The header holds one of these values (`None`: is present).
    Header(String, Option<StringMatch>),
}

/// A route's match: every part must hold (no parts: every request).
pub(super) type MatchDef = Vec<Part>;

/// A validated inbound route.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RouteDef {
    /// Its name.
    pub name: String,
    /// The Servers (of its namespace) it attaches to.
    pub servers: Vec<String>,
    /// Its matches, any of which selects a request.
    pub matches: Vec<MatchDef>,
    /// Whether it admits nobody: parts of it could not be tested (fail closed).
    pub admits_nobody: bool,
}

fn string(kind: Kind) -> StringMatch {
    StringMatch {
        kind: Some(kind),
        ignore_case: false,
    }
}

/// The match of every request (a rule without matches): every path.
pub(super) fn every_request() -> MatchDef {
    vec![Part::Paths(vec![string(Kind::Prefix("/".to_owned()))])]
}

/// The Gateway API path match as authorization strings: a prefix matches whole segments.
fn path(m: &HttpRouteMatch, field: &str) -> Result<Vec<StringMatch>, Invalid> {
    let (kind, value) = match &m.path {
        Some(p) => (
            p.type_.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    if kind != "RegularExpression" && !value.starts_with('/') {
        return Err((
            format!("{field}.path.value"),
            format!("{value:?} is not an absolute path"),
        ));
    }
    Ok(match kind {
        "Exact" => vec![string(Kind::Exact(value.to_owned()))],
        "PathPrefix" => match value.trim_end_matches('/') {
            "" => vec![string(Kind::Prefix("/".to_owned()))],
            t => vec![
                string(Kind::Exact(t.to_owned())),
                string(Kind::Prefix(format!("{t}/"))),
            ],
        },
        "RegularExpression" => {
            regex::Regex::new(value).map_err(|e| (format!("{field}.path.value"), e.to_string()))?;
            vec![string(Kind::Regex(value.to_owned()))]
        }
        other => {
            return Err((
                format!("{field}.path.type"),
                format!("unknown path match type {other:?} (Exact, PathPrefix, RegularExpression)"),
            ));
        }
    })
}

fn header(h: &HttpHeaderMatch, field: &str) -> Result<Part, Invalid> {
    if h.name.is_empty() {
        return Err((format!("{field}.name"), "missing".to_owned()));
    }
    let value = match h.type_.as_deref().unwrap_or("Exact") {
        "Exact" => string(Kind::Exact(h.value.clone())),
        "RegularExpression" => {
            regex::Regex::new(&h.value).map_err(|e| (format!("{field}.value"), e.to_string()))?;
            string(Kind::Regex(h.value.clone()))
        }
        other => {
            return Err((
                format!("{field}.type"),
                format!("unknown header match type {other:?} (Exact, RegularExpression)"),
            ));
        }
    };
    Ok(Part::Header(h.name.to_ascii_lowercase(), Some(value)))
}

/// One match, and whether it had parts left out.
fn one_match(m: &HttpRouteMatch, field: &str) -> Result<(MatchDef, bool), Invalid> {
    let mut parts = vec![Part::Paths(path(m, field)?)];
    if let Some(method) = &m.method {
        parts.push(Part::Method(string(Kind::Exact(
            method.to_ascii_uppercase(),
        ))));
    }
    for (i, h) in m.headers.iter().enumerate() {
        parts.push(header(h, &format!("{field}.headers[{i}]"))?);
    }
    Ok((parts, !m.query_params.is_empty()))
}

/// The Servers of `namespace` a route attaches to (parents of other kinds are not inbound).
fn servers(route: &HttpRoute, namespace: &str) -> Vec<String> {
    route
        .spec
        .parent_refs
        .iter()
        .filter(|p| {
            p.kind.as_deref() == Some("Server")
                && p.group.as_deref() == Some(LINKERD_POLICY_GROUP)
                && p.namespace.as_deref().is_none_or(|n| n == namespace)
        })
        .map(|p| p.name.clone())
        .collect()
}

/// An HTTPRoute as an inbound route: `Ok(None)` when no Server is its parent; warnings about
/// parts left out.
pub(super) fn route(
    namespace: &str,
    name: &str,
    value: &Value,
) -> Result<Option<(RouteDef, Vec<Invalid>)>, Invalid> {
    let parsed: HttpRoute = decode(value).map_err(|e| (e.field, e.message))?;
    let servers = servers(&parsed, namespace);
    if servers.is_empty() {
        return Ok(None);
    }
    let mut warnings = Vec::new();
    let mut left_out = !parsed.spec.hostnames.is_empty();
    if left_out {
        warnings.push(("spec.hostnames".to_owned(), left_out_warning("hostnames")));
    }
    let mut matches = Vec::new();
    for (i, rule) in parsed.spec.rules.iter().enumerate() {
        let unapplied = [
            ("filters", !rule.filters.is_empty()),
            ("backendRefs", !rule.backend_refs.is_empty()),
            ("timeouts", rule.timeouts.is_some()),
            ("retry", rule.retry.is_some()),
        ];
        for (what, set) in unapplied {
            if set {
                warnings.push((
                    format!("spec.rules[{i}].{what}"),
                    format!(
                        "warning: {what} of a route whose parent is a Server are not applied: \
                         the mesh enforces its authorization only"
                    ),
                ));
            }
        }
        if rule.matches.is_empty() {
            matches.push(every_request());
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let field = format!("spec.rules[{i}].matches[{j}]");
            let (m, query) = one_match(m, &field)?;
            if query {
                warnings.push((
                    format!("{field}.queryParams"),
                    left_out_warning("queryParams"),
                ));
            }
            left_out |= query;
            matches.push(m);
        }
    }
    Ok(Some((
        RouteDef {
            name: name.to_owned(),
            servers,
            matches,
            admits_nobody: left_out,
        },
        warnings,
    )))
}

fn left_out_warning(what: &str) -> String {
    format!(
        "warning: {what} are not tested by the waypoint's authorization: the route matches \
         without them and admits no client (fail closed)"
    )
}

/// The request conditions of `parts`: the operation (paths, method) and header conditions.
pub(super) fn positive(parts: &MatchDef) -> (Operation, Vec<Condition>) {
    let mut op = Operation::default();
    let mut when = Vec::new();
    for p in parts {
        match p {
            Part::Paths(paths) => op.paths.extend(paths.iter().cloned()),
            Part::Method(m) => op.methods.push(m.clone()),
            Part::Header(name, value) => when.push(Condition {
                key: ConditionKey::RequestHeader as i32,
                header: name.clone(),
                values: vec![value.clone().unwrap_or_else(|| string(Kind::Present(())))],
                ..Condition::default()
            }),
        }
    }
    (op, when)
}

/// Adds the negation of `part` to a rule's operation and conditions.
pub(super) fn negate_into(part: &Part, op: &mut Operation, when: &mut Vec<Condition>) {
    match part {
        Part::Paths(paths) => op.not_paths.extend(paths.iter().cloned()),
        Part::Method(m) => op.not_methods.push(m.clone()),
        // An absent header satisfies the negation, as it fails the match.
        Part::Header(name, value) => when.push(Condition {
            key: ConditionKey::RequestHeader as i32,
            header: name.clone(),
            not_values: vec![value.clone().unwrap_or_else(|| string(Kind::Present(())))],
            ..Condition::default()
        }),
    }
}

/// Routes by namespace.
pub(super) type Routes = BTreeMap<String, Vec<RouteDef>>;

/// A match's path, as precedence and overlap read it.
enum PathKind<'a> {
    Exact(&'a str),
    /// Whole segments under this path (`/`: every path).
    Prefix(&'a str),
    /// A regular expression, or no path condition.
    Other,
}

fn path_kind(m: &MatchDef) -> PathKind<'_> {
    let paths = m.iter().find_map(|p| match p {
        Part::Paths(paths) => Some(paths.as_slice()),
        _ => None,
    });
    fn kind(s: &StringMatch) -> Option<&Kind> {
        s.kind.as_ref()
    }
    match paths.unwrap_or_default() {
        [one] => match kind(one) {
            Some(Kind::Exact(e)) => PathKind::Exact(e),
            Some(Kind::Prefix(p)) if p == "/" => PathKind::Prefix("/"),
            _ => PathKind::Other,
        },
        [exact, _] => match kind(exact) {
            Some(Kind::Exact(t)) => PathKind::Prefix(t),
            _ => PathKind::Other,
        },
        _ => PathKind::Other,
    }
}

fn method(m: &MatchDef) -> Option<&StringMatch> {
    m.iter().find_map(|p| match p {
        Part::Method(method) => Some(method),
        _ => None,
    })
}

/// The Gateway API's precedence of a match, first first: an exact path, then the longest
/// prefix (regular expressions last), then a method, then the most headers. Ties keep their
/// order (route name, rule, match).
pub(super) fn precedence(
    m: &MatchDef,
) -> (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>) {
    let (rank, len) = match path_kind(m) {
        PathKind::Exact(e) => (0, e.len()),
        PathKind::Prefix(p) => (1, p.len()),
        PathKind::Other => (2, 0),
    };
    let headers = m.iter().filter(|p| matches!(p, Part::Header(..))).count();
    (
        rank,
        std::cmp::Reverse(len),
        method(m).is_none(),
        std::cmp::Reverse(headers),
    )
}

/// Whether `path` is under the segments `prefix`.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Whether no request can match both (by path or method); false when unsure.
pub(super) fn disjoint(a: &MatchDef, b: &MatchDef) -> bool {
    if let (Some(x), Some(y)) = (method(a), method(b))
        && x != y
    {
        return true;
    }
    match (path_kind(a), path_kind(b)) {
        (PathKind::Exact(x), PathKind::Exact(y)) => x != y,
        (PathKind::Exact(x), PathKind::Prefix(t)) | (PathKind::Prefix(t), PathKind::Exact(x)) => {
            !under(x, t)
        }
        (PathKind::Prefix(t), PathKind::Prefix(u)) => !(under(t, u) || under(u, t)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decoded(spec: Value) -> Result<Option<(RouteDef, Vec<Invalid>)>, Invalid> {
        route(
            "shop",
            "r",
            &json!({"metadata": {"name": "r"}, "spec": spec}),
        )
    }

    #[test]
    fn a_route_of_a_server_has_its_matches_as_parts() {
        let (r, warnings) = decoded(json!({
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
            "rules": [{"matches": [
                {"path": {"value": "/orders/"}, "method": "get"},
                {"path": {"type": "Exact", "value": "/ping"}, "headers": [{"name": "X-A", "value": "1"}]}
            ]}]
        }))
        .unwrap()
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(r.servers, ["web"]);
        assert!(!r.admits_nobody);
        assert_eq!(
            r.matches[0],
            vec![
                Part::Paths(vec![
                    string(Kind::Exact("/orders".into())),
                    string(Kind::Prefix("/orders/".into()))
                ]),
                Part::Method(string(Kind::Exact("GET".into())))
            ]
        );
        let (op, when) = positive(&r.matches[1]);
        assert_eq!(op.paths, vec![string(Kind::Exact("/ping".into()))]);
        assert_eq!(when[0].header, "x-a");
    }

    #[test]
    fn precedence_and_overlap_follow_paths_and_methods() {
        let (r, _) = decoded(json!({
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
            "rules": [{"matches": [
                {"path": {"value": "/"}},
                {"path": {"value": "/admin"}},
                {"path": {"type": "Exact", "value": "/admin/x"}},
                {"path": {"value": "/admin"}, "method": "POST"},
                {"path": {"value": "/adminx"}, "method": "GET"}
            ]}]
        }))
        .unwrap()
        .unwrap();
        let m = &r.matches;
        let mut order: Vec<usize> = (0..m.len()).collect();
        order.sort_by_key(|i| precedence(&m[*i]));
        assert_eq!(order, [2, 4, 3, 1, 0]);
        assert!(!disjoint(&m[0], &m[1]), "/ covers /admin");
        assert!(!disjoint(&m[1], &m[2]), "/admin covers /admin/x");
        assert!(disjoint(&m[1], &m[4]), "segments: /admin is not /adminx");
        assert!(disjoint(&m[3], &m[4]), "POST and GET");
    }

    #[test]
    fn other_parents_are_not_inbound_and_untestable_parts_admit_nobody() {
        let service = json!({"parentRefs": [{"kind": "Service", "group": "", "name": "web"}]});
        assert_eq!(decoded(service).unwrap(), None);
        let (r, warnings) = decoded(json!({
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
            "rules": [{"matches": [{"queryParams": [{"name": "a", "value": "1"}]}]}]
        }))
        .unwrap()
        .unwrap();
        assert!(r.admits_nobody);
        assert_eq!(warnings[0].0, "spec.rules[0].matches[0].queryParams");
        let (_, warnings) = decoded(json!({
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
            "rules": [{"filters": [{"type": "RequestHeaderModifier"}]}]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(warnings[0].0, "spec.rules[0].filters");
        let bad = decoded(json!({
            "parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
            "rules": [{"matches": [{"path": {"type": "Exact", "value": "orders"}}]}]
        }));
        assert_eq!(bad.unwrap_err().0, "spec.rules[0].matches[0].path.value");
    }
}
