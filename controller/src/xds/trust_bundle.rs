//! The trust bundle joins the translated configuration: what the xDS streams follow is each
//! translated snapshot with the CA's current bundle as the one
//! [`api::TRUST_BUNDLE_TYPE_URL`] resource.

use std::sync::Arc;

use api::prost_types::Any;
use tokio::sync::watch;

use crate::translate::Published;

/// Publishes `translated` joined with `bundle` to `served` on every change of either, until
/// the translation's sender goes away (then `served` is dropped, which ends every stream).
/// Nothing is served before the first translation.
pub async fn serve_with_trust_bundle(
    mut translated: watch::Receiver<Published>,
    mut bundle: watch::Receiver<Any>,
    served: watch::Sender<Published>,
) {
    loop {
        let snapshot = translated.borrow_and_update().clone();
        let body = bundle.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let joined = Arc::new(snapshot.with_only(
                api::TRUST_BUNDLE_TYPE_URL,
                api::TRUST_BUNDLE_NAME,
                body,
            ));
            served.send_if_modified(|current| {
                if current.as_deref() == Some(&*joined) {
                    false
                } else {
                    *current = Some(joined);
                    true
                }
            });
        }
        tokio::select! {
            changed = translated.changed() => if changed.is_err() { return },
            changed = bundle.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::Snapshot;

    fn body(byte: u8) -> Any {
        Any {
            type_url: api::TRUST_BUNDLE_TYPE_URL.into(),
            value: vec![byte],
        }
    }

    #[tokio::test]
    async fn serves_each_translation_with_the_latest_bundle() {
        let (translated_tx, translated) = watch::channel(None);
        let (bundle_tx, bundle) = watch::channel(body(1));
        let (served_tx, mut served) = watch::channel(None);
        let task = tokio::spawn(serve_with_trust_bundle(translated, bundle, served_tx));

        translated_tx.send_replace(Some(Arc::new(Snapshot::default())));
        served.changed().await.unwrap();
        let first = served.borrow_and_update().clone().unwrap();
        let (name, resource) = first.of_type(api::TRUST_BUNDLE_TYPE_URL).next().unwrap();
        assert_eq!(
            (name.as_str(), &resource.body),
            (api::TRUST_BUNDLE_NAME, &body(1))
        );

        bundle_tx.send_replace(body(2));
        served.changed().await.unwrap();
        let second = served.borrow_and_update().clone().unwrap();
        assert_eq!(second.of_type(api::TRUST_BUNDLE_TYPE_URL).count(), 1);
        assert_ne!(
            first.system_version(api::TRUST_BUNDLE_TYPE_URL),
            second.system_version(api::TRUST_BUNDLE_TYPE_URL)
        );

        drop(translated_tx);
        task.await.unwrap();
        assert!(served.changed().await.is_err(), "the served sender is gone");
    }
}
