//! Istio's metric overrides (`Telemetry` `metrics[].overrides[]`) for the request metrics of
//! a service: a metric disabled, labels removed from its series (REMOVE) or set to a fixed
//! value (UPSERT, a new label when it is not one of Istio's). Overrides apply in order, a
//! later one winning; ALL_METRICS applies to each metric.

use std::sync::Arc;

use api::waypoint as pb;

use super::super::compile::ConfigError;

/// Istio's names of the request metrics, in the order [`MetricOverrides::families`] keeps.
pub(crate) const METRICS: [&str; 4] = [
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
];

/// Istio's metrics a waypoint does not record here (gRPC message counts; TCP metrics come
/// from the transport): overrides of them change nothing, which the controller's analysis
/// reports.
const NOT_RECORDED: [&str; 6] = [
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
];

/// What the overrides do to one metric.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FamilyOverride {
    /// Not reported.
    pub disabled: bool,
    /// Labels left out.
    pub remove: Vec<String>,
    /// Labels set to a value, in the order first set.
    pub upsert: Vec<(String, String)>,
}

impl FamilyOverride {
    fn apply(&mut self, o: &pb::MetricOverride) {
        self.disabled = o.disabled;
        for tag in &o.remove_tags {
            self.upsert.retain(|(name, _)| name != tag);
            if !self.remove.contains(tag) {
                self.remove.push(tag.clone());
            }
        }
        for h in &o.upsert_tags {
            self.remove.retain(|name| *name != h.name);
            match self.upsert.iter_mut().find(|(name, _)| *name == h.name) {
                Some(entry) => entry.1 = h.value.clone(),
                None => self.upsert.push((h.name.clone(), h.value.clone())),
            }
        }
    }

    /// The label pairs of a series with these overrides applied.
    pub(crate) fn relabel<'a>(
        &'a self,
        pairs: &[(&'a str, &'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str, &'a str)> {
        let mut out: Vec<_> = pairs
            .iter()
            .filter(|(name, _, _)| !self.remove.iter().any(|r| r == name))
            .map(
                |&(name, value, default)| match self.upsert.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => (name, v.as_str(), default),
                    None => (name, value, default),
                },
            )
            .collect();
        for (name, value) in &self.upsert {
            if !pairs.iter().any(|(n, _, _)| n == name) {
                out.push((name.as_str(), value.as_str(), ""));
            }
        }
        out
    }
}

/// The overrides of one service's request metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricOverrides {
    /// Per metric, in [`METRICS`] order.
    pub families: [FamilyOverride; 4],
}

impl MetricOverrides {
    /// Compiles a service's overrides; `None` when it has none.
    pub(crate) fn compile(
        list: &[pb::MetricOverride],
        field: &str,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        if list.is_empty() {
            return Ok(None);
        }
        let mut out = Self::default();
        for (i, o) in list.iter().enumerate() {
            let all = o.metric == "ALL_METRICS";
            let one = METRICS.iter().position(|m| *m == o.metric);
            if !all && one.is_none() && !NOT_RECORDED.contains(&o.metric.as_str()) {
                return Err(ConfigError(format!(
                    "{field}[{i}].metric: unknown metric {:?}",
                    o.metric
                )));
            }
            for (j, family) in out.families.iter_mut().enumerate() {
                if all || one == Some(j) {
                    family.apply(o);
                }
            }
        }
        Ok(Some(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(
        metric: &str,
        disabled: bool,
        remove: &[&str],
        upsert: &[(&str, &str)],
    ) -> pb::MetricOverride {
        pb::MetricOverride {
            metric: metric.into(),
            disabled,
            remove_tags: remove.iter().map(|s| s.to_string()).collect(),
            upsert_tags: upsert
                .iter()
                .map(|(n, v)| pb::Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn overrides_apply_in_order_per_metric() {
        let list = [
            o(
                "ALL_METRICS",
                false,
                &["request_protocol"],
                &[("team", "a")],
            ),
            o(
                "REQUEST_COUNT",
                false,
                &[],
                &[("request_protocol", "h"), ("team", "b")],
            ),
            o("REQUEST_SIZE", true, &[], &[]),
            o("GRPC_REQUEST_MESSAGES", true, &[], &[]),
        ];
        let m = MetricOverrides::compile(&list, "m").unwrap().unwrap();
        let count = &m.families[0];
        assert!(count.remove.is_empty());
        assert_eq!(
            count.upsert,
            vec![
                ("team".into(), "b".into()),
                ("request_protocol".into(), "h".into())
            ]
        );
        assert_eq!(m.families[1].remove, vec!["request_protocol".to_string()]);
        assert!(m.families[2].disabled && !m.families[3].disabled);
        let pairs = [
            ("reporter", "waypoint", ""),
            ("request_protocol", "http", "http"),
        ];
        assert_eq!(
            m.families[1].relabel(&pairs),
            vec![("reporter", "waypoint", ""), ("team", "a", "")]
        );
        assert_eq!(
            count.relabel(&pairs),
            vec![
                ("reporter", "waypoint", ""),
                ("request_protocol", "h", "http"),
                ("team", "b", "")
            ]
        );
        let e = MetricOverrides::compile(&[o("REQUEST_COUNTS", true, &[], &[])], "m");
        assert_eq!(
            e.unwrap_err().0,
            "m[0].metric: unknown metric \"REQUEST_COUNTS\""
        );
        assert_eq!(MetricOverrides::compile(&[], "m").unwrap(), None);
    }
}
