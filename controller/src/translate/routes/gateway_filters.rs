//! Gateway API route filters and backend references: header modifiers,
//! mirrors, redirects, rewrites, and the Services they name.

use api::waypoint::{HeaderModifier, Mirror, Redirect, UrlRewrite, redirect, url_rewrite};

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::parts;
use super::values;
use crate::model::routes::{
    BackendRef, HttpBackendRef, HttpRouteFilter, MirrorFilter, PathModifier, RedirectFilter,
    UrlRewriteFilter,
};

/// What a rule's filters do.
#[derive(Default)]
pub(super) struct RuleAction {
    /// Request header edits.
    pub request_headers: Option<HeaderModifier>,
    /// Response header edits.
    pub response_headers: Option<HeaderModifier>,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
    /// A redirect answer.
    pub redirect: Option<Redirect>,
    /// A URL rewrite.
    pub rewrite: Option<UrlRewrite>,
}

impl RuleAction {
    /// Reads `filters`; `all_prefix` says whether every match of the rule is
    /// a prefix match, `http` whether HTTP-only filters are allowed.
    pub(super) fn from_filters(
        obj: &Obj,
        catalog: &Catalog<'_>,
        filters: &[HttpRouteFilter],
        field: &str,
        all_prefix: bool,
        http: bool,
    ) -> Result<Self, Invalid> {
        let mut out = RuleAction::default();
        for (k, f) in filters.iter().enumerate() {
            let ff = format!("{field}[{k}]");
            let missing = |name: &str| Invalid::new(format!("{ff}.{name}"), "missing");
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    let h = f.request_header_modifier.as_ref();
                    let h = h.ok_or_else(|| missing("requestHeaderModifier"))?;
                    let m = header_filter(h, &format!("{ff}.requestHeaderModifier"))?;
                    out.request_headers = parts::merge_modifiers(out.request_headers, m);
                }
                "ResponseHeaderModifier" => {
                    let h = f.response_header_modifier.as_ref();
                    let h = h.ok_or_else(|| missing("responseHeaderModifier"))?;
                    let m = header_filter(h, &format!("{ff}.responseHeaderModifier"))?;
                    out.response_headers = parts::merge_modifiers(out.response_headers, m);
                }
                "RequestMirror" => {
                    let m = f
                        .request_mirror
                        .as_ref()
                        .ok_or_else(|| missing("requestMirror"))?;
                    let mirror = read_mirror(obj, catalog, m, &format!("{ff}.requestMirror"))?;
                    out.mirrors.push(mirror);
                }
                "RequestRedirect" if http => {
                    let r = f.request_redirect.as_ref();
                    let r = r.ok_or_else(|| missing("requestRedirect"))?;
                    let rf = format!("{ff}.requestRedirect");
                    out.redirect = Some(read_redirect(r, &rf, all_prefix)?);
                }
                "URLRewrite" if http => {
                    let r = f
                        .url_rewrite
                        .as_ref()
                        .ok_or_else(|| missing("urlRewrite"))?;
                    out.rewrite = Some(read_rewrite(r, &format!("{ff}.urlRewrite"), all_prefix)?);
                }
                other => return Err(unsupported(other, &ff, http)),
            }
        }
        if out.redirect.is_some() && out.rewrite.is_some() {
            return Err(Invalid::new(
                field,
                "RequestRedirect and URLRewrite cannot be used in the same rule",
            ));
        }
        Ok(out)
    }
}

/// A filter type this kind of route does not take.
fn unsupported(filter: &str, field: &str, http: bool) -> Invalid {
    let http_only = if http {
        ", RequestRedirect, URLRewrite"
    } else {
        ""
    };
    Invalid::new(
        format!("{field}.type"),
        format!(
            "filter {filter:?} is not supported here (RequestHeaderModifier, \
             ResponseHeaderModifier, RequestMirror{http_only})"
        ),
    )
}

/// A `RequestMirror` filter (at `field`): the mirrored Service and the share of requests.
fn read_mirror(
    obj: &Obj,
    catalog: &Catalog<'_>,
    m: &MirrorFilter,
    field: &str,
) -> Result<Mirror, Invalid> {
    let backend = format!("{field}.backendRef");
    let service = service_ref(obj, catalog, (&m.backend_ref).into(), &backend)?;
    let percentage = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            return Err(Invalid::new(field, "percent and fraction are exclusive"));
        }
        (Some(p), None) => values::percentage(f64::from(p)).at(&format!("{field}.percent"))?,
        (None, Some(fr)) => {
            let den = fr.denominator.unwrap_or(100);
            if den == 0 || fr.numerator > den {
                return Err(Invalid::new(
                    format!("{field}.fraction"),
                    "numerator must be at most denominator, and denominator above 0",
                ));
            }
            f64::from(fr.numerator) * 100.0 / f64::from(den)
        }
        (None, None) => 100.0,
    };
    let port = u32::from(m.backend_ref.port.unwrap_or(0));
    Ok(Mirror {
        destination: Some(service.destination(port, "")),
        percentage,
    })
}

