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

/// The file that marks a directory as ordo's own output; only such a directory is ever replaced.
pub const OUTPUT_MARKER: &str = ".ordo-output";

/// Whether ordo may write the directory `target`: it is absent, an empty directory, or (with
/// `replace`) a directory ordo wrote before (it holds [`OUTPUT_MARKER`]). Anything else, a file or
/// a directory of someone else's files, is refused: ordo never deletes what it did not write.
pub fn check_output_dir(target: &Path, replace: bool) -> Result<()> {
    let refuse = |why: String| Err(ModelError::Input(format!("{}: {why}", target.display())));
    let meta = match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ModelError::io(target, e)),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return refuse("exists and is not a directory; ordo will not replace it (choose another path)".into());
    }
    let mut entries = std::fs::read_dir(target).map_err(|e| ModelError::io(target, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !target.join(OUTPUT_MARKER).is_file() {
        return refuse(format!(
            "exists and holds files ordo did not write (no {OUTPUT_MARKER} marker); ordo will not replace it \
             (choose a new path, or empty the directory yourself)"
        ));
    }
    if !replace {
        return refuse("holds an earlier ordo output; pass --force to replace it".into());
    }
    Ok(())
}

/// Moves a filled staging directory to `target`, marking it as ordo's output. An existing target is
/// replaced only when [`check_output_dir`] allows it (`replace`: an earlier ordo output may go) and
/// holds nothing the new output does not (a file someone added to it is never deleted).
pub fn commit_dir(staging: &Path, target: &Path, replace: bool) -> Result<()> {
    check_output_dir(target, replace)?;
    let marker = staging.join(OUTPUT_MARKER);
    std::fs::write(&marker, b"written by ordo; ordo may replace this directory\n")
        .map_err(|e| ModelError::io(&marker, e))?;
    if let Ok(entries) = std::fs::read_dir(target) {
        for e in entries.filter_map(|e| e.ok()) {
            if !staging.join(e.file_name()).exists() {
                let _ = std::fs::remove_dir_all(staging);
                return Err(ModelError::Input(format!(
                    "{}: holds {:?}, which ordo did not write; ordo will not replace the directory \
                     (move that file out, or choose a new path)",
                    target.display(),
                    e.file_name()
                )));
            }
        }
    }
    replace_dir(staging, target)
}

/// Moves a filled staging directory to `target`, replacing whatever is there: only for paths inside
/// ordo's own cache (step checkpoints), which no user writes into.
pub fn commit_internal_dir(staging: &Path, target: &Path) -> Result<()> {
    replace_dir(staging, target)
}

fn replace_dir(staging: &Path, target: &Path) -> Result<()> {
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
