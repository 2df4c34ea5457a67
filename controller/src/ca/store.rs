//! Where the CA's signing material comes from: a root generated on first start and persisted,
//! or an intermediate plugged in from files in Istio's "plug-in CA" layout.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hbone::Authority;
use hbone::cert::{certificate_to_pem, certificates_from_pem};

use super::error::CaError;

pub use super::layout::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY};

/// Lifetime of a generated root.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How the signing authority was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Generated now and written to the CA directory (or Secret).
    Generated,
    /// A self-signed root read back from the CA directory (or Secret).
    Reloaded,
    /// An intermediate plugged in from `ca-cert.pem` / `ca-key.pem` (files or `cacerts`).
    PluggedIn,
    /// Generated in memory only (no CA directory): lost on restart.
    Ephemeral,
}

/// Loads the CA from `dir`, generating and persisting a root on first start.
///
/// With `ca-cert.pem` and `ca-key.pem` present, they sign (the plug-in layout), with
/// `cert-chain.pem` supplying the certificates above them and `root-cert.pem` the roots.
/// Otherwise `root-cert.pem` + `root-key.pem` are a self-signed root; if neither exists a
/// new ECDSA P-256 root is generated and written (the key with mode 0600).
pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<(Authority, Origin), CaError> {
    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    let plugged_in = dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists();
    match (plugged_in, cert_path.exists(), key_path.exists()) {
        (true, _, _) | (false, true, true) => load_existing(dir),
        (false, false, false) => {
            let authority = Authority::generate_root(trust_domain, ROOT_TTL)?;
            std::fs::create_dir_all(dir).map_err(|e| CaError::io(dir, e))?;
            // Key first: a crash in between leaves a key without a certificate, which the
            // next start reports instead of silently generating a second root.
            write_atomic(&key_path, authority.key_pem(), 0o600)?;
            write_atomic(&cert_path, &authority.root_pem(), 0o644)?;
            Ok((authority, Origin::Generated))
        }
        _ => Err(CaError::Incomplete(dir.to_path_buf())),
    }
}

/// Loads the CA material in `dir` without generating any: the plug-in layout if
/// `ca-cert.pem` or `ca-key.pem` is there, else a self-signed root (`root-key.pem` signing,
/// `root-cert.pem` the published roots, the signing one first).
pub fn load_existing(dir: &Path) -> Result<(Authority, Origin), CaError> {
    if dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists() {
        return Ok((load_plugged_in(dir)?, Origin::PluggedIn));
    }
    let key = read(&dir.join(ROOT_KEY))?;
    let roots = read(&dir.join(ROOT_CERT))?;
    Ok((root_from_pem(&key, &roots)?, Origin::Reloaded))
}

/// Loads CA material given as files by name ([`crate::ca::rotation::Material`]), either
/// layout, as [`load_existing`] loads a folder; a missing file is named in the error.
pub fn load_material(
    material: &std::collections::BTreeMap<String, String>,
) -> Result<(Authority, Origin), CaError> {
    let get = |name: &str| {
        material
            .get(name)
            .map(String::as_str)
            .filter(|text| !text.trim().is_empty())
            .ok_or_else(|| CaError::Missing(name.to_owned()))
    };
    if material.contains_key(CA_CERT) || material.contains_key(CA_KEY) {
        let chain = material.get(CERT_CHAIN).map(String::as_str);
        let authority = plugged_in_from_pem(get(CA_KEY)?, get(CA_CERT)?, chain, get(ROOT_CERT)?)?;
        return Ok((authority, Origin::PluggedIn));
    }
    Ok((
        root_from_pem(get(ROOT_KEY)?, get(ROOT_CERT)?)?,
        Origin::Reloaded,
    ))
}

