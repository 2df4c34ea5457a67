//! Where a root rotation's record and staged material live, and where the live CA material
//! it rewrites is kept: the CA folder ([`FolderStore`], file mode) or the root namespace's
//! Secrets ([`super::rotation_secret::SecretStore`], Kubernetes mode). Both decide what each
//! phase writes with [`rotation::plan`]; they differ only in how they read and write.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use hbone::Authority;

use super::error::CaError;
use super::rotation::{self, Material, State};
use super::secret_watch::Changes;
use super::store::{self, Origin};

/// An operation of a store, run to its end by the rotation's driver.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, CaError>> + Send + 'a>>;

/// A rotation requested through the store (Kubernetes mode: by `meshctl ca`), not yet
/// answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Names the request in its answer.
    pub id: String,
    /// What it asks for.
    pub kind: RequestKind,
    /// Window in which proxies renew once the new material signs.
    pub reissue_within: Duration,
}

/// What a [`Request`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A new generated root of this lifetime.
    RotateRoot {
        /// Lifetime of the new root.
        new_root_ttl: Duration,
    },
    /// The given material (either layout's files by name).
    Replace(Material),
    /// A request that does not read as one, and why.
    Malformed(String),
}

/// Where a rotation's record, its staged material and the live CA material are kept.
pub trait RotationStore: Send + Sync + std::fmt::Debug {
    /// The recorded state (idle when there is none).
    fn load(&self) -> Pending<'_, State>;

    /// The live material as the recorded phase calls for it, loaded: what signs.
    fn live(&self) -> Pending<'_, (Authority, Origin)>;

    /// The recorded state and the live material it calls for, together (what a replica
    /// that follows the store loads each time).
    fn snapshot(&self) -> Pending<'_, (State, Authority, Origin)> {
        Box::pin(async move {
            let state = self.load().await?;
            let (authority, origin) = self.live().await?;
            Ok((state, authority, origin))
        })
    }

    /// Keeps `next` (validated by the caller) as the material phase 3 installs; it is
    /// recorded by the next [`RotationStore::enter`], never installed before.
    fn stage(&self, next: Material) -> Pending<'_, ()>;

    /// The staged material, loaded (and so validated).
    fn staged(&self) -> Pending<'_, (Authority, Origin)>;

    /// Records `state`, then writes the live material its phase calls for (idempotent: the
    /// recorded state again repairs a step cut short).
    fn enter<'a>(&'a self, state: &'a State) -> Pending<'a, ()>;

    /// Why rotations cannot run on this store's CA, as of the last [`RotationStore::live`].
    fn refusal(&self) -> Option<String> {
        None
    }

    /// The CA folder, for material handed over as a folder inside it (file mode).
    fn folder(&self) -> Option<&Path> {
        None
    }

    /// Whether other replicas share it: those that do not lead then load what it holds.
    fn shared(&self) -> bool {
        false
    }

    /// Notice of what other writers (other replicas, the plug-in CA's owner) change in the
    /// store, from a watch started by this call; `None` when the store cannot tell, and is
    /// then read on every tick.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<Changes>> {
        None
    }

    /// A rotation requested through the store and not yet answered.
    fn request(&self) -> Pending<'_, Option<Request>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Answers request `id` with why it was refused (an accepted one is answered by the
    /// [`RotationStore::enter`] that records its phase 1).
    fn reject<'a>(&'a self, id: &'a str, reason: &'a str) -> Pending<'a, ()> {
        let _ = (id, reason);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The generated `next` as material of the root layout.
pub fn generated_material(next: &Authority) -> Material {
    Material::from([
        (store::ROOT_KEY.to_owned(), next.key_pem().to_owned()),
        (store::ROOT_CERT.to_owned(), next.root_pem()),
    ])
}

/// The CA folder of file mode: `rotation.json` and `next/` beside the live files.
#[derive(Debug)]
pub struct FolderStore {
    dir: PathBuf,
}

impl FolderStore {
    /// The store of the CA folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl RotationStore for FolderStore {
    fn load(&self) -> Pending<'_, State> {
        Box::pin(std::future::ready(rotation::load(&self.dir)))
    }

    fn live(&self) -> Pending<'_, (Authority, Origin)> {
        Box::pin(std::future::ready(store::load_existing(&self.dir)))
    }

    fn stage(&self, next: Material) -> Pending<'_, ()> {
        Box::pin(std::future::ready(rotation::stage_material(
            &self.dir, &next,
        )))
    }

    fn staged(&self) -> Pending<'_, (Authority, Origin)> {
        Box::pin(std::future::ready(rotation::load_next(&self.dir)))
    }

    fn enter<'a>(&'a self, state: &'a State) -> Pending<'a, ()> {
        let entered =
            rotation::save(&self.dir, state).and_then(|()| rotation::apply(&self.dir, state));
        Box::pin(std::future::ready(entered))
    }

    fn folder(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
