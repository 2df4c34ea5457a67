//! Sums over the Prometheus text the mesh's proxies serve on `/metrics`.

use prometheus_registry::scrape;

/// Sum of metric `name` over the samples of `text` carrying every label in `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    scrape::sum(&scrape::parse(text), name, filter)
}

/// `istio_requests_total` summed over the samples matching `filter`.
pub fn requests_total(text: &str, filter: &[(&str, &str)]) -> f64 {
    metric_sum(text, "istio_requests_total", filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_pick_the_metric_and_labels() {
        let text = "istio_requests_total{response_code=\"200\",destination_service_name=\"orders\"} 7\n\
                    istio_requests_total{response_code=\"503\",destination_service_name=\"orders\"} 3\n\
                    istio_requests_total{response_code=\"200\",destination_service_name=\"other\"} 100\n";
        assert_eq!(
            requests_total(text, &[("destination_service_name", "orders")]),
            10.0
        );
        assert_eq!(
            metric_sum(text, "istio_requests_total", &[("response_code", "503")]),
            3.0
        );
    }
}
