//! Decoding manifests (multi-document YAML, JSON, `kind: List`) into objects.
//!
//! Each document is decoded on its own so that one bad document is reported
//! (file, document index, field path, line and column) and skipped while the
//! others load.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::istio::{
    AuthorizationPolicy, AuthorizationPolicySpec, PeerAuthentication, PeerAuthenticationSpec,
};
use super::kube::ObjectMeta;
use super::linkerd::{LINKERD_POLICY_GROUP, LINKERD_POLICY_KINDS};
use super::object::{Object, RAW_KINDS};
use super::problem::{Problem, WARNING_PREFIX};
use super::telemetry::MESH_CONFIG_MAP;
use super::unread::{Verdict, XFCC_ANNOTATION, verdict};
use super::unread_fields::{is_security_kind, unread_fields};
use super::yaml_error::split_error;

/// The API group of the security policies, which fail closed when they cannot be read.
const SECURITY_GROUP: &str = "security.istio.io";

/// What one file yields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// Objects of the kinds the controller reads (others are ignored).
    pub objects: Vec<Object>,
    /// One problem per document (or list item) that could not be decoded.
    pub problems: Vec<Problem>,
}

/// Decodes every document of `text`, read from `origin`. `json` turns off
/// splitting at `---` lines (JSON is read with the YAML parser, of which it is
/// a subset).
pub fn parse_documents(origin: &str, text: &str, json: bool) -> Parsed {
    let mut parsed = Parsed::default();
    let chunks = if json {
        vec![(0, text.to_string())]
    } else {
        split_documents(text)
    };
    for (doc, (first_line, chunk)) in chunks.iter().enumerate() {
        let ctx = DocContext {
            origin,
            doc,
            first_line: *first_line,
        };
        parse_document(&ctx, chunk, &mut parsed);
    }
    parsed
}

/// Where a document sits in its file, for messages.
struct DocContext<'a> {
    origin: &'a str,
    doc: usize,
    /// Lines before the document's first line.
    first_line: usize,
}

/// Splits a YAML stream at `---` lines. Returns (lines before the document,
/// document text). Splitting by hand (instead of the parser's document
/// iterator) lets a syntax error in one document leave the others readable.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker {
            docs.push((start, std::mem::take(&mut current)));
            start = n;
            // `--- {a: 1}` carries content on the marker line itself; keep
            // it, and keep the line count so locations stay right.
            current.push_str(&line[3..]);
            current.push('\n');
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

/// True when a document holds nothing but blank lines, comments and markers.
fn is_empty_document(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..." || t.starts_with('%')
    })
}

