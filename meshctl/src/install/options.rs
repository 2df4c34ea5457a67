//! The choices of one `meshctl install`: what `--set key=value` may change, each key checked
//! against what the component it reaches accepts.

use std::fmt;

/// The options of one install; [`InstallOptions::default`] is what the manifests say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOptions {
    /// Namespace of the controller and the node proxies (also Istio's root namespace).
    pub namespace: String,
    /// Registry (and path) the images are pulled from: `<registry>/<component>:<tag>`.
    pub image_registry: String,
    /// Tag of every image.
    pub image_tag: String,
    /// Replicas of the controller Deployment.
    pub controller_replicas: u32,
    /// SPIFFE trust domain of the mesh's identities.
    pub trust_domain: String,
    /// The controller's log filter (`tracing` syntax).
    pub controller_log_level: String,
    /// The node proxy's and node agent's log filter (`tracing` syntax).
    pub ztunnel_log_level: String,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: "istio-system".to_owned(),
            image_registry: "ghcr.io/ambient-mesh".to_owned(),
            image_tag: "0.1.0".to_owned(),
            controller_replicas: 1,
            trust_domain: "cluster.local".to_owned(),
            controller_log_level: "info".to_owned(),
            ztunnel_log_level: "info".to_owned(),
        }
    }
}

/// Every key `--set` takes, with what it sets (listed in errors and `--help`).
pub const KEYS: &[(&str, &str)] = &[
    (
        "namespace",
        "namespace of the controller and ztunnel [istio-system]",
    ),
    (
        "image.registry",
        "registry of the images [ghcr.io/ambient-mesh]",
    ),
    ("image.tag", "tag of the images [0.1.0]"),
    ("controller.replicas", "controller replicas, 1 to 10 [1]"),
    ("trustDomain", "SPIFFE trust domain [cluster.local]"),
    ("controller.logLevel", "controller log filter [info]"),
    (
        "ztunnel.logLevel",
        "ztunnel and node agent log filter [info]",
    ),
];

/// Why a `--set` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// Not `key=value`.
    Malformed(String),
    /// A key no option has.
    UnknownKey(String),
    /// A value the key does not accept.
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What the key accepts.
        expected: &'static str,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(given) => write!(f, "--set {given:?}: expected key=value"),
            Self::UnknownKey(key) => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                write!(
                    f,
                    "--set {key}: unknown key; valid keys: {}",
                    known.join(", ")
                )
            }
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(f, "--set {key}={value}: {expected}"),
        }
    }
}

impl std::error::Error for OptionError {}

impl InstallOptions {
    /// The defaults with every `key=value` of `sets` applied in order (a later one wins).
    pub fn from_sets<S: AsRef<str>>(sets: &[S]) -> Result<Self, OptionError> {
        let mut options = Self::default();
        for set in sets {
            let set = set.as_ref();
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| OptionError::Malformed(set.to_owned()))?;
            options.set(key.trim(), value.trim())?;
        }
        Ok(options)
    }

    /// Sets one key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let bad = |expected| OptionError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        };
        match key {
            "namespace" if is_dns_label(value) => self.namespace = value.to_owned(),
            "namespace" => {
                return Err(bad(
                    "a namespace name: at most 63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit",
                ));
            }
            "image.registry" if is_registry(value) => {
                self.image_registry = value.trim_end_matches('/').to_owned()
            }
            "image.registry" => {
                return Err(bad(
                    "a registry and optional path, e.g. registry.example.com/mesh",
                ));
            }
            "image.tag" if is_tag(value) => self.image_tag = value.to_owned(),
            "image.tag" => {
                return Err(bad(
                    "an image tag: up to 128 letters, digits, '_', '.' and '-', not starting \
                     with '.' or '-'",
                ));
            }
            "controller.replicas" => match value.parse::<u32>() {
                Ok(n @ 1..=10) => self.controller_replicas = n,
                _ => return Err(bad("a whole number from 1 to 10")),
            },
            "trustDomain" if is_trust_domain(value) => self.trust_domain = value.to_owned(),
            "trustDomain" => {
                return Err(bad(
                    "a SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'",
                ));
            }
            "controller.logLevel" if is_log_filter(value) => {
                self.controller_log_level = value.to_owned()
            }
            "ztunnel.logLevel" if is_log_filter(value) => self.ztunnel_log_level = value.to_owned(),
            "controller.logLevel" | "ztunnel.logLevel" => {
                return Err(bad(
                    "a log filter: a level (error, warn, info, debug, trace, off) or \
                     target=level directives separated by ','",
                ));
            }
            _ => return Err(OptionError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }
}

