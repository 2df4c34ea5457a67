//! The CA's signing material in Kubernetes Secrets of the root namespace, where istiod keeps
//! it, so an existing Istio installation's CA carries over and vice versa:
//!
//! - `cacerts` (plug-in CA, provided by the operator) wins when present: `ca-cert.pem`,
//!   `ca-key.pem`, `root-cert.pem` and optionally `cert-chain.pem`; or the cert-manager
//!   layout `tls.crt`, `tls.key`, `ca.crt` that istiod also accepts;
//! - otherwise `istio-ca-secret` (type `istio.io/ca-root`) holds the self-signed root in
//!   `ca-cert.pem` and its key in `ca-key.pem`. It is created on first start and read back
//!   afterwards; `root-cert.pem`, when not empty, adds roots to the published bundle.
//!
//! Only a 404 leads to generating a root: any other failure to read stops the start, so a
//! transient API error can never replace the root every workload trusts. With several
//! replicas only the leader generates it ([`load_as_replica`]).

use std::collections::BTreeMap;
use std::time::Duration;

use hbone::Authority;
use hbone::cert::{certificate_to_pem, certificates_from_pem};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use super::error::CaError;
use super::store::{self, CA_CERT, CA_KEY, CERT_CHAIN, Origin, ROOT_CERT};
use crate::leader::Leadership;

/// The self-signed root's Secret, as istiod names it.
pub const CA_SECRET: &str = "istio-ca-secret";
/// The operator's plug-in CA Secret, as istiod names it.
pub const PLUGGED_IN_SECRET: &str = "cacerts";
/// The type istiod gives its root Secret.
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";

/// The ConfigMap through which node proxies (and Istio's) trust the mesh roots.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";

/// Publishes the trust bundle as `ROOT_CONFIGMAP` (key `root-cert.pem`) in `namespace`, where
/// the ztunnel DaemonSet mounts it to verify the controller. Server-side apply: created on
/// first start, rewritten only when the roots change.
pub async fn publish_roots(
    client: kube::Client,
    namespace: &str,
    roots_pem: &[String],
) -> Result<(), CaError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    api.patch(
        ROOT_CONFIGMAP,
        &PatchParams::apply(crate::field_manager::FIELD_MANAGER).force(),
        &Patch::Apply(root_configmap(namespace, roots_pem)),
    )
    .await
    .map(|_| ())
    .map_err(|e| kube_error(namespace, ROOT_CONFIGMAP, e))
}

/// The ConfigMap carrying `roots_pem`, concatenated.
pub fn root_configmap(namespace: &str, roots_pem: &[String]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT.to_string(),
            roots_pem.concat(),
        )])),
        ..ConfigMap::default()
    }
}

/// Loads the CA from the Secrets of `namespace`, generating and storing a root on first start.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    trust_domain: &str,
) -> Result<(Authority, Origin), CaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    // Twice at most: when another replica creates the Secret first, read theirs.
    for _ in 0..2 {
        if let Some(loaded) = load_existing(&api, namespace).await? {
            return Ok(loaded);
        }
        let authority = Authority::generate_root(trust_domain, store::ROOT_TTL)?;
        match api
            .create(&PostParams::default(), &ca_secret(namespace, &authority))
            .await
        {
            Ok(_) => return Ok((authority, Origin::Generated)),
            Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
            Err(e) => return Err(kube_error(namespace, CA_SECRET, e)),
        }
    }
    Err(bad(
        namespace,
        CA_SECRET,
        "created concurrently, yet not readable",
    ))
}

