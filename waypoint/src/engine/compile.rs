//! What compiling the controller's config shares across concerns: the refusal every part
//! reports ([`ConfigError`]) and the conversions of common protobuf fields. It depends on no
//! other engine module, so each concern can compile its own part of the config.

use std::time::Duration;

/// Why a waypoint config was refused (the previous one stays in force).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Converts a protobuf duration; negative or out-of-range values are refused.
pub(crate) fn duration(
    d: Option<&api::prost_types::Duration>,
    field: &str,
) -> Result<Option<Duration>, ConfigError> {
    let Some(d) = d else {
        return Ok(None);
    };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ConfigError(format!(
            "{field}: invalid duration {}s {}ns",
            d.seconds, d.nanos
        )));
    }
    Ok(Some(
        Duration::from_secs(d.seconds as u64) + Duration::from_nanos(d.nanos as u64),
    ))
}
