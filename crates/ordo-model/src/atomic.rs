//! Atomic writes: a file or a whole directory appears complete or not at all.

use crate::error::{ModelError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, "tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| ModelError::io(path, e))
}

/// Creates an empty staging directory next to `target`; fill it, then call [`commit_dir`].
pub fn staging_dir(target: &Path) -> Result<PathBuf> {
    let staging = sibling(target, "partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
    Ok(staging)
}

/// Moves a filled staging directory to `target`, replacing what was there.
pub fn commit_dir(staging: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        let old = sibling(target, "old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
        }
        std::fs::rename(target, &old).map_err(|e| ModelError::io(target, e))?;
        std::fs::rename(staging, target).map_err(|e| ModelError::io(target, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
    } else {
        std::fs::rename(staging, target).map_err(|e| ModelError::io(target, e))?;
    }
    Ok(())
}

/// `path` with `.<pid>.<suffix>` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{suffix}", std::process::id()))
}