/// A `RequestRedirect` filter (at `field`).
fn read_redirect(r: &RedirectFilter, field: &str, all_prefix: bool) -> Result<Redirect, Invalid> {
    let status = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        return Err(Invalid::new(
            format!("{field}.statusCode"),
            format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
        ));
    }
    let scheme = r.scheme.as_deref();
    if let Some(s) = scheme.filter(|s| !matches!(*s, "http" | "https")) {
        return Err(Invalid::new(
            format!("{field}.scheme"),
            format!("{s:?} is not http or https"),
        ));
    }
    let path = match &r.path {
        Some(p) => Some(
            match path_modifier(p, &format!("{field}.path"), all_prefix)? {
                PathChange::Full(p) => redirect::Path::FullPath(p),
                PathChange::Prefix(p) => redirect::Path::Prefix(p),
            },
        ),
        None => None,
    };
    Ok(Redirect {
        scheme: r.scheme.clone().unwrap_or_default(),
        host: r.hostname.clone().unwrap_or_default(),
        port: u32::from(r.port.unwrap_or(0)),
        path,
        status: u32::from(status),
    })
}

/// A `URLRewrite` filter (at `field`).
fn read_rewrite(
    r: &UrlRewriteFilter,
    field: &str,
    all_prefix: bool,
) -> Result<UrlRewrite, Invalid> {
    let path = match &r.path {
        Some(p) => Some(
            match path_modifier(p, &format!("{field}.path"), all_prefix)? {
                PathChange::Full(p) => url_rewrite::Path::FullPath(p),
                PathChange::Prefix(p) => url_rewrite::Path::Prefix(p),
            },
        ),
        None => None,
    };
    Ok(UrlRewrite {
        path,
        host: r.hostname.clone().unwrap_or_default(),
    })
}

fn header_filter(
    h: &crate::model::routes::HeaderFilter,
    field: &str,
) -> Result<Option<HeaderModifier>, Invalid> {
    parts::header_modifier(
        h.set.iter().map(|x| (x.name.as_str(), x.value.as_str())),
        h.add.iter().map(|x| (x.name.as_str(), x.value.as_str())),
        h.remove.iter().map(String::as_str),
        field,
    )
}

/// The path change of a redirect or a rewrite (which each have their own
/// type for it).
enum PathChange {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix.
    Prefix(String),
}

fn path_modifier(p: &PathModifier, field: &str, all_prefix: bool) -> Result<PathChange, Invalid> {
    match p.type_.as_str() {
        "ReplaceFullPath" => {
            let v = p.replace_full_path.as_deref().unwrap_or("/");
            Ok(PathChange::Full(parts::absolute(
                v,
                &format!("{field}.replaceFullPath"),
            )?))
        }
        "ReplacePrefixMatch" => {
            if !all_prefix {
                return Err(Invalid::new(
                    field,
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                ));
            }
            let v = p.replace_prefix_match.as_deref().unwrap_or("/");
            Ok(PathChange::Prefix(parts::absolute(
                v,
                &format!("{field}.replacePrefixMatch"),
            )?))
        }
        other => Err(Invalid::new(
            format!("{field}.type"),
            format!("unknown path modifier {other:?} (ReplaceFullPath, ReplacePrefixMatch)"),
        )),
    }
}

/// The parts of a backend reference (of a mirror, or of a rule with its
/// weight and filters) that name the backend.
pub(super) struct ServiceRef<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<u16>,
}

impl<'a> From<&'a BackendRef> for ServiceRef<'a> {
    fn from(b: &'a BackendRef) -> Self {
        Self {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        }
    }
}

impl<'a> From<&'a HttpBackendRef> for ServiceRef<'a> {
    fn from(b: &'a HttpBackendRef) -> Self {
        Self {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        }
    }
}

/// A backend that must be a Service of the route's namespace (cross-namespace
/// references would need a ReferenceGrant, which is not read).
pub(super) fn service_ref(
    obj: &Obj,
    catalog: &Catalog<'_>,
    r: ServiceRef<'_>,
    field: &str,
) -> Result<ServiceKey, Invalid> {
    let ServiceRef {
        group,
        kind,
        name,
        namespace,
        port,
    } = r;
    let kind = kind.unwrap_or("Service");
    if kind != "Service" || !matches!(group.unwrap_or(""), "" | "core") {
        return Err(Invalid::new(
            format!("{field}.kind"),
            format!("backend kind {kind:?} is not supported (Service)"),
        ));
    }
    let ns = namespace.unwrap_or(&obj.namespace);
    if ns != obj.namespace {
        return Err(Invalid::new(
            format!("{field}.namespace"),
            "cross-namespace backends need a ReferenceGrant, which is not supported",
        ));
    }
    if port == Some(0) {
        return Err(Invalid::new(
            format!("{field}.port"),
            "port 0 is not a port",
        ));
    }
    let key = ServiceKey::new(ns, name);
    match catalog.service(&key) {
        Some(_) => Ok(key),
        None => Err(Invalid::new(
            format!("{field}.name"),
            format!("no Service {key}"),
        )),
    }
}