/// A document's text, or one item of a `List`.
enum Src<'a> {
    Text(&'a str),
    Item(&'a Value),
}

fn decode<T: DeserializeOwned>(src: &Src<'_>) -> Result<T, serde_yaml_ng::Error> {
    match src {
        Src::Text(t) => serde_yaml_ng::from_str(t),
        // Decoding from text (not from the value) keeps the field path in
        // errors; the item's own line numbers are not meaningful and are
        // dropped by the caller.
        Src::Item(v) => serde_yaml_ng::from_str(&serde_yaml_ng::to_string(*v)?),
    }
}

fn parse_document(ctx: &DocContext<'_>, chunk: &str, out: &mut Parsed) {
    // Documents counted from 0 in messages would confuse people; use 1-based.
    let doc_no = ctx.doc + 1;
    if is_empty_document(chunk) {
        return;
    }
    let value: Value = match serde_yaml_ng::from_str(chunk) {
        Ok(v) => v,
        Err(e) => {
            let mut problem = error_problem(ctx, None, &e, "").skipped();
            (problem.kind, problem.namespace, problem.name) = guess_identity(chunk);
            out.problems.push(problem);
            return;
        }
    };
    if value.is_null() {
        return;
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        let Some(items) = value.get("items").and_then(Value::as_sequence) else {
            // A List without items is an empty list.
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("items[{i}]");
            if report_unread(ctx, item, out) {
                continue;
            }
            match decode_object(&Src::Item(item), item) {
                Ok(object) => keep_read(ctx, item, object, out),
                Err(e) => {
                    let problem = error_problem(ctx, Some(item), &e, &prefix).with_doc(doc_no);
                    keep_or_skip(item, problem, out);
                }
            }
        }
        return;
    }
    if report_unread(ctx, &value, out) {
        return;
    }
    match decode_object(&Src::Text(chunk), &value) {
        Ok(object) => keep_read(ctx, &value, object, out),
        Err(e) => {
            let problem = error_problem(ctx, Some(&value), &e, "").with_doc(doc_no);
            keep_or_skip(&value, problem, out);
        }
    }
}

/// Keeps a decoded object, reporting the fields the mesh does not read: a warning each, except
/// in a security policy, which is kept as unreadable instead (an unread field could narrow
/// what it denies or widen what it allows, so it fails closed until fixed).
fn keep_read(ctx: &DocContext<'_>, value: &Value, object: Option<Object>, out: &mut Parsed) {
    let Some(object) = object else {
        return;
    };
    let fields = serde_json::to_value(value)
        .map(|json| unread_fields(object.kind(), &json))
        .unwrap_or_default();
    let key = object.key();
    let problem =
        |field: &str| Problem::new(ctx.origin, &key.kind, &key.namespace, &key.name).field(field);
    if is_security_kind(&key.kind) && object.unreadable().is_none() && !fields.is_empty() {
        let also = match fields.len() {
            1 => String::new(),
            n => format!(" (and {} more: {})", n - 1, fields[1..].join(", ")),
        };
        let unread = problem(&fields[0]).message(format!(
            "unknown field{also}: the mesh cannot read this policy in full"
        ));
        match salvage_policy(value, &key.kind, &unread) {
            Some(policy) => out.objects.push(policy),
            None => out.problems.push(unread.skipped()),
        }
        return;
    }
    out.problems.extend(fields.iter().map(|field| {
        problem(field).message(format!(
            "{WARNING_PREFIX}the mesh does not read this field (a misspelling, or a feature it \
             does not implement): it has no effect"
        ))
    }));
    out.objects.push(object);
}

/// Reports an object of a kind the mesh does not read (see [`verdict`]); true when it is one,
/// and so must not be decoded. A security policy written under a mistyped group is kept as
/// unreadable instead: what it would have denied is denied, as for any policy that cannot be
/// understood.
fn report_unread(ctx: &DocContext<'_>, value: &Value, out: &mut Parsed) -> bool {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let kind = text(value.get("kind"));
    let Verdict::NotRead {
        error,
        message,
        meant,
    } = verdict(&text(value.get("apiVersion")), &kind)
    else {
        return false;
    };
    let metadata = value.get("metadata");
    let mut namespace = text(metadata.and_then(|m| m.get("namespace")));
    if namespace.is_empty() {
        namespace = "default".to_owned();
    }
    let name = text(metadata.and_then(|m| m.get("name")));
    let message = if error {
        message
    } else {
        format!("{WARNING_PREFIX}{message}")
    };
    let problem = Problem::new(ctx.origin, &kind, &namespace, &name).message(message);
    if kind == "GatewayClass"
        && let Some(value) = metadata
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(XFCC_ANNOTATION))
    {
        out.problems.push(unread_class_annotation(&problem, value));
    }
    // A Linkerd Server under a mistyped group or kind guards its port all the same: what it
    // would refuse stays refused while the error stands.
    if meant == Some((LINKERD_POLICY_GROUP, "Server"))
        && let Ok(server) = raw("Server", value).and_then(normalize)
    {
        let message = format!(
            "{}; enforced as the Server it resembles meanwhile (fail closed)",
            problem.message
        );
        out.problems.push(problem.message(message));
        out.objects.push(server);
        return true;
    }
    // The translation reports a salvaged policy's problem, with what failing closed does.
    let salvaged = match meant {
        Some((SECURITY_GROUP, kind)) => salvage_policy(value, kind, &problem),
        _ => None,
    };
    match salvaged {
        Some(policy) => out.objects.push(policy),
        None => out.problems.push(problem),
    }
    true
}

