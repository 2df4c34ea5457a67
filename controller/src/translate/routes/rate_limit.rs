//! Local rate limits: Istio EnvoyFilters that insert Envoy's
//! `envoy.filters.http.local_ratelimit` with a token bucket, and the
//! first-class form, a Service annotation:
//!
//! ```text
//! mesh.io/rate-limit: "100/s"              100 requests per second, burst 100
//! mesh.io/rate-limit: "100/s, burst 200"   ... with bursts of up to 200
//! mesh.io/rate-limit: "20/10s"             20 requests every 10 seconds
//! ```

use std::collections::BTreeMap;

use api::prost_types::Duration;
use api::waypoint::LocalRateLimit;
use serde_json::Value;

use super::catalog::{At, Invalid, Obj};
use super::values;
use crate::model::routes::EnvoyFilter;
use crate::model::{PolicyTargetReference, Problem};

/// Service annotation carrying a rate limit.
pub const RATE_LIMIT_ANNOTATION: &str = "mesh.io/rate-limit";
/// Envoy's name of the local rate limit filter.
const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
/// Type URL of its configuration.
const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
/// Type URLs of the wrapper Istio users put around it.
const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// Whom an EnvoyFilter's limit applies to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LimitTarget {
    /// Services whose pods carry these labels (in the filter's namespace,
    /// or every namespace for the root namespace); empty: all of them.
    Selector(BTreeMap<String, String>),
    /// Targets by reference (Service, or a waypoint Gateway).
    Refs(Vec<PolicyTargetReference>),
}

/// What one EnvoyFilter contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FilterLimit {
    /// The object.
    pub obj: Obj,
    /// The limit; `None` when the filter holds no (enforced) rate limit.
    pub limit: Option<LocalRateLimit>,
    /// Where it applies.
    pub target: LimitTarget,
}

/// Translates an EnvoyFilter: only its local rate limit is read.
pub(crate) fn envoy_filter(
    obj: &Obj,
    ef: &EnvoyFilter,
    warnings: &mut Vec<Problem>,
) -> Result<FilterLimit, Invalid> {
    let target = if ef.spec.target_refs.is_empty() {
        LimitTarget::Selector(
            ef.spec
                .workload_selector
                .as_ref()
                .map(|s| s.labels.clone())
                .unwrap_or_default(),
        )
    } else {
        LimitTarget::Refs(ef.spec.target_refs.clone())
    };
    let mut limit = None;
    let mut ignored = 0;
    for (i, p) in ef.spec.config_patches.iter().enumerate() {
        let f = format!("spec.configPatches[{i}].patch.value");
        let Some(patch) = &p.patch else {
            ignored += 1;
            continue;
        };
        // HTTP_FILTER patches insert the filter; HTTP_ROUTE / VIRTUAL_HOST
        // patches configure it per route in typed_per_filter_config.
        let config = match p.apply_to.as_str() {
            "HTTP_FILTER"
                if patch.value.get("name").and_then(Value::as_str) == Some(LOCAL_RATELIMIT) =>
            {
                field(&patch.value, "typed_config").map(|c| (c, format!("{f}.typed_config")))
            }
            "HTTP_ROUTE" | "VIRTUAL_HOST" => field(&patch.value, "typed_per_filter_config")
                .and_then(|m| m.get(LOCAL_RATELIMIT))
                .map(|c| (c, format!("{f}.typed_per_filter_config[{LOCAL_RATELIMIT}]"))),
            _ => None,
        };
        let Some((config, cf)) = config else {
            ignored += 1;
            continue;
        };
        if limit.is_none() {
            limit = bucket(config, &cf, obj, warnings)?;
        }
    }
    if ignored > 0 {
        warnings.push(obj.problem(
            "spec.configPatches",
            format!("warning: {ignored} patch(es) ignored; only local rate limits are translated"),
        ));
    }
    if let Some(l) = &mut limit {
        l.source = Some(obj.source());
    }
    Ok(FilterLimit {
        obj: obj.clone(),
        limit,
        target,
    })
}

