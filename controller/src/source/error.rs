//! Errors reading a source.

/// Errors reading a source. They become [`crate::model::Problem`]s: a source
/// never stops because one file is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not UTF-8 text.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The path.
        path: String,
    },
}
