//! `iopath-bench report`: redraws tables and plots from stored result files, without rerunning.

use std::fs;
use std::path::{Path, PathBuf};

use crate::block::BlockReport;
use crate::exits::ExitsReport;
use crate::net::NetReport;
use crate::plot;
use crate::results::{self, ResultFile};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Results(#[from] results::Error),
    #[error("cannot list {0}")]
    List(PathBuf, #[source] std::io::Error),
    #[error("no result files in {0}")]
    Empty(PathBuf),
    #[error("{0} holds a result of kind {1:?}, which this iopath-bench cannot show")]
    UnknownKind(PathBuf, String),
}

/// What a report shows: the text, and where plots went (or why there are none).
pub struct Rendered {
    pub text: String,
    pub plots: Result<Vec<PathBuf>, plot::Error>,
}

/// The result files a path names: the file itself, or the newest of each kind in a directory.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut newest: Vec<(String, u64, PathBuf)> = Vec::new();
    let entries = fs::read_dir(path).map_err(|e| Error::List(path.to_path_buf(), e))?;
    for entry in entries {
        let p = entry
            .map_err(|e| Error::List(path.to_path_buf(), e))?
            .path();
        // Result files are named `<kind>-<created>.json`.
        let Some((kind, created)) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(k, c)| Some((k.to_string(), c.parse::<u64>().ok()?)))
        else {
            continue;
        };
        match newest.iter_mut().find(|(k, ..)| *k == kind) {
            Some(slot) if slot.1 < created => *slot = (kind, created, p),
            Some(_) => {}
            None => newest.push((kind, created, p)),
        }
    }
    if newest.is_empty() {
        return Err(Error::Empty(path.to_path_buf()));
    }
    newest.sort();
    Ok(newest.into_iter().map(|(.., p)| p).collect())
}

/// Renders one result file; block and net results also get their plots redrawn next to it.
pub fn render(path: &Path) -> Result<Rendered, Error> {
    match results::kind_of(path)?.as_str() {
        "block" => {
            let file = ResultFile::<BlockReport>::read(path)?;
            Ok(Rendered {
                text: file.payload.table(),
                plots: plot::write_all(&file.payload, &path.with_extension("")),
            })
        }
        "net" => {
            let file = ResultFile::<NetReport>::read(path)?;
            Ok(Rendered {
                text: file.payload.table(),
                plots: file.payload.plots(&path.with_extension("")),
            })
        }
        "exits" => {
            let file = ResultFile::<ExitsReport>::read(path)?;
            Ok(Rendered {
                text: file.payload.table() + &file.payload.verbose(),
                plots: Ok(Vec::new()),
            })
        }
        other => Err(Error::UnknownKind(path.to_path_buf(), other.to_string())),
    }
}
