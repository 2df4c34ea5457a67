//! The mesh of `fixtures/mesh.yaml` as the controller translates it: the realistic state and
//! waypoint config targets run against, and real protobuf encodings for the seeds.

use std::sync::OnceLock;

use controller::model::{Index, parse_documents};
use controller::translate::{TranslateOptions, Translation, translate};

/// The mesh's manifests.
pub const MESH_YAML: &str = include_str!("../fixtures/mesh.yaml");

/// The resources the controller serves for a set of manifests, decoded.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// `istio.workload.Address` resources by name.
    pub addresses: Vec<(String, api::workload::Address)>,
    /// `istio.security.Authorization` resources by name.
    pub authorizations: Vec<(String, api::security::Authorization)>,
    /// `mesh.waypoint.v1.Waypoint` resources by name.
    pub waypoints: Vec<(String, api::waypoint::Waypoint)>,
}

/// Parses and translates `text` as the controller does a file of that name.
pub fn translate_manifests(origin: &str, text: &str) -> Translation {
    let parsed = parse_documents(origin, text, false);
    let index = Index::from_origins(vec![(origin.to_owned(), parsed.objects, parsed.problems)]);
    translate(&index, &TranslateOptions::default())
}

/// The resources of `translation`, decoded. The controller's own encodings always decode.
pub fn served(translation: &Translation) -> Served {
    fn decoded<M: prost::Name + Default>(t: &Translation, url: &str) -> Vec<(String, M)> {
        t.snapshot
            .of_type(url)
            .map(|(name, r)| {
                let m = api::unpack(&r.body).expect("the controller's resources decode");
                (name.clone(), m)
            })
            .collect()
    }
    Served {
        addresses: decoded(translation, api::ADDRESS_TYPE_URL),
        authorizations: decoded(translation, api::AUTHORIZATION_TYPE_URL),
        waypoints: decoded(translation, api::WAYPOINT_TYPE_URL),
    }
}

/// What the controller serves for the fixture mesh (translated once).
pub fn mesh() -> &'static Served {
    static MESH: OnceLock<Served> = OnceLock::new();
    MESH.get_or_init(|| served(&translate_manifests("mesh.yaml", MESH_YAML)))
}
