//! Declared architectures, as architecture-as-code tools write them: a Backstage catalog and a
//! Structurizr DSL workspace (a snapshot is read as a snapshot). Both become
//! [`archtrace_analyzer::declared::Declared`], which `conform` compares with what traces show.

pub mod backstage;
pub mod structurizr;

/// A declared architecture that cannot be read, named with where and why.
#[derive(Debug, thiserror::Error)]
pub enum DeclaredError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}
