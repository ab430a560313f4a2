//! Reading a declared architecture from disk: a Backstage catalog file or folder, a Structurizr
//! DSL workspace, or a snapshot file (`archtrace snapshot`), for `conform`, `check --declared`
//! and the viewer's Conformance page.

use std::path::{Path, PathBuf};

use archtrace_analyzer::declared::Declared;
use archtrace_formats::declared::{backstage, structurizr, DeclaredError};

use crate::files::{read_snapshot, SnapshotFileError};

#[derive(Debug, thiserror::Error)]
pub enum LoadDeclaredError {
    #[error("could not read the declared architecture {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] DeclaredError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    #[error("{path} holds no declared architecture: expected Backstage catalog files (*.yaml, *.yml), a Structurizr workspace (*.dsl) or a snapshot (*.json)")]
    Empty { path: String },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Backstage,
    Structurizr,
    Snapshot,
}

fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "yaml" | "yml" => Some(Kind::Backstage),
        "dsl" => Some(Kind::Structurizr),
        "json" => Some(Kind::Snapshot),
        _ => None,
    }
}

/// The files of a folder and its subfolders (hidden ones skipped), sorted.
fn files_under(dir: &Path, into: &mut Vec<PathBuf>) -> Result<(), LoadDeclaredError> {
    let read_error = |source| LoadDeclaredError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for path in entries {
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            files_under(&path, into)?;
        } else if kind_of(&path).is_some() {
            into.push(path);
        }
    }
    Ok(())
}

/// Reads `path`: one file, or every catalog, workspace and snapshot file under a folder, merged.
/// A single file of another extension is read as a Backstage catalog.
pub fn load(path: &Path) -> Result<Declared, LoadDeclaredError> {
    let mut files = Vec::new();
    if path.is_dir() {
        files_under(path, &mut files)?;
        if files.is_empty() {
            return Err(LoadDeclaredError::Empty {
                path: path.display().to_string(),
            });
        }
    } else {
        files.push(path.to_owned());
    }
    let mut declared = Declared::default();
    let mut catalog = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        match kind_of(&file).unwrap_or(Kind::Backstage) {
            Kind::Snapshot => {
                declared.merge(Declared::from_snapshot(&read_snapshot(&file)?, &shown));
            }
            kind => {
                let text =
                    std::fs::read_to_string(&file).map_err(|source| LoadDeclaredError::Read {
                        path: shown.clone(),
                        source,
                    })?;
                if kind == Kind::Structurizr {
                    declared.merge(structurizr::read(&shown, &text)?);
                } else {
                    catalog.push((shown, text));
                }
            }
        }
    }
    // Catalog files are read together: one may consume an API another provides.
    if !catalog.is_empty() {
        declared.merge(backstage::read(&catalog)?);
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_catalog_files_is_read_together() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("team-a")).unwrap();
        std::fs::write(
            dir.path().join("team-a/catalog-info.yaml"),
            "kind: Component\nmetadata: {name: web}\nspec: {owner: a, consumesApis: [cart-api]}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("cart.yml"),
            "kind: Component\nmetadata: {name: cart}\nspec: {owner: b, providesApis: [cart-api]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a catalog").unwrap();
        let declared = load(dir.path()).unwrap();
        assert_eq!(declared.nodes.len(), 2);
        assert!(declared
            .edges
            .contains(&("web".to_owned(), "cart".to_owned())));
        assert_eq!(declared.sources.len(), 2);
    }

    #[test]
    fn a_folder_without_a_catalog_is_refused_with_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("no declared architecture") && err.contains("*.dsl"),
            "{err}"
        );
        let missing = load(&dir.path().join("absent.yaml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("could not read"), "{missing}");
    }
}