/// Loads the CA as one replica among several: only the leader creates the root; a follower
/// reads the leader's Secret, waiting (checking every `poll`) until it exists or this replica
/// leads. Creation is a create, never an overwrite, so even a leader deposed meanwhile
/// cannot store a second root: it reads the first one instead.
pub async fn load_as_replica(
    client: kube::Client,
    namespace: &str,
    trust_domain: &str,
    mut leadership: Leadership,
    poll: Duration,
) -> Result<(Authority, Origin), CaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut told = false;
    loop {
        if leadership.is_leader() {
            return load_or_create(client, namespace, trust_domain).await;
        }
        if let Some(loaded) = load_existing(&api, namespace).await? {
            return Ok(loaded);
        }
        if !std::mem::replace(&mut told, true) {
            tracing::info!(
                secret = %format!("{namespace}/{CA_SECRET}"),
                "waiting for the leader to create the CA root"
            );
        }
        tokio::select! {
            () = leadership.changed() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// The CA of the plug-in Secret, else of the root's Secret; `None` when neither exists.
async fn load_existing(
    api: &Api<Secret>,
    namespace: &str,
) -> Result<Option<(Authority, Origin)>, CaError> {
    if let Some(secret) = get(api, namespace, PLUGGED_IN_SECRET).await?
        && let Some(authority) = from_plugged_in(namespace, &secret)?
    {
        return Ok(Some((authority, Origin::PluggedIn)));
    }
    match get(api, namespace, CA_SECRET).await? {
        Some(secret) => Ok(Some((
            from_ca_secret(namespace, &secret)?,
            Origin::Reloaded,
        ))),
        None => Ok(None),
    }
}

async fn get(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<Secret>, CaError> {
    api.get_opt(name)
        .await
        .map_err(|e| kube_error(namespace, name, e))
}

fn kube_error(namespace: &str, name: &str, source: kube::Error) -> CaError {
    CaError::Kubernetes {
        secret: format!("{namespace}/{name}"),
        source: Box::new(source),
    }
}

fn bad(namespace: &str, name: &str, reason: impl Into<String>) -> CaError {
    CaError::BadSecret {
        secret: format!("{namespace}/{name}"),
        reason: reason.into(),
    }
}

/// The text of `key` in the Secret's data, if present and not empty.
fn text<'a>(
    data: &'a BTreeMap<String, ByteString>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<&'a str>, CaError> {
    match data.get(key) {
        None => Ok(None),
        Some(ByteString(bytes)) if bytes.is_empty() => Ok(None),
        Some(ByteString(bytes)) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| bad(namespace, name, format!("{key} is not PEM text"))),
    }
}

/// The plug-in CA of a `cacerts` Secret; `None` when it holds neither layout.
pub fn from_plugged_in(namespace: &str, secret: &Secret) -> Result<Option<Authority>, CaError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let get = |key| text(data, namespace, PLUGGED_IN_SECRET, key);
    let require = |key: &str, value| required(namespace, key, value);
    let (key, cert, chain, roots) = if data.contains_key(CA_CERT) || data.contains_key(CA_KEY) {
        (
            require(CA_KEY, get(CA_KEY)?)?,
            require(CA_CERT, get(CA_CERT)?)?,
            get(CERT_CHAIN)?,
            require(ROOT_CERT, get(ROOT_CERT)?)?,
        )
    } else if data.contains_key("tls.crt") || data.contains_key("tls.key") {
        (
            require("tls.key", get("tls.key")?)?,
            require("tls.crt", get("tls.crt")?)?,
            None,
            require("ca.crt", get("ca.crt")?)?,
        )
    } else {
        return Ok(None);
    };
    store::plugged_in_from_pem(key, cert, chain, roots).map(Some)
}

fn required<'a>(namespace: &str, key: &str, value: Option<&'a str>) -> Result<&'a str, CaError> {
    value.ok_or_else(|| bad(namespace, PLUGGED_IN_SECRET, format!("{key} is missing")))
}

/// The self-signed root of an `istio-ca-secret`.
pub fn from_ca_secret(namespace: &str, secret: &Secret) -> Result<Authority, CaError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let get = |key| text(data, namespace, CA_SECRET, key);
    let missing = |key: &str| bad(namespace, CA_SECRET, format!("{key} is missing"));
    let key = get(CA_KEY)?.ok_or_else(|| missing(CA_KEY))?;
    let cert = get(CA_CERT)?.ok_or_else(|| missing(CA_CERT))?;
    // The signing root first, then any other published root.
    let own = certificates_from_pem(cert, "CA root")?;
    let mut roots: String = own.iter().map(certificate_to_pem).collect();
    if let Some(extra) = get(ROOT_CERT)? {
        for der in certificates_from_pem(extra, "CA roots")? {
            if !own.contains(&der) {
                roots.push_str(&certificate_to_pem(&der));
            }
        }
    }
    Ok(Authority::from_pem(key, cert, &roots)?)
}