/// The client identity annotation on a GatewayClass: the mesh reads it on the waypoint's
/// Gateway only, so the user hears where to put it instead of losing it in silence.
fn unread_class_annotation(class: &Problem, value: &Value) -> Problem {
    let value = value
        .as_str()
        .map_or_else(|| format!("{value:?}"), str::to_owned);
    Problem {
        message: format!(
            "{WARNING_PREFIX}the mesh reads {XFCC_ANNOTATION} on the waypoint Gateway only, not \
             on its GatewayClass: {value:?} here has no effect (set it on each waypoint Gateway)"
        ),
        ..class.clone()
    }
    .field(format!("metadata.annotations[{XFCC_ANNOTATION}]"))
}

/// A document that could not be decoded: a security policy is kept, marked unreadable
/// (it must fail closed, not vanish); anything else is skipped and reported.
fn keep_or_skip(value: &Value, problem: Problem, out: &mut Parsed) {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let security = api_version.is_some_and(|v| v.starts_with(&format!("{SECURITY_GROUP}/")));
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match salvage_policy(value, kind, &problem).filter(|_| security) {
        Some(policy) => out.objects.push(policy),
        None => out.problems.push(problem.skipped()),
    }
}

/// What can be read of a security policy that failed to decode: its metadata and the
/// parts that say where it applies and what it does (selector, targets, action), each
/// decoded on its own; the rest (rules, modes) is left out. `None` for other kinds, and
/// for a policy without a readable name (nothing could refer to it). `kind` is what it is, or
/// what a misspelt kind meant.
fn salvage_policy(value: &Value, kind: &str, problem: &Problem) -> Option<Object> {
    let metadata: ObjectMeta = serde_yaml_ng::from_value(value.get("metadata")?.clone()).ok()?;
    let spec = value.get("spec");
    fn part<T: DeserializeOwned>(spec: Option<&Value>, key: &str) -> Option<T> {
        let v = spec?.get(key)?;
        serde_yaml_ng::from_value(v.clone()).ok()
    }
    let unreadable = Some(Box::new(problem.clone()));
    let object = match kind {
        "AuthorizationPolicy" => Object::AuthorizationPolicy(AuthorizationPolicy {
            metadata,
            spec: AuthorizationPolicySpec {
                selector: part(spec, "selector"),
                target_ref: part(spec, "targetRef"),
                target_refs: part(spec, "targetRefs").unwrap_or_default(),
                // An action that is there but not a string must not read as the default
                // (ALLOW): keep its text, which no action is named, so it fails as DENY.
                action: spec
                    .and_then(|s| s.get("action"))
                    .map(|a| match a.as_str() {
                        Some(text) => text.to_owned(),
                        None => format!("{a:?}"),
                    }),
                rules: Vec::new(),
                provider: None,
            },
            unreadable,
        }),
        "PeerAuthentication" => Object::PeerAuthentication(PeerAuthentication {
            metadata,
            spec: PeerAuthenticationSpec {
                selector: part(spec, "selector"),
                ..PeerAuthenticationSpec::default()
            },
            unreadable,
        }),
        _ => return None,
    };
    normalize(object).ok()
}

