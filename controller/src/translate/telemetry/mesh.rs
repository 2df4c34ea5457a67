//! The mesh config (`mesh` key of the `istio` ConfigMap in the root namespace) → the
//! extension providers Telemetry resources name, the default tracing provider and the default
//! sampling percentage. What it says that the mesh does not act on is reported, never dropped
//! in silence; YAML that does not decode is an error, and the last good version stays in force.

use std::collections::BTreeMap;

use api::waypoint::TracingProvider;

use super::super::last_good::LastGood;
use super::super::options::DOMAIN_SUFFIX;
use super::super::routes::{Catalog, Obj};
use super::super::service_key::ServiceKey;
use super::otlp_export;
use crate::model::mesh_config::{ReadMeshConfig, read_mesh_config};
use crate::model::telemetry::{MESH_CONFIG_KEY, MESH_CONFIG_MAP, MeshConfig};
use crate::model::{Object, ObjectKey, Problem, WARNING_PREFIX};

/// Istio's sampling percentage when nothing sets one (`defaultConfig.tracing.sampling`).
pub(crate) const DEFAULT_SAMPLING: f64 = 1.0;

/// Istio's built-in providers, which need no declaration: access log lines (`envoy`) and
/// metrics (`prometheus`) already go where those would send them.
const BUILT_IN_ACCESS_LOG: &str = "envoy";
const BUILT_IN_METRICS: &str = "prometheus";

/// An extension provider as the mesh can use it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Declared {
    /// An OTLP collector spans are sent to (gRPC, or HTTP when the provider says so).
    Otlp(TracingProvider),
    /// Declared, but not usable for tracing; why.
    Unusable(String),
}

/// What the mesh config sets for telemetry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MeshSettings {
    /// Extension providers by name.
    pub providers: BTreeMap<String, Declared>,
    /// `defaultProviders.tracing[0]`, when it names an OTLP provider.
    pub default_tracing: Option<String>,
    /// Sampling percentage where no Telemetry sets one.
    pub default_sampling: f64,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            providers: BTreeMap::new(),
            default_tracing: None,
            default_sampling: DEFAULT_SAMPLING,
        }
    }
}

impl MeshSettings {
    /// The OTLP provider called `name`.
    pub fn otlp(&self, name: &str) -> Option<&TracingProvider> {
        match self.providers.get(name) {
            Some(Declared::Otlp(p)) => Some(p),
            _ => None,
        }
    }
}

/// Reads the mesh config of `root_namespace`; defaults without one.
pub(crate) fn mesh_settings(
    catalog: &Catalog<'_>,
    root_namespace: &str,
    memory: &mut LastGood<MeshSettings>,
    problems: &mut Vec<Problem>,
) -> MeshSettings {
    memory.start();
    let key = ObjectKey::new("ConfigMap", root_namespace, MESH_CONFIG_MAP);
    let Some(stored) = catalog.index.get(&key) else {
        return MeshSettings::default();
    };
    let Object::Raw {
        metadata, value, ..
    } = &stored.object
    else {
        return MeshSettings::default();
    };
    let obj = Obj::new(&stored.origin, "ConfigMap", metadata);
    let field = format!("data.{MESH_CONFIG_KEY}");
    let read = match &value["data"][MESH_CONFIG_KEY] {
        serde_json::Value::Null => Ok(ReadMeshConfig::default()),
        serde_json::Value::String(text) => read_mesh_config(text).map_err(|e| {
            let at = if e.field.is_empty() {
                field.clone()
            } else {
                format!("{field}.{}", e.field)
            };
            obj.problem(
                at,
                format!("the mesh config is not valid YAML: {}", e.message),
            )
        }),
        _ => Err(obj.problem(&field, "not a string of MeshConfig YAML")),
    };
    match read {
        Ok(read) => {
            let settings = settings(&obj, &read, catalog, problems);
            memory.good(key, &settings);
            settings
        }
        Err(problem) => memory
            .invalid_or(
                key,
                problem,
                Some(MeshSettings::default()),
                "no extension providers are declared and the mesh defaults apply",
                "",
                problems,
            )
            .unwrap_or_default(),
    }
}

/// The settings of a decoded mesh config, reporting what is not acted on.
fn settings(
    obj: &Obj,
    read: &ReadMeshConfig,
    catalog: &Catalog<'_>,
    problems: &mut Vec<Problem>,
) -> MeshSettings {
    let warn = |field: String, message: String| {
        obj.problem(
            format!("data.{MESH_CONFIG_KEY}.{field}"),
            format!("{WARNING_PREFIX}{message}"),
        )
    };
    let config: &MeshConfig = &read.config;
    let mut out = MeshSettings::default();
    let unsupported_kinds = declare_providers(read, catalog, &warn, &mut out, problems);
    let defaults = &config.default_providers;
    if let Some(first) = defaults.tracing.first() {
        let at = "defaultProviders.tracing[0]".to_string();
        match out.providers.get(first) {
            Some(Declared::Otlp(_)) => out.default_tracing = Some(first.clone()),
            Some(Declared::Unusable(_)) => problems.push(warn(
                at,
                format!("{first:?} is not an opentelemetry provider: tracing stays off where no Telemetry names one"),
            )),
            None => problems.push(warn(
                at,
                format!("{first:?} names no extension provider: tracing stays off where no Telemetry names one"),
            )),
        }
    }
    for (i, _) in defaults.tracing.iter().enumerate().skip(1) {
        problems.push(warn(
            format!("defaultProviders.tracing[{i}]"),
            "only the first tracing provider is used".into(),
        ));
    }
    for (list, built_in, what, field) in [
        (
            &defaults.access_logging,
            BUILT_IN_ACCESS_LOG,
            "access log lines go to the waypoint's standard output",
            "accessLogging",
        ),
        (
            &defaults.metrics,
            BUILT_IN_METRICS,
            "metrics are served on the proxies' /metrics endpoint",
            "metrics",
        ),
    ] {
        for (i, name) in list.iter().enumerate().filter(|(_, n)| *n != built_in) {
            problems.push(warn(
                format!("defaultProviders.{field}[{i}]"),
                format!("{name:?} is not acted on: {what}"),
            ));
        }
    }
    match config.default_config.tracing.sampling {
        Some(p) if (0.0..=100.0).contains(&p) => out.default_sampling = p,
        Some(p) => problems.push(warn(
            "defaultConfig.tracing.sampling".into(),
            format!("{p} is not a percentage (0 to 100): the default, {DEFAULT_SAMPLING}, applies"),
        )),
        None => {}
    }
    for path in read
        .unread
        .iter()
        .filter(|p| !unsupported_kinds.iter().any(|k| p.starts_with(k.as_str())))
    {
        problems.push(warn(
            path.clone(),
            "the mesh does not read this field of the mesh config: it has no effect".into(),
        ));
    }
    out
}

