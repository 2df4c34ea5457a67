//! The telemetry of one service at its waypoint: the Telemetry resources that apply, from
//! least to most specific (the root namespace's, the service's namespace's, those targeting
//! the waypoint Gateway, those targeting the Service), merged as Istio merges them: a more
//! specific resource overrides what it sets and inherits the rest; custom tags merge by name;
//! metric overrides apply in order, the most specific last.

use std::collections::BTreeMap;

use api::waypoint::{CustomTag, Telemetry, Tracing};

use super::super::bindings::WaypointKey;
use super::super::service_key::ServiceKey;
use super::mesh::MeshSettings;
use super::resources::{Provider, Scope, Settings};
use crate::model::{Problem, WARNING_PREFIX};

/// Resolves services' telemetry from every Telemetry's settings.
pub(crate) struct Resolver<'a> {
    /// The mesh config's providers and defaults.
    pub mesh: &'a MeshSettings,
    /// Every Telemetry in force, oldest first.
    pub settings: &'a [Settings],
    /// The namespace whose namespace-wide Telemetry applies mesh-wide.
    pub root_namespace: &'a str,
}

impl Resolver<'_> {
    /// The Telemetry resources that apply to `service` at `waypoint`, least specific first.
    fn chain(&self, waypoint: &WaypointKey, service: &ServiceKey) -> Vec<&Settings> {
        let namespace_wide = |ns: &str| -> Vec<&Settings> {
            self.settings
                .iter()
                .filter(|s| s.obj.namespace == ns && s.scopes.contains(&Scope::Namespace))
                .collect()
        };
        let mut chain = namespace_wide(self.root_namespace);
        if service.namespace != self.root_namespace {
            chain.extend(namespace_wide(&service.namespace));
        }
        let gateway = Scope::Gateway(waypoint.name.clone());
        chain.extend(
            self.settings
                .iter()
                .filter(|s| s.obj.namespace == waypoint.namespace && s.scopes.contains(&gateway)),
        );
        let target = Scope::Service(service.name.clone());
        chain.extend(
            self.settings
                .iter()
                .filter(|s| s.obj.namespace == service.namespace && s.scopes.contains(&target)),
        );
        chain
    }

    /// The telemetry of `service` at `waypoint`; `None` when nothing configures it (no
    /// Telemetry applies and the mesh config names no default tracing provider).
    pub fn resolve(
        &self,
        waypoint: &WaypointKey,
        service: &ServiceKey,
        problems: &mut Vec<Problem>,
    ) -> Option<Telemetry> {
        let chain = self.chain(waypoint, service);
        if chain.is_empty() && self.mesh.default_tracing.is_none() {
            return None;
        }
        let mut provider: Option<&Provider> = None;
        let mut sampling = None;
        let mut disable_span_reporting = None;
        let mut tags: BTreeMap<&str, &CustomTag> = BTreeMap::new();
        let mut last_tracing: Option<&Settings> = None;
        let mut access_log_disabled = None;
        let mut telemetry = Telemetry::default();
        for s in &chain {
            telemetry.sources.push(s.obj.source());
            if let Some(t) = &s.tracing {
                last_tracing = Some(s);
                provider = t.provider.as_ref().or(provider);
                sampling = t.sampling.or(sampling);
                disable_span_reporting = t.disable_span_reporting.or(disable_span_reporting);
                for tag in &t.custom_tags {
                    tags.insert(&tag.tag, tag);
                }
            }
            access_log_disabled = s.access_log_disabled.or(access_log_disabled);
            telemetry
                .metric_overrides
                .extend(s.overrides.iter().cloned());
        }
        // An unusable provider was reported on the Telemetry naming it.
        let named = provider.is_some();
        let provider = match provider {
            Some(Provider::Named(name)) => Some(name.clone()),
            Some(Provider::Unusable) => None,
            None => self.mesh.default_tracing.clone(),
        };
        if let (None, false, Some(s)) = (&provider, named, last_tracing) {
            problems.push(s.obj.problem(
                "spec.tracing[0].providers",
                format!(
                    "{WARNING_PREFIX}no provider: neither this Telemetry, nor one it inherits \
                     from, nor the mesh config's defaultProviders.tracing names one, so no spans \
                     are recorded for Service {service}"
                ),
            ));
        }
        telemetry.tracing = provider.map(|provider| Tracing {
            provider,
            random_sampling_percentage: sampling.unwrap_or(self.mesh.default_sampling),
            custom_tags: tags.into_values().cloned().collect(),
            disable_span_reporting: disable_span_reporting.unwrap_or(false),
        });
        telemetry.access_log_disabled = access_log_disabled.unwrap_or(false);
        Some(telemetry)
    }
}
