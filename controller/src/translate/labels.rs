//! Label selection, as Kubernetes selectors match.

use std::collections::BTreeMap;

/// True when every label of `selector` is on `labels`. An empty selector
/// selects everything; callers decide what an absent selector means.
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
