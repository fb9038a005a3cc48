//! The agent's durable identity: its node id and its incarnation, kept in the
//! data directory (`identity.toml`).
//!
//! Invariant: [`load_and_bump`] makes the new incarnation durable (write a
//! temporary file, fsync it, rename it over the old one, fsync the directory)
//! *before* it returns, and the agent is created only after that; pids carry
//! the incarnation, so a pid is never minted twice, even across a crash right
//! after start. The incarnation only grows in a data directory, even when the
//! configured node id changes.

use nefele_core::agent::Identity;
use nefele_core::ids::{Incarnation, NodeId};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.toml";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    node_id: u32,
    incarnation: u32,
}

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file exists but is not an identity.
    #[error("{path}: not an identity file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The incarnation cannot grow any more.
    #[error("{path}: incarnation is at its maximum")]
    Exhausted {
        /// The file.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the identity in `data_dir` (creating the directory if needed), takes
/// `configured` as the node id when given (else the stored one, else a random
/// one), bumps the incarnation, and makes the result durable before returning.
pub fn load_and_bump(
    data_dir: &Path,
    configured: Option<NodeId>,
) -> Result<Identity, IdentityError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let path = data_dir.join(IDENTITY_FILE);
    let stored = match fs::read_to_string(&path) {
        Ok(text) => Some(
            toml::from_str::<Stored>(&text).map_err(|e| IdentityError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&path)(e)),
    };
    let node = configured
        .or(stored.as_ref().map(|s| NodeId(s.node_id)))
        .unwrap_or_else(|| NodeId(rand::RngCore::next_u32(&mut rand::rngs::OsRng)));
    if let (Some(s), Some(c)) = (&stored, configured) {
        if s.node_id != c.0 {
            tracing::warn!(stored = s.node_id, configured = %c, "node id changed; the incarnation keeps growing");
        }
    }
    let incarnation = match stored {
        None => Incarnation(1),
        Some(s) => Incarnation(
            s.incarnation
                .checked_add(1)
                .ok_or_else(|| IdentityError::Exhausted { path: path.clone() })?,
        ),
    };
    store(
        data_dir,
        &path,
        &Stored {
            node_id: node.0,
            incarnation: incarnation.0,
        },
    )?;
    Ok(Identity { node, incarnation })
}

/// Writes `stored` durably: temporary file, fsync, rename, fsync of the directory.
fn store(dir: &Path, path: &Path, stored: &Stored) -> Result<(), IdentityError> {
    let text = toml::to_string(stored).expect("two integers always serialize");
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_draws_an_id_and_later_starts_keep_it_and_bump() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_and_bump(dir.path(), None).unwrap();
        assert_eq!(first.incarnation, Incarnation(1));
        let second = load_and_bump(dir.path(), None).unwrap();
        assert_eq!(second.node, first.node);
        assert_eq!(second.incarnation, Incarnation(2));
        assert!(!dir.path().join("identity.toml.tmp").exists());
    }

    #[test]
    fn a_configured_id_wins_and_the_incarnation_still_grows() {
        let dir = tempfile::tempdir().unwrap();
        load_and_bump(dir.path(), Some(NodeId(5))).unwrap();
        let again = load_and_bump(dir.path(), Some(NodeId(6))).unwrap();
        assert_eq!(again.node, NodeId(6));
        assert_eq!(again.incarnation, Incarnation(2));
        let third = load_and_bump(dir.path(), None).unwrap();
        assert_eq!(third.node, NodeId(6));
        assert_eq!(third.incarnation, Incarnation(3));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), "node_id = \"x\"").unwrap();
        let e = load_and_bump(dir.path(), Some(NodeId(1))).unwrap_err();
        assert!(matches!(e, IdentityError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn the_last_incarnation_is_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(IDENTITY_FILE),
            format!("node_id = 1\nincarnation = {}\n", u32::MAX),
        )
        .unwrap();
        assert!(matches!(
            load_and_bump(dir.path(), None),
            Err(IdentityError::Exhausted { .. })
        ));
    }
}