/// Decodes one object, if it is of a kind the controller reads.
fn decode_object(src: &Src<'_>, value: &Value) -> Result<Option<Object>, serde_yaml_ng::Error> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let linkerd_kind = api_version
        .strip_prefix(LINKERD_POLICY_GROUP)
        .filter(|rest| rest.starts_with('/'))
        .and_then(|_| LINKERD_POLICY_KINDS.iter().find(|(k, _)| *k == kind))
        .map(|(_, indexed)| *indexed);
    if let Some(indexed) = linkerd_kind {
        return normalize(raw(indexed, value)?).map(Some);
    }
    let object = match kind {
        "Namespace" => Object::Namespace(decode(src)?),
        "Pod" => Object::Pod(decode(src)?),
        "Service" => Object::Service(decode(src)?),
        // Istio's own networking.istio.io Gateway shares the kind name but
        // not the shape; only the Gateway API one can be a waypoint.
        "Gateway" if api_version.starts_with("gateway.networking.k8s.io/") => {
            Object::Gateway(decode(src)?)
        }
        "AuthorizationPolicy" if api_version.starts_with("security.istio.io/") => {
            Object::AuthorizationPolicy(decode(src)?)
        }
        "PeerAuthentication" if api_version.starts_with("security.istio.io/") => {
            Object::PeerAuthentication(decode(src)?)
        }
        // Linkerd's authorization kinds, kept raw for the Linkerd policy translation under
        // the index kind that keeps its AuthorizationPolicy apart from Istio's.
        k if RAW_KINDS.contains(&k) => raw(k, value)?,
        // The mesh config (Istio's `istio` ConfigMap); which namespace's counts is the
        // translation's business (the root namespace).
        "ConfigMap" if api_version == "v1" && is_mesh_config_map(value) => raw(kind, value)?,
        // Deployments, other ConfigMaps, ...: not the controller's business.
        _ => return Ok(None),
    };
    normalize(object).map(Some)
}

/// An object kept verbatim, to be decoded when translated.
fn raw(kind: &str, value: &Value) -> Result<Object, serde_yaml_ng::Error> {
    let metadata: ObjectMeta = match value.get("metadata") {
        Some(m) => serde_yaml_ng::from_value(m.clone())?,
        None => ObjectMeta::default(),
    };
    let json = serde_json::to_value(value).map_err(|e| {
        <serde_yaml_ng::Error as serde::de::Error>::custom(format!(
            "not representable as JSON: {e}"
        ))
    })?;
    Ok(Object::Raw {
        kind: kind.to_string(),
        metadata,
        value: json,
    })
}

/// Whether a ConfigMap is named as Istio names the one holding the mesh config.
fn is_mesh_config_map(value: &Value) -> bool {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        == Some(MESH_CONFIG_MAP)
}