/// Reads the plug-in layout.
fn load_plugged_in(dir: &Path) -> Result<Authority, CaError> {
    let key = read(&dir.join(CA_KEY))?;
    let cert = read(&dir.join(CA_CERT))?;
    let roots = read(&dir.join(ROOT_CERT))?;
    let chain_path = dir.join(CERT_CHAIN);
    let chain = if chain_path.exists() {
        Some(read(&chain_path)?)
    } else {
        None
    };
    plugged_in_from_pem(&key, &cert, chain.as_deref(), &roots).map_err(|e| match e {
        CaError::Cert(source) => CaError::PluggedIn {
            dir: dir.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// A self-signed root from its key and published bundle: the first certificate of `roots_pem`
/// signs; any others are published too (old or next roots during a rotation).
pub fn root_from_pem(key_pem: &str, roots_pem: &str) -> Result<Authority, CaError> {
    let signer = certificates_from_pem(roots_pem, "CA root")?;
    let own = certificate_to_pem(&signer[0]);
    Ok(Authority::from_pem(key_pem, &own, roots_pem)?)
}

/// A plugged-in intermediate from the plug-in layout's contents (files or Secret keys):
/// `ca-key.pem`, `ca-cert.pem`, optional `cert-chain.pem`, `root-cert.pem`.
pub fn plugged_in_from_pem(
    key_pem: &str,
    cert_pem: &str,
    chain_pem: Option<&str>,
    roots_pem: &str,
) -> Result<Authority, CaError> {
    let root_ders = certificates_from_pem(roots_pem, "CA roots")?;
    let own = certificates_from_pem(cert_pem, "CA certificate")?;
    // cert-chain.pem conventionally repeats ca-cert.pem and may end with the root: keep only
    // the intermediates between them.
    let mut chain = cert_pem.to_string();
    if let Some(chain_pem) = chain_pem.filter(|c| !c.trim().is_empty()) {
        for der in certificates_from_pem(chain_pem, "CA certificate chain")? {
            if !own.contains(&der) && !root_ders.contains(&der) {
                chain.push_str(&certificate_to_pem(&der));
            }
        }
    }
    Ok(Authority::from_pem(key_pem, &chain, roots_pem)?)
}

/// Persists `roots` (the signing root first) as the published bundle, after a rotation step.
pub fn write_roots(dir: &Path, roots_pem: &[String]) -> Result<(), CaError> {
    write_atomic(&dir.join(ROOT_CERT), &roots_pem.concat(), 0o644)
}

/// Persists a new signing root's key (root rotation), mode 0600.
pub fn write_key(dir: &Path, key_pem: &str) -> Result<(), CaError> {
    write_atomic(&dir.join(ROOT_KEY), key_pem, 0o600)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::io(path, e))
}

/// Writes through a temporary file and a rename, so readers never see half a file.
pub(super) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| CaError::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CaError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CaError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ca-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generates_then_reloads() {
        let dir = temp_dir("gen");
        let (first, origin) = load_or_create(&dir, "cluster.local").unwrap();
        assert_eq!(origin, Origin::Generated);
        let mode = std::fs::metadata(dir.join(ROOT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, origin) = load_or_create(&dir, "cluster.local").unwrap();
        assert_eq!(origin, Origin::Reloaded);
        assert_eq!(first.roots(), second.roots());
        std::fs::remove_file(dir.join(ROOT_CERT)).unwrap();
        assert!(matches!(
            load_or_create(&dir, "cluster.local"),
            Err(CaError::Incomplete(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plugged_in_intermediate_loads_and_bad_material_is_refused_naming_the_folder() {
        let root = Authority::generate_root("cluster.local", ROOT_TTL).unwrap();
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        let (key, chain) = root
            .issue_intermediate("mesh intermediate", now - hour, now + hour)
            .unwrap();
        let dir = test_support::TempDir::new("ca-plugged-in");
        dir.write(CA_KEY, &key);
        dir.write(CA_CERT, &chain);
        dir.write(CERT_CHAIN, format!("{chain}{}", root.root_pem()));
        dir.write(ROOT_CERT, root.root_pem());
        let (authority, origin) = load_or_create(dir.path(), "cluster.local").unwrap();
        assert_eq!(origin, Origin::PluggedIn);
        assert_eq!(
            authority.chain().len(),
            1,
            "the intermediate, without the root"
        );
        assert_eq!(authority.roots(), root.roots());

        // Another intermediate's key: refused, naming the folder, the files and the reason.
        let (other_key, _) = root
            .issue_intermediate("other", now - hour, now + hour)
            .unwrap();
        dir.write(CA_KEY, &other_key);
        let err = load_or_create(dir.path(), "cluster.local")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("plugged-in CA in {}", dir.path().display())),
            "{err}"
        );
        assert!(err.contains("the signing key does not belong"), "{err}");
    }
}
