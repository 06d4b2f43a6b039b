//! The content-addressed stage cache and the run-directory lock.
//!
//! A node lives in `CACHE/<key>/`: `model/` (an HF checkpoint), `metrics.jsonl`, and
//! `ordo-node.json` (lineage, config, seed, metrics summary, timings, and the SHA-256 of every
//! file). The manifest is written last, inside a staging directory renamed into place, so a node
//! is complete or absent; a node whose files do not match their checksums is corrupt and retrained.

use crate::plan::sha256_hex;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Name of a node's manifest.
pub const MANIFEST: &str = "ordo-node.json";

/// What the cache holds for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    Missing,
    Complete,
    /// Present but not trustworthy (why).
    Corrupt(String),
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

/// Relative paths of all files under `dir` (sorted).
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Cache {
    /// The cache at `root` (created on first write).
    pub fn new(root: &Path) -> Self {
        Cache { root: root.to_path_buf() }
    }

    /// The directory of a node.
    pub fn dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Checks a node: manifest present and every listed file matching its checksum.
    pub fn state(&self, key: &str) -> NodeState {
        let dir = self.dir(key);
        if !dir.exists() {
            return NodeState::Missing;
        }
        let manifest = match std::fs::read_to_string(dir.join(MANIFEST)) {
            Ok(t) => t,
            Err(_) => return NodeState::Corrupt("no manifest".into()),
        };
        let v: Value = match serde_json::from_str(&manifest) {
            Ok(v) => v,
            Err(e) => return NodeState::Corrupt(format!("manifest is not valid JSON: {e}")),
        };
        let Some(files) = v["files"].as_object() else { return NodeState::Corrupt("manifest lists no files".into()) };
        for (rel, sum) in files {
            match std::fs::read(dir.join(rel)) {
                Ok(bytes) if Some(sha256_hex(&bytes).as_str()) == sum.as_str() => {}
                Ok(_) => return NodeState::Corrupt(format!("{rel} does not match its checksum")),
                Err(e) => return NodeState::Corrupt(format!("{rel}: {e}")),
            }
        }
        NodeState::Complete
    }

    /// The manifest of a complete node.
    pub fn manifest(&self, key: &str) -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(self.dir(key).join(MANIFEST)).ok()?).ok()
    }

    /// A fresh staging directory for building node `key`.
    pub fn staging(&self, key: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.root)?;
        let dir = self.root.join(format!(".{key}.staging"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Writes the manifest (with checksums of everything in `staging`) and moves the node into place;
    /// a corrupt node of the same key is moved aside first.
    pub fn commit(&self, key: &str, staging: &Path, mut manifest: Value) -> std::io::Result<()> {
        let mut sums = serde_json::Map::new();
        for rel in files_under(staging)? {
            let bytes = std::fs::read(staging.join(&rel))?;
            sums.insert(rel.to_string_lossy().into_owned(), json!(sha256_hex(&bytes)));
        }
        manifest["files"] = Value::Object(sums);
        let text = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
        std::fs::write(staging.join(MANIFEST), text)?;
        let target = self.dir(key);
        if target.exists() {
            let aside = self.root.join(format!(".{key}.corrupt-{}", std::process::id()));
            std::fs::rename(&target, &aside)?;
            std::fs::remove_dir_all(&aside)?;
        }
        std::fs::rename(staging, target)
    }

    /// Keys of all complete-looking nodes in the cache.
    pub fn keys(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return vec![] };
        let mut keys: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n.len() == 64)
            .collect();
        keys.sort();
        keys
    }
}

/// Keeps two runners off one run directory; released on drop.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or says who holds it. A lock left by a dead process is taken over.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, String> {
        std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let path = run_dir.join("lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().parse::<u32>().ok();
                    let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if alive {
                        return Err(format!(
                            "{} is in use by another ordo run (pid {}); wait for it to finish, or stop it",
                            run_dir.display(),
                            pid.unwrap_or(0)
                        ));
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(format!("{}: could not take the lock", path.display()))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Keys that the plans of the run directories under `runs_root` refer to.
pub fn referenced_keys(runs_root: &Path) -> std::io::Result<std::collections::BTreeSet<String>> {
    let mut keys = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(runs_root)? {
        let plan = entry?.path().join("plan.json");
        let Ok(text) = std::fs::read_to_string(&plan) else { continue };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", plan.display())))?;
        for n in v["nodes"].as_array().into_iter().flatten() {
            if let Some(k) = n["key"].as_str() {
                keys.insert(k.to_string());
            }
        }
    }
    Ok(keys)
}

/// Cache nodes (and leftover staging directories) that no run directory under `runs_root` refers to.
pub fn unreferenced(cache: &Cache, runs_root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let keep = referenced_keys(runs_root)?;
    let Ok(rd) = std::fs::read_dir(&cache.root) else { return Ok(vec![]) };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name.trim_start_matches('.').split('.').next().unwrap_or("").to_string();
            !keep.contains(&key) || name.starts_with('.')
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Run directories under `runs_root` whose lock is held by a live process.
pub fn active_runs(runs_root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(runs_root) else { return vec![] };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|d| {
            std::fs::read_to_string(d.join("lock"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}
