//! SMI TrafficSplit → the weighted destinations of a service's default
//! route.

use api::waypoint::WeightedDestination;

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::{parts, values};
use crate::model::routes::TrafficSplit;

/// What one TrafficSplit contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Split {
    /// The object.
    pub obj: Obj,
    /// The apex service.
    pub service: ServiceKey,
    /// Backends with normalised weights (zero-weight backends left out).
    pub destinations: Vec<WeightedDestination>,
}

/// Translates a TrafficSplit (v1alpha1 to v1alpha4: the shapes only differ
/// in how weights are written).
pub(crate) fn traffic_split(
    obj: &Obj,
    ts: &TrafficSplit,
    catalog: &Catalog<'_>,
) -> Result<Split, Invalid> {
    if !ts.spec.matches.is_empty() {
        return Err(Invalid::new(
            "spec.matches",
            "splits limited to HTTPRouteGroup matches are not supported; use an HTTPRoute",
        ));
    }
    let service = catalog.require_host(&ts.spec.service, &obj.namespace, "spec.service")?;
    if ts.spec.backends.is_empty() {
        return Err(Invalid::new(
            "spec.backends",
            "at least one backend is required",
        ));
    }
    let mut backends = Vec::new();
    let mut raw = Vec::new();
    for (i, b) in ts.spec.backends.iter().enumerate() {
        let f = format!("spec.backends[{i}]");
        let key = catalog.require_host(&b.service, &obj.namespace, format!("{f}.service"))?;
        raw.push(values::weight_milli(&b.weight).at(&format!("{f}.weight"))?);
        backends.push(key.destination(0, ""));
    }
    Ok(Split {
        obj: obj.clone(),
        service,
        destinations: parts::weighted(backends, &raw, "spec.backends")?,
    })
}