/// Declares the extension providers of `read` in `out`; returns the paths of the providers'
/// kinds that are not supported (each reported here, so not also as an unread field).
fn declare_providers(
    read: &ReadMeshConfig,
    catalog: &Catalog<'_>,
    warn: &impl Fn(String, String) -> Problem,
    out: &mut MeshSettings,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut unsupported_kinds = Vec::new();
    for (i, provider) in read.config.extension_providers.iter().enumerate() {
        let at = format!("extensionProviders[{i}]");
        let kinds = read.provider_kinds.get(i).cloned().unwrap_or_default();
        if provider.name.is_empty() {
            problems.push(warn(
                format!("{at}.name"),
                "missing: no Telemetry can name this provider".into(),
            ));
            continue;
        }
        if out.providers.contains_key(&provider.name) {
            problems.push(warn(
                format!("{at}.name"),
                format!("{:?} is declared twice: the first is used", provider.name),
            ));
            continue;
        }
        let declared = match &provider.opentelemetry {
            Some(otel) => otlp(&provider.name, otel, catalog, |field, message| {
                problems.push(warn(format!("{at}.opentelemetry.{field}"), message));
            }),
            None => {
                let kind = kinds.join(", ");
                unsupported_kinds.extend(kinds.iter().map(|k| format!("{at}.{k}")));
                let why = format!(
                    "provider kind {kind} is not supported (only opentelemetry is): a Telemetry \
                     naming {:?} records no spans",
                    provider.name
                );
                problems.push(warn(at.clone(), why.clone()));
                Declared::Unusable(why)
            }
        };
        out.providers.insert(provider.name.clone(), declared);
    }
    unsupported_kinds
}

/// An OpenTelemetry provider: usable when it has a port; its service is looked up among the
/// mesh's Services (`<name>.<namespace>.svc[.cluster.local]`).
fn otlp(
    name: &str,
    otel: &crate::model::telemetry::OpenTelemetryProvider,
    catalog: &Catalog<'_>,
    mut warn: impl FnMut(String, String),
) -> Declared {
    if otel.port == 0 || otel.port > u32::from(u16::MAX) {
        let why = format!(
            "port {} is not a port: a Telemetry naming {name:?} records no spans",
            otel.port
        );
        warn("port".into(), why.clone());
        return Declared::Unusable(why);
    }
    let namespace = match service_of(&otel.service) {
        Some(key) => {
            if catalog.service(&key).is_none() {
                warn(
                    "service".into(),
                    format!(
                        "{:?} names no Service of the mesh: spans cannot be delivered until it exists",
                        otel.service
                    ),
                );
            }
            key.namespace
        }
        None => {
            warn(
                "service".into(),
                format!(
                    "{:?} is not a Service hostname (<name>.<namespace>.svc.cluster.local): spans cannot be delivered",
                    otel.service
                ),
            );
            String::new()
        }
    };
    let env = |variable: &str| std::env::var(variable).ok();
    let export = otlp_export::export(otel, env, &mut warn);
    Declared::Otlp(TracingProvider {
        name: name.to_string(),
        service: otel.service.clone(),
        namespace,
        port: otel.port,
        max_tag_length: otel.max_tag_length.unwrap_or(0),
        http_path: export.http_path,
        timeout_ms: export.timeout_ms,
        headers: export.headers,
    })
}

/// The Service a hostname names: `<name>.<namespace>.svc`, optionally followed by the cluster
/// domain, or `<name>.<namespace>`.
fn service_of(hostname: &str) -> Option<ServiceKey> {
    let host = hostname.trim_end_matches('.');
    let suffix = format!(".svc.{DOMAIN_SUFFIX}");
    let short = host
        .strip_suffix(&suffix)
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    match short.split('.').collect::<Vec<_>>().as_slice() {
        [name, namespace] if !name.is_empty() && !namespace.is_empty() => {
            Some(ServiceKey::new(namespace, name))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hostnames_name_their_namespace() {
        let key = |h: &str| service_of(h).map(|k| (k.namespace, k.name));
        let want = Some(("obs".to_string(), "otel".to_string()));
        assert_eq!(key("otel.obs.svc.cluster.local"), want);
        assert_eq!(key("otel.obs.svc"), want);
        assert_eq!(key("otel.obs"), want);
        assert_eq!(key("otel"), None);
        assert_eq!(key("collector.example.com"), None);
    }
}