/// Fills defaults (namespace `default`) and rejects objects without a name.
fn normalize(mut object: Object) -> Result<Object, serde_yaml_ng::Error> {
    let cluster_scoped = matches!(object, Object::Namespace(_));
    let meta = match &mut object {
        Object::Namespace(o) => &mut o.metadata,
        Object::Pod(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::Gateway(o) => &mut o.metadata,
        Object::AuthorizationPolicy(o) => &mut o.metadata,
        Object::PeerAuthentication(o) => &mut o.metadata,
        Object::Raw { metadata, .. } => metadata,
    };
    if meta.name.is_empty() {
        return Err(<serde_yaml_ng::Error as serde::de::Error>::custom(
            "metadata.name: missing",
        ));
    }
    if cluster_scoped {
        meta.namespace.clear();
    } else if meta.namespace.is_empty() {
        meta.namespace = "default".to_string();
    }
    check_names(&object)?;
    Ok(object)
}

/// Refuses names the API server would refuse (RFC 1123): they end up in workload identities,
/// hostnames and resource names, which the proxies check and would refuse in turn.
fn check_names(object: &Object) -> Result<(), serde_yaml_ng::Error> {
    let invalid = |field: &str, value: &str, rule: &str| {
        Err(<serde_yaml_ng::Error as serde::de::Error>::custom(format!(
            "{field}: {value:?} is not a valid Kubernetes name (RFC 1123 {rule})"
        )))
    };
    let (meta, label_name) = match object {
        Object::Namespace(o) => (&o.metadata, true),
        Object::Service(o) => (&o.metadata, true),
        Object::Pod(o) => (&o.metadata, false),
        Object::Gateway(o) => (&o.metadata, false),
        Object::AuthorizationPolicy(o) => (&o.metadata, false),
        Object::PeerAuthentication(o) => (&o.metadata, false),
        Object::Raw { metadata, .. } => (metadata, false),
    };
    let name_ok = if label_name {
        dns_label(&meta.name)
    } else {
        dns_subdomain(&meta.name)
    };
    if !name_ok {
        let rule = if label_name { "label" } else { "subdomain" };
        return invalid("metadata.name", &meta.name, rule);
    }
    if !meta.namespace.is_empty() && !dns_label(&meta.namespace) {
        return invalid("metadata.namespace", &meta.namespace, "label");
    }
    if let Object::Pod(pod) = object {
        let account = &pod.spec.service_account_name;
        if !account.is_empty() && !dns_subdomain(account) {
            return invalid("spec.serviceAccountName", account, "subdomain");
        }
    }
    Ok(())
}

/// An RFC 1123 label: namespaces and Service names.
fn dns_label(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// An RFC 1123 subdomain: other object names and service accounts.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

impl Problem {
    fn with_doc(mut self, doc: usize) -> Self {
        self.message = format!("document {doc}: {}", self.message);
        self
    }

    fn skipped(mut self) -> Self {
        self.message.push_str("; document skipped");
        self
    }
}

/// Turns a decoding error into a problem: the serde path becomes the field,
/// and the location is made relative to the file.
fn error_problem(
    ctx: &DocContext<'_>,
    value: Option<&Value>,
    err: &serde_yaml_ng::Error,
    prefix: &str,
) -> Problem {
    let meta = |k: &str| {
        value
            .and_then(|v| v.get("metadata"))
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let kind = value
        .and_then(|v| v.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (path, message) = split_error(&err.to_string());
    let field = match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    };
    let mut message = message;
    // Items of a List were re-decoded from a value and carry no location.
    if let Some(loc) = err.location().filter(|_| prefix.is_empty()) {
        message = format!(
            "{message} (line {}, column {})",
            loc.line() + ctx.first_line,
            loc.column()
        );
    }
    if value.is_none() {
        message = format!("document {}: {message}", ctx.doc + 1);
    }
    Problem::new(ctx.origin, kind, &meta("namespace"), &meta("name"))
        .field(field)
        .message(message)
}

/// Best-effort (kind, namespace, name) of a document that is not valid
/// YAML, read line by line from its block-style header, so that the message
/// can still name the object.
fn guess_identity(chunk: &str) -> (String, String, String) {
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    let (mut kind, mut namespace, mut name) = (String::new(), String::new(), String::new());
    let mut in_metadata = false;
    for line in chunk.lines() {
        if !line.starts_with(' ') {
            in_metadata = line.trim_end() == "metadata:";
            if let Some(k) = value(line, "kind:") {
                kind = k;
            }
        } else if in_metadata {
            if let Some(n) = value(line, "  name:") {
                name = n;
            } else if let Some(ns) = value(line, "  namespace:") {
                namespace = ns;
            }
        }
    }
    (kind, namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- \n\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].0, 1);
        assert_eq!(docs[2].0, 3);
        assert!(docs[2].1.contains("c: 3"));
    }

    #[test]
    fn names_the_api_server_would_refuse_are_reported() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: \"sh\u{e9}p\"}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: shop}\n\
                    spec: {serviceAccountName: Admin}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: a.b, namespace: shop}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: ok.1, namespace: shop}\n\
                    spec: {serviceAccountName: reviews.v1}\n";
        let parsed = parse_documents("f.yaml", text, false);
        assert_eq!(parsed.objects.len(), 1, "{:?}", parsed.problems);
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.namespace",
                "spec.serviceAccountName",
                "metadata.name"
            ]
        );
        assert!(
            parsed.problems[0].message.contains("RFC 1123"),
            "{}",
            parsed.problems[0]
        );
    }

    #[test]
    fn bad_field_names_path_and_line() {
        let text = "kind: Pod\napiVersion: v1\nmetadata: {name: p}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: eighty\n";
        let parsed = parse_documents("f.yaml", text, false);
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.problems.len(), 1);
        let p = &parsed.problems[0];
        assert_eq!(p.field, "spec.ports[0].port");
        assert_eq!((p.kind.as_str(), p.name.as_str()), ("Service", "s"));
        assert!(p.message.contains("line 11"), "{p}");
        assert!(p.message.contains("document 2"), "{p}");
    }

    #[test]
    fn kinds_the_mesh_does_not_read_are_reported_not_dropped() {
        let text = "apiVersion: security.linkerd.io/v1beta1\nkind: Server\n\
                    metadata: {name: web, namespace: shop}\n---\n\
                    apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\n---\n\
                    apiVersion: networking.istio.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        let parsed = parse_documents("f.yaml", text, false);
        // Telemetry is read (v1 and v1alpha1 alike); the misspelt Server is kept to fail
        // closed, and reported.
        let kinds: Vec<&str> = parsed.objects.iter().map(Object::kind).collect();
        assert_eq!(kinds, ["Server", "Telemetry"]);
        let found: Vec<(String, bool)> = parsed
            .problems
            .iter()
            .map(|p| {
                (
                    format!("{} {}/{}", p.kind, p.namespace, p.name),
                    p.is_warning(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("Server shop/web".to_owned(), false),
                ("HTTPRoute default/r".to_owned(), false),
            ]
        );
        assert!(
            parsed.problems[0].to_string().contains(
                "there is no API group security.linkerd.io, so it is not read (did you mean \
                 apiVersion: policy.linkerd.io/v1beta1?)"
            ),
            "{}",
            parsed.problems[0]
        );
    }

    #[test]
    fn only_the_mesh_config_map_is_kept() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n\
                    data: {mesh: 'defaultProviders: {tracing: [otel]}'}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: istio-system}\n\
                    data: {a: b}\n---\n\
                    apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\n\
                    metadata: {name: t, namespace: shop}\nspec: {tracng: []}\n";
        let parsed = parse_documents("f.yaml", text, false);
        let keys: Vec<String> = parsed.objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys, ["ConfigMap istio-system/istio", "Telemetry shop/t"]);
        let [unread] = parsed.problems.as_slice() else {
            panic!("{:?}", parsed.problems);
        };
        assert_eq!(
            (unread.field.as_str(), unread.is_warning()),
            ("spec.tracng", true)
        );
    }

    #[test]
    fn a_security_policy_with_a_misspelt_kind_or_group_is_kept_to_fail_closed() {
        for (api_version, kind) in [
            ("security.istio.io/v1", "AuthorisationPolicy"),
            ("securty.istio.io/v1", "AuthorizationPolicy"),
        ] {
            let text = format!(
                "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: p, namespace: shop}}\n\
                 spec: {{action: DENY, rules: [{{from: [{{source: {{namespaces: [x]}}}}]}}]}}\n"
            );
            let parsed = parse_documents("p.yaml", &text, false);
            assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
            let [Object::AuthorizationPolicy(policy)] = parsed.objects.as_slice() else {
                panic!("{kind} in {api_version} is not kept: {:?}", parsed.objects);
            };
            assert_eq!(policy.spec.action.as_deref(), Some("DENY"));
            let why = policy
                .unreadable
                .as_ref()
                .expect("unreadable: it fails closed");
            assert!(why.message.contains("did you mean"), "{why:?}");
        }
    }

    #[test]
    fn a_linkerd_server_with_a_misspelt_group_still_guards_its_port() {
        let text = "apiVersion: security.linkerd.io/v1beta3\nkind: Server\n\
                    metadata: {name: web, namespace: shop}\nspec: {port: 8080}\n";
        let parsed = parse_documents("s.yaml", text, false);
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.objects[0].key().kind, "Server");
        assert!(
            parsed.problems[0].message.contains("fail closed"),
            "{parsed:?}"
        );
        assert!(!parsed.problems[0].is_warning());
    }
}
