//! `meshctl analyze` against a Kubernetes cluster: the objects the mesh reads, listed from the
//! cluster, with the files' objects over them (a file's object wins over the cluster's of the
//! same kind and name), through the controller's own reading and translation.

use super::api::ApiServer;
use super::error::{ClusterError, Result};
use super::kinds::analyzed;
use super::objects::list_all;
use crate::operator::findings::{Finding, in_layers};
use crate::sandbox::model::objects::Object;

/// The findings about `files`' objects, or about every object of the cluster when there are
/// no files; and how many objects they are about.
pub async fn findings(api: &ApiServer, files: &[Object]) -> Result<(Vec<Finding>, usize)> {
    let cluster = list_all(api, &analyzed()).await?;
    let about = if files.is_empty() {
        &cluster[..]
    } else {
        files
    };
    let found = in_layers(Vec::new(), &[&cluster, files], about)
        .map_err(|e| ClusterError::Local(format!("analyzing in a scratch folder: {e}")))?;
    Ok((found, about.len()))
}
