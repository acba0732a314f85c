//! What survives a container restart: the boot count and the positions of the start-up
//! scripts, kept as one small JSON file in the state directory (an emptyDir in a pod).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::script::Cursor;
use super::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedCursor {
    /// The script text the cursor belongs to; a different script starts afresh.
    pub source: String,
    pub cursor: Cursor,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Saved {
    pub boot: u64,
    pub cursors: BTreeMap<String, SavedCursor>,
    pub boot_cursor: Option<SavedCursor>,
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    // Serializes read-modify-write cycles between probe answers.
    write: Mutex<()>,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { path: dir.join("podlife-target-state.json"), write: Mutex::new(()) }
    }

    /// Reads the saved state; a missing file is a first boot. A corrupt file is reported,
    /// not silently reset, because a reset would change what a test observes.
    pub fn load(&self) -> Result<Saved> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::State { path: self.path.clone(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(source) => Err(Error::State { path: self.path.clone(), source }),
        }
    }

    /// Applies `change` to the saved state and writes it atomically (write + rename).
    /// Failures are logged: a full disk must not stop the target from answering probes.
    pub fn update(&self, change: impl FnOnce(&mut Saved)) {
        let _guard = crate::lock(&self.write);
        let mut saved = self.load().unwrap_or_default();
        change(&mut saved);
        let tmp = self.path.with_extension("tmp");
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "could not save state");
        }
    }
}