/// An RFC 1123 label, as Kubernetes requires of namespace names.
fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// A registry host (with optional port) and path: the part of an image reference before
/// the image's own name.
fn is_registry(value: &str) -> bool {
    let value = value.trim_end_matches('/');
    !value.is_empty()
        && !value.starts_with('/')
        && !value.contains("//")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
}

/// The OCI distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

/// The SPIFFE spec's trust domain characters.
fn is_trust_domain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// What the components' `--log-level` accepts without surprise: comma-separated directives,
/// each a level or `target=level`. (`tracing`'s own parser would take any word as a target.)
fn is_log_filter(value: &str) -> bool {
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    let is_target = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
    };
    !value.is_empty()
        && value
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => is_target(target) && LEVELS.contains(&level),
                None => LEVELS.contains(&directive),
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sets_are_the_manifests_defaults() {
        let none: [&str; 0] = [];
        assert_eq!(
            InstallOptions::from_sets(&none).unwrap(),
            InstallOptions::default()
        );
    }

    #[test]
    fn every_key_sets_its_option() {
        let options = InstallOptions::from_sets(&[
            "namespace=mesh-system",
            "image.registry=registry.example.com:5000/mesh/",
            "image.tag=1.2.3-rc.1",
            "controller.replicas=3",
            "trustDomain=example.org",
            "controller.logLevel=controller=debug,info",
            "ztunnel.logLevel=warn",
        ])
        .unwrap();
        assert_eq!(
            options,
            InstallOptions {
                namespace: "mesh-system".to_owned(),
                image_registry: "registry.example.com:5000/mesh".to_owned(),
                image_tag: "1.2.3-rc.1".to_owned(),
                controller_replicas: 3,
                trust_domain: "example.org".to_owned(),
                controller_log_level: "controller=debug,info".to_owned(),
                ztunnel_log_level: "warn".to_owned(),
            }
        );
        // Every key of the list is one `set` knows.
        for (key, _) in KEYS {
            assert!(!matches!(
                InstallOptions::default().set(key, "\u{0}"),
                Err(OptionError::UnknownKey(_))
            ));
        }
    }

    #[test]
    fn a_later_set_wins() {
        let options = InstallOptions::from_sets(&["image.tag=a", "image.tag=b"]).unwrap();
        assert_eq!(options.image_tag, "b");
    }

    #[test]
    fn an_unknown_key_is_named_with_the_valid_ones() {
        let err = InstallOptions::from_sets(&["images.tag=1"]).unwrap_err();
        assert_eq!(err, OptionError::UnknownKey("images.tag".to_owned()));
        assert_eq!(
            err.to_string(),
            "--set images.tag: unknown key; valid keys: namespace, image.registry, image.tag, \
             controller.replicas, trustDomain, controller.logLevel, ztunnel.logLevel"
        );
    }

    #[test]
    fn a_set_without_a_value_is_malformed() {
        let err = InstallOptions::from_sets(&["namespace"]).unwrap_err();
        assert_eq!(err.to_string(), "--set \"namespace\": expected key=value");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (key, value) in [
            ("namespace", "Mesh"),
            ("namespace", "-mesh"),
            ("namespace", ""),
            ("image.registry", "/abs"),
            ("image.registry", "a b"),
            ("image.tag", ".hidden"),
            ("image.tag", "1:2"),
            ("controller.replicas", "0"),
            ("controller.replicas", "11"),
            ("controller.replicas", "two"),
            ("trustDomain", "Example.org"),
            ("trustDomain", "spiffe://x"),
            ("controller.logLevel", "verbose"),
            ("ztunnel.logLevel", "ztunnel=loud"),
            ("ztunnel.logLevel", ""),
        ] {
            let err = InstallOptions::from_sets(&[format!("{key}={value}")]).unwrap_err();
            match &err {
                OptionError::BadValue {
                    key: k, value: v, ..
                } => {
                    assert_eq!((k.as_str(), v.as_str()), (key, value));
                }
                other => panic!("{key}={value}: {other:?}"),
            }
            assert!(
                err.to_string()
                    .starts_with(&format!("--set {key}={value}: "))
            );
        }
    }
}
