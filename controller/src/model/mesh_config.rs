//! Reading Istio's MeshConfig YAML (the `mesh` key of the `istio` ConfigMap) into the part
//! telemetry acts on, naming every field it holds that the mesh does not read.

use super::routes::DecodeError;
use super::telemetry::MeshConfig;

/// A MeshConfig decoded from its YAML, with the paths (`defaultConfig.holdApplicationUntil…`)
/// of the fields it holds that the mesh does not read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadMeshConfig {
    /// What is read.
    pub config: MeshConfig,
    /// Paths of what is not.
    pub unread: Vec<String>,
    /// For each extension provider, the keys naming its kind (`zipkin`, `opentelemetry`).
    pub provider_kinds: Vec<Vec<String>>,
}

/// Decodes MeshConfig YAML; the error names the field (relative to the YAML's root).
pub fn read_mesh_config(text: &str) -> Result<ReadMeshConfig, DecodeError> {
    let fail = |e: serde_yaml_ng::Error| {
        let (field, message) = super::yaml_error::split_error(&e.to_string());
        DecodeError { field, message }
    };
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(fail)?;
    if value.is_null() {
        return Ok(ReadMeshConfig::default());
    }
    let mut unread = Vec::new();
    let decoder = serde_yaml_ng::Deserializer::from_str(text);
    let config: MeshConfig = serde_ignored::deserialize(decoder, |path| {
        unread.push(super::unread_fields::render(&path));
    })
    .map_err(fail)?;
    let provider_kinds = value
        .get("extensionProviders")
        .and_then(serde_yaml_ng::Value::as_sequence)
        .map(|providers| {
            providers
                .iter()
                .map(|p| {
                    p.as_mapping()
                        .into_iter()
                        .flat_map(|m| m.keys())
                        .filter_map(serde_yaml_ng::Value::as_str)
                        .filter(|k| *k != "name")
                        .map(str::to_owned)
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ReadMeshConfig {
        config,
        unread,
        provider_kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_config_reads_providers_and_names_what_it_does_not_read() {
        let read = read_mesh_config(
            "extensionProviders:\n\
             - name: otel\n  opentelemetry: {service: otel.obs.svc.cluster.local, port: 4317, \
             maxTagLength: 99, resourceDetectors: {}}\n\
             - name: zipkin\n  zipkin: {service: zipkin.obs.svc, port: 9411}\n\
             defaultProviders: {tracing: [otel]}\n\
             defaultConfig: {tracing: {sampling: 5.0}, holdApplicationUntilProxyStarts: true}\n\
             accessLogFile: /dev/stdout\n",
        )
        .unwrap();
        let otel = read.config.extension_providers[0]
            .opentelemetry
            .clone()
            .unwrap();
        assert_eq!(
            (otel.service.as_str(), otel.port, otel.max_tag_length),
            ("otel.obs.svc.cluster.local", 4317, Some(99))
        );
        assert_eq!(read.config.default_providers.tracing, ["otel"]);
        assert_eq!(read.config.default_config.tracing.sampling, Some(5.0));
        assert_eq!(
            read.unread,
            [
                "extensionProviders[0].opentelemetry.resourceDetectors",
                "extensionProviders[1].zipkin",
                "defaultConfig.holdApplicationUntilProxyStarts",
                "accessLogFile"
            ]
        );
        assert_eq!(read.provider_kinds, [["opentelemetry"], ["zipkin"]]);
    }

    #[test]
    fn bad_mesh_config_names_the_field() {
        let err = read_mesh_config("defaultConfig:\n  tracing:\n    sampling: lots\n").unwrap_err();
        assert_eq!(err.field, "defaultConfig.tracing.sampling");
        let err = read_mesh_config("extensionProviders: [\n").unwrap_err();
        assert!(!err.message.is_empty());
        assert_eq!(read_mesh_config("").unwrap(), ReadMeshConfig::default());
    }
}
