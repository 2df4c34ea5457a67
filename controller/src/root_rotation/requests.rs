//! Requests for a rotation found in a shared store (Kubernetes mode: written by `meshctl
//! ca` into the rotation Secret), answered by the leader alone: accepted, its phase 1 is
//! recorded with the answer; refused, the reason is written where the operator looks.

use super::{Inner, RotateOptions, RotationError};
use crate::ca::CaError;
use crate::ca::rotation_store::{Request, RequestKind, RotationStore};
use crate::ca::store;

impl Inner {
    /// Begins the rotation `request` asks for, or answers why not.
    pub(super) async fn answer(
        &self,
        store: &dyn RotationStore,
        request: Request,
    ) -> Result<(), RotationError> {
        let began = match request.kind {
            RequestKind::RotateRoot { new_root_ttl } => {
                let options = RotateOptions {
                    new_root_ttl,
                    reissue_within: request.reissue_within,
                };
                self.start(options).await
            }
            RequestKind::Replace(material) => {
                self.begin(request.reissue_within, || {
                    let (authority, _) = store::load_material(&material).map_err(incoming)?;
                    Ok((material, authority))
                })
                .await
            }
            RequestKind::Malformed(reason) => Err(RotationError::Request(reason)),
        };
        match began {
            Ok(()) => Ok(()),
            // A failure to write is retried with the request on the next tick; anything
            // else is the request's fault, and answered.
            Err(e @ RotationError::Ca(CaError::Kubernetes { .. })) => Err(e),
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(id = %request.id, %reason, "CA rotation request refused");
                store.reject(&request.id, &reason).await?;
                Ok(())
            }
        }
    }
}

/// Refused material, described as the request's.
fn incoming(error: CaError) -> RotationError {
    match error {
        CaError::Missing(name) => {
            RotationError::Request(format!("the new material's {name} is missing"))
        }
        other => RotationError::Ca(other),
    }
}