/// The `istio-ca-secret` holding `authority`, in istiod's layout.
pub fn ca_secret(namespace: &str, authority: &Authority) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let data = BTreeMap::from([
        (CA_CERT.to_string(), bytes(&authority.root_pem())),
        (CA_KEY.to_string(), bytes(authority.key_pem())),
        // Present and empty, as istiod writes them.
        (CERT_CHAIN.to_string(), bytes("")),
        (ROOT_CERT.to_string(), bytes("")),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Authority {
        Authority::generate_root("cluster.local", store::ROOT_TTL).unwrap()
    }

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn root_configmap_carries_every_root_under_istio_key() {
        let (a, b) = (root(), root());
        let roots = [a.roots_pem().concat(), b.roots_pem().concat()];
        let cm = root_configmap("istio-system", &roots);
        assert_eq!(cm.metadata.name.as_deref(), Some(ROOT_CONFIGMAP));
        let pem = &cm.data.as_ref().unwrap()[ROOT_CERT];
        assert_eq!(certificates_from_pem(pem, "roots").unwrap().len(), 2);
    }

    #[test]
    fn ca_secret_round_trips_in_istio_layout() {
        let authority = root();
        let s = ca_secret("istio-system", &authority);
        assert_eq!(s.type_.as_deref(), Some(CA_SECRET_TYPE));
        assert_eq!(s.metadata.name.as_deref(), Some(CA_SECRET));
        let data = s.data.as_ref().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT]);
        let back = from_ca_secret("istio-system", &s).unwrap();
        assert_eq!(back.roots(), authority.roots());
        assert_eq!(back.key_pem(), authority.key_pem());
    }

    #[test]
    fn ca_secret_publishes_extra_roots_after_its_own() {
        let (signer, next) = (root(), root());
        let s = secret(&[
            (CA_CERT, &signer.root_pem()),
            (CA_KEY, signer.key_pem()),
            (
                ROOT_CERT,
                &format!("{}{}", next.root_pem(), signer.root_pem()),
            ),
        ]);
        let back = from_ca_secret("ns", &s).unwrap();
        assert_eq!(
            back.roots(),
            [signer.roots()[0].clone(), next.roots()[0].clone()]
        );
    }

    #[test]
    fn ca_secret_without_key_is_refused() {
        let s = secret(&[(CA_CERT, &root().root_pem())]);
        let err = from_ca_secret("ns", &s).unwrap_err().to_string();
        assert!(
            err.contains("ns/istio-ca-secret") && err.contains(CA_KEY),
            "{err}"
        );
    }

    #[test]
    fn plugged_in_layouts() {
        let ca = root();
        let istio = secret(&[
            (CA_CERT, &ca.root_pem()),
            (CA_KEY, ca.key_pem()),
            (ROOT_CERT, &ca.root_pem()),
            (CERT_CHAIN, &ca.root_pem()),
        ]);
        let loaded = from_plugged_in("ns", &istio).unwrap().unwrap();
        assert_eq!(loaded.roots(), ca.roots());
        let cert_manager = secret(&[
            ("tls.crt", &ca.root_pem()),
            ("tls.key", ca.key_pem()),
            ("ca.crt", &ca.root_pem()),
        ]);
        assert!(from_plugged_in("ns", &cert_manager).unwrap().is_some());
        // Neither layout: not a plug-in CA.
        assert!(
            from_plugged_in("ns", &secret(&[("other", "x")]))
                .unwrap()
                .is_none()
        );
        // Half a layout is an error, not a silent fallback to another root.
        let half = secret(&[(CA_CERT, &ca.root_pem()), (CA_KEY, ca.key_pem())]);
        assert!(from_plugged_in("ns", &half).is_err());
    }
}
