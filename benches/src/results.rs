//! Result files: versioned JSON, one per run, written to a results directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bump when a result layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create results directory {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is not an iopath result file")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("{path} has schema version {found}; this iopath-bench reads version {SCHEMA_VERSION} (rerun the scenario)")]
    Version { path: PathBuf, found: u32 },
    #[error("serialising results failed")]
    Serialize(#[source] serde_json::Error),
}

/// The envelope of every result file.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ResultFile<T> {
    pub schema_version: u32,
    /// What the payload is: `exits`, `block`, ...
    pub kind: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub payload: T,
}

impl<T: Serialize + DeserializeOwned> ResultFile<T> {
    pub fn new(kind: &str, payload: T) -> ResultFile<T> {
        ResultFile {
            schema_version: SCHEMA_VERSION,
            kind: kind.to_string(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            payload,
        }
    }

    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self).map_err(Error::Serialize)
    }

    /// Writes `<dir>/<kind>-<created>.json` and returns its path.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::CreateDir(dir.to_path_buf(), e))?;
        let path = dir.join(format!("{}-{}.json", self.kind, self.created));
        fs::write(&path, self.to_json()? + "\n").map_err(|e| Error::Write(path.clone(), e))?;
        Ok(path)
    }

    /// Reads a result file, refusing other schema versions with a clear error.
    pub fn read(path: &Path) -> Result<ResultFile<T>, Error> {
        let text = fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
        envelope(path, &text)?;
        serde_json::from_str(&text).map_err(|e| Error::Parse(path.to_path_buf(), e))
    }
}

/// The `kind` of the result file at `path`, after checking its schema version.
pub fn kind_of(path: &Path) -> Result<String, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
    Ok(envelope(path, &text)?.kind)
}

#[derive(Deserialize)]
struct Envelope {
    schema_version: u32,
    kind: String,
}

fn envelope(path: &Path, text: &str) -> Result<Envelope, Error> {
    let env: Envelope =
        serde_json::from_str(text).map_err(|e| Error::Parse(path.to_path_buf(), e))?;
    if env.schema_version != SCHEMA_VERSION {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: env.schema_version,
        });
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct P {
        iops: f64,
        name: String,
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = ResultFile::new(
            "block",
            P {
                iops: 1234.5,
                name: "null".into(),
            },
        );
        let path = f.write_to(dir.path()).unwrap();
        assert_eq!(ResultFile::<P>::read(&path).unwrap(), f);
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        fs::write(
            &path,
            r#"{"schema_version":0,"kind":"block","created":1,"payload":{}}"#,
        )
        .unwrap();
        let e = ResultFile::<P>::read(&path).unwrap_err();
        assert!(matches!(e, Error::Version { found: 0, .. }), "{e}");
        assert!(e.to_string().contains("schema version 0"));
    }

    #[test]
    fn garbage_is_not_a_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        fs::write(&path, "not json").unwrap();
        assert!(matches!(
            ResultFile::<P>::read(&path),
            Err(Error::Parse(..))
        ));
    }
}