/// A field by its proto JSON name or its snake_case name.
fn field<'a>(v: &'a Value, snake: &str) -> Option<&'a Value> {
    v.get(snake).or_else(|| v.get(camel(snake)))
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The token bucket of a `LocalRateLimit` configuration, unwrapping a
/// `TypedStruct`. `None` when the filter is never enforced.
fn bucket(
    config: &Value,
    field_path: &str,
    obj: &Obj,
    warnings: &mut Vec<Problem>,
) -> Result<Option<LocalRateLimit>, Invalid> {
    let ty = config
        .get("@type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (inner, f) = if TYPED_STRUCTS.contains(&ty) {
        let inner_type = field(config, "type_url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if inner_type != LOCAL_RATELIMIT_TYPE {
            return Err(Invalid::new(
                format!("{field_path}.type_url"),
                format!("expected {LOCAL_RATELIMIT_TYPE}"),
            ));
        }
        let value = config
            .get("value")
            .ok_or_else(|| Invalid::new(format!("{field_path}.value"), "missing"))?;
        (value, format!("{field_path}.value"))
    } else if ty == LOCAL_RATELIMIT_TYPE {
        (config, field_path.to_string())
    } else {
        return Err(Invalid::new(
            format!("{field_path}.@type"),
            format!("{ty:?} is not {LOCAL_RATELIMIT_TYPE}"),
        ));
    };
    let tb = field(inner, "token_bucket")
        .ok_or_else(|| Invalid::new(format!("{f}.token_bucket"), "missing"))?;
    let tf = format!("{f}.token_bucket");
    let count = |name: &str, default: Option<u32>| -> Result<u32, Invalid> {
        match field(tb, name) {
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Invalid::new(
                        format!("{tf}.{name}"),
                        format!("{v} is not a positive count"),
                    )
                }),
            None => default.ok_or_else(|| Invalid::new(format!("{tf}.{name}"), "missing")),
        }
    };
    let max_tokens = count("max_tokens", None)?;
    let tokens_per_fill = count("tokens_per_fill", Some(1))?;
    let interval = field(tb, "fill_interval")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Invalid::new(
                format!("{tf}.fill_interval"),
                "missing (a duration such as 60s)",
            )
        })?;
    let fill_interval = values::positive_duration(interval).at(&format!("{tf}.fill_interval"))?;
    // Envoy applies the filter to no request unless both fractions say so.
    for name in ["filter_enabled", "filter_enforced"] {
        let percent = runtime_percent(field(inner, name), &format!("{f}.{name}"))?;
        if percent == 0.0 {
            warnings.push(obj.problem(
                format!("{f}.{name}"),
                "warning: unset or 0 %, so Envoy would never enforce this limit; ignored",
            ));
            return Ok(None);
        }
        if percent < 100.0 {
            warnings.push(obj.problem(
                format!("{f}.{name}"),
                format!(
                    "warning: {percent} % is not supported; the limit applies to every request"
                ),
            ));
        }
    }
    Ok(Some(LocalRateLimit {
        max_tokens,
        tokens_per_fill,
        fill_interval: Some(fill_interval),
        source: None,
    }))
}

/// A `RuntimeFractionalPercent` as a percentage (0 when absent).
fn runtime_percent(v: Option<&Value>, f: &str) -> Result<f64, Invalid> {
    let Some(dv) = v.and_then(|v| field(v, "default_value")) else {
        return Ok(0.0);
    };
    let numerator = dv.get("numerator").and_then(Value::as_u64).unwrap_or(0) as f64;
    let denominator = match dv
        .get("denominator")
        .and_then(Value::as_str)
        .unwrap_or("HUNDRED")
    {
        "HUNDRED" => 100.0,
        "TEN_THOUSAND" => 10_000.0,
        "MILLION" => 1_000_000.0,
        other => {
            return Err(Invalid::new(
                format!("{f}.default_value.denominator"),
                format!("unknown denominator {other:?} (HUNDRED, TEN_THOUSAND, MILLION)"),
            ));
        }
    };
    Ok((numerator * 100.0 / denominator).min(100.0))
}

/// Parses the annotation form: `<count>/<period>[, burst <size>]`, where the
/// period is `s`, `m`, `h` or a duration (`10s`).
pub(crate) fn annotation(text: &str) -> Result<LocalRateLimit, String> {
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not a rate limit ({why}; e.g. \"100/s\" or \"100/s, burst 200\")"
        ))
    };
    let (rate, burst) = match text.split_once(',') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (text.trim(), None),
    };
    let Some((count, period)) = rate.split_once('/') else {
        return bad("missing \"/\"");
    };
    let Some(tokens_per_fill) = count.trim().parse::<u32>().ok().filter(|n| *n > 0) else {
        return bad("the count must be a positive integer");
    };
    let period = period.trim();
    let fill_interval = match period {
        "s" => Duration {
            seconds: 1,
            nanos: 0,
        },
        "m" => Duration {
            seconds: 60,
            nanos: 0,
        },
        "h" => Duration {
            seconds: 3600,
            nanos: 0,
        },
        other => match values::positive_duration(other) {
            Ok(d) => d,
            Err(_) => return bad("the period must be s, m, h or a duration"),
        },
    };
    let max_tokens = match burst {
        None => tokens_per_fill,
        Some(b) => match b
            .strip_prefix("burst")
            .map(str::trim)
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) if n >= tokens_per_fill => n,
            Some(_) => return bad("the burst must be at least the count"),
            None => return bad("expected \"burst <n>\" after the comma"),
        },
    };
    Ok(LocalRateLimit {
        max_tokens,
        tokens_per_fill,
        fill_interval: Some(fill_interval),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_forms() {
        let l = annotation("100/s, burst 200").unwrap();
        assert_eq!((l.max_tokens, l.tokens_per_fill), (200, 100));
        assert_eq!(l.fill_interval.unwrap().seconds, 1);
        let l = annotation("20/10s").unwrap();
        assert_eq!((l.max_tokens, l.tokens_per_fill), (20, 20));
        assert_eq!(l.fill_interval.unwrap().seconds, 10);
        assert_eq!(
            annotation(" 5 / m ")
                .unwrap()
                .fill_interval
                .unwrap()
                .seconds,
            60
        );
        for bad in [
            "",
            "100",
            "0/s",
            "x/s",
            "10/fortnight",
            "10/s, 20",
            "10/s, burst 5",
            "10/0s",
        ] {
            assert!(annotation(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(camel("token_bucket"), "tokenBucket");
        assert_eq!(camel("max_tokens"), "maxTokens");
    }
}
