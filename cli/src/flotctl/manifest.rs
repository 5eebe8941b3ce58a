//! Manifests: YAML or JSON, one or many documents per file, from files, directories
//! (`-R` for subdirectories) or stdin (`-`). A syntax error names the file, line and column.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One object from a manifest, and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// File (or "-") and document number, for messages.
    pub origin: String,
    /// The object.
    pub object: Value,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid YAML/JSON.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A document that is not an object with apiVersion and kind.
    #[error("{origin}: {message}")]
    Shape {
        /// Where.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

fn files_in(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let read = |e| ManifestError::Read {
        path: dir.display().to_string(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                files_in(&p, true, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses one file's text into documents (empty documents are skipped, as kubectl does).
pub fn parse(text: &str, path: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| ManifestError::Syntax {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let origin = format!("{path} (document {})", i + 1);
        // A List holds its objects under items.
        if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) && value["items"].is_array()
        {
            for item in value["items"].as_array().into_iter().flatten() {
                docs.push(check(item.clone(), &origin)?);
            }
            continue;
        }
        docs.push(check(value, &origin)?);
    }
    Ok(docs)
}

fn check(object: Value, origin: &str) -> Result<Document, ManifestError> {
    let shape = |message: &str| ManifestError::Shape {
        origin: origin.to_string(),
        message: message.to_string(),
    };
    if !object.is_object() {
        return Err(shape("a manifest must be an object"));
    }
    if object["apiVersion"].as_str().is_none_or(str::is_empty) {
        return Err(shape("apiVersion not set"));
    }
    if object["kind"].as_str().is_none_or(str::is_empty) {
        return Err(shape("kind not set"));
    }
    Ok(Document {
        origin: origin.to_string(),
        object,
    })
}

/// Reads every document of `-f` arguments.
pub fn read_all(sources: &[String], recursive: bool) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for src in sources {
        if src == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: "-".into(),
                    source,
                })?;
            docs.extend(parse(&text, "-")?);
            continue;
        }
        let path = Path::new(src);
        let mut files = Vec::new();
        if path.is_dir() {
            files_in(path, recursive, &mut files)?;
        } else {
            files.push(path.to_path_buf());
        }
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| ManifestError::Read {
                path: f.display().to_string(),
                source,
            })?;
            docs.extend(parse(&text, &f.display().to_string())?);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_are_split() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n";
        let docs = parse(text, "x.yaml").expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].object["kind"], "Secret");
    }

    #[test]
    fn a_syntax_error_names_the_file_line_and_column() {
        let e = parse("apiVersion: v1\nkind: [oops\n", "bad.yaml").expect_err("invalid");
        let msg = e.to_string();
        assert!(
            msg.starts_with("bad.yaml: ") && msg.contains("line") && msg.contains("column"),
            "{msg}"
        );
    }

    #[test]
    fn a_document_without_kind_is_refused() {
        let e = parse("apiVersion: v1\nmetadata: {name: a}\n", "m.yaml").expect_err("no kind");
        assert_eq!(e.to_string(), "m.yaml (document 1): kind not set");
    }
}
