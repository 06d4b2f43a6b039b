//! The content-addressed stage cache and the run-directory lock.
//!
//! A node lives in `CACHE/<key>/`: `model/` (an HF checkpoint), `metrics.jsonl`, and
//! `ordo-node.json` (lineage, config, seed, metrics summary, timings, and the SHA-256 of every
//! file). The manifest is written last, inside a staging directory renamed into place, so a node
//! is complete or absent; a node whose files do not match their checksums is corrupt and retrained.
//! Evaluations of a node are added later, each with its checksum under `evaluations` in the manifest;
//! one that does not match is recomputed. Only the holder of a node's lock (`CACHE/.<key>.lock`)
//! builds the node or adds to it, so runners that share the cache never mix their files.

use crate::error::LabError;
use crate::plan::sha256_hex;
use ordo_model::{Device, TextTokenizer};
use ordo_train::Policy;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Name of a node's manifest.
pub const MANIFEST: &str = "ordo-node.json";

/// First 12 hex digits of a key.
pub fn short(key: &str) -> &str {
    &key[..12.min(key.len())]
}

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

    /// The policy checkpoint of a node; a model with non-finite weights is refused.
    pub fn model(&self, key: &str) -> Result<(Policy, TextTokenizer), LabError> {
        let dir = self.dir(key).join("model");
        let m = ordo_model::load(&dir, &Device::Cpu)?;
        m.params.check_finite(&dir.display().to_string())?;
        let tok = m.require_tokenizer()?.clone();
        Ok((Policy { config: m.config, params: m.params }, tok))
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

    /// The lock file of a node.
    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join(format!(".{key}.lock"))
    }

    /// Takes node `key`'s lock, waiting while another process holds it (`on_wait` is told its PID).
    pub fn lock_node(&self, key: &str, on_wait: &mut dyn FnMut(Option<u32>)) -> std::io::Result<FileLock> {
        std::fs::create_dir_all(&self.root)?;
        FileLock::acquire(&self.lock_path(key), on_wait)
    }

    /// The bytes of evaluation file `rel` of a complete node, when its checksum is in the node's
    /// manifest and matches; `Err(why)` for a file present but not matching (or not listed).
    pub fn evaluation(&self, key: &str, rel: &str) -> Result<Option<Vec<u8>>, String> {
        let Ok(bytes) = std::fs::read(self.dir(key).join(rel)) else { return Ok(None) };
        let listed = self.manifest(key).and_then(|m| m["evaluations"][rel].as_str().map(str::to_string));
        match listed {
            Some(sum) if sum == sha256_hex(&bytes) => Ok(Some(bytes)),
            Some(_) => Err(format!("{rel} does not match its checksum in the node's manifest")),
            None => Err(format!("{rel} is not in the node's manifest")),
        }
    }

    /// Adds evaluation file `rel` to a complete node: the file, then its checksum in the manifest,
    /// each written atomically. The caller holds the node's lock.
    pub fn add_evaluation(&self, key: &str, rel: &str, bytes: &[u8]) -> Result<(), String> {
        let dir = self.dir(key);
        let mut manifest = self.manifest(key).ok_or_else(|| format!("node {key} has no readable manifest"))?;
        ordo_model::atomic::write_file(&dir.join(rel), bytes).map_err(|e| e.to_string())?;
        if !manifest["evaluations"].is_object() {
            manifest["evaluations"] = json!({});
        }
        manifest["evaluations"][rel] = json!(sha256_hex(bytes));
        let text = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
        ordo_model::atomic::write_file(&dir.join(MANIFEST), &text).map_err(|e| e.to_string())
    }

    /// A fresh staging directory for building node `key` (the caller holds the node's lock).
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
            .filter(|n| is_key(n))
            .collect();
        keys.sort();
        keys
    }
}

/// An exclusive hold on a lock file, taken with the operating system's advisory file lock: released
/// when dropped or when the process dies (however it dies), so a dead holder or a reused PID never
/// blocks anyone. The file itself stays (removing it would race with a process about to lock it);
/// it holds the holder's PID, for messages only.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
}

/// The PID written in a lock file, if any.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl FileLock {
    fn open(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
    }

    fn held(file: std::fs::File) -> std::io::Result<FileLock> {
        use std::io::{Seek, Write};
        let mut file = file;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(FileLock { file })
    }

    /// Takes the lock at `path` now, or returns `Ok(Err(pid))` with the holder's PID when another
    /// process (or another handle in this one) holds it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Result<FileLock, Option<u32>>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Ok(Self::held(file)?)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(Err(holder_pid(path))),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock at `path`, waiting for its holder to release it; `on_wait` is called once,
    /// with the holder's PID, when it has to wait.
    pub fn acquire(path: &Path, on_wait: &mut dyn FnMut(Option<u32>)) -> std::io::Result<FileLock> {
        match Self::try_acquire(path)? {
            Ok(l) => Ok(l),
            Err(pid) => {
                on_wait(pid);
                let file = Self::open(path)?;
                file.lock()?;
                Self::held(file)
            }
        }
    }

    /// Whether some process holds the lock at `path` (false when there is no such file). Looking
    /// leaves the file as it was (the holder's PID stays in it).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(path) else { return false };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Keeps two runners off one run directory; released on drop or when the process dies.
#[derive(Debug)]
pub struct RunLock {
    _lock: FileLock,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or says who holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, String> {
        std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let path = run_dir.join("lock");
        match FileLock::try_acquire(&path) {
            Ok(Ok(l)) => Ok(RunLock { _lock: l }),
            Ok(Err(pid)) => Err(format!(
                "{} is in use by another ordo run (pid {}); wait for it to finish, or stop it",
                run_dir.display(),
                pid.map_or("unknown".into(), |p| p.to_string())
            )),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Whether a live process holds the lock of `run_dir`.
    pub fn is_held(run_dir: &Path) -> bool {
        FileLock::is_held(&run_dir.join("lock"))
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

/// The node key a cache entry belongs to: the node `KEY` itself, or one of its side entries
/// (`.KEY.lock`, `.KEY.staging`, `.KEY.resume`, `.KEY.snapshots`, `.KEY.corrupt-PID`, and the
/// atomic writers' `..KEY.resume.PID.partial`). None for anything else, which ordo never touches.
fn entry_key(name: &str) -> Option<&str> {
    let key = name.trim_start_matches('.').split('.').next()?;
    (is_key(key) && (name == key || name.starts_with('.'))).then_some(key)
}

/// Whether `s` has the form of a node key (64 hex digits).
pub fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Cache entries that `ordo gc` may remove: those of nodes no run directory under `runs_root` refers
/// to, and leftovers of replaced corrupt nodes. Nothing of a referenced node (its files, step
/// checkpoint, snapshots, evaluations), nothing whose lock a live process holds, no lock file
/// (removing one races with a process about to take it) and nothing that is not ordo's is listed.
pub fn unreferenced(cache: &Cache, runs_root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let keep = referenced_keys(runs_root)?;
    let Ok(rd) = std::fs::read_dir(&cache.root) else { return Ok(vec![]) };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = entry_key(&name) else { continue };
        if name.ends_with(".lock") {
            continue;
        }
        let leftover = name.contains(".corrupt-");
        if (keep.contains(key) && !leftover) || FileLock::is_held(&cache.lock_path(key)) {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Removes `entries` (from [`unreferenced`]) that are still removable now: each key's entries only
/// while this process holds the key's lock, and only if no plan refers to the key by then (a run may
/// have started since the list was made). Returns the entries removed.
pub fn remove_unreferenced(cache: &Cache, runs_root: &Path, entries: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for p in entries {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(key) = entry_key(&name) else { continue };
        let Ok(lock) = FileLock::try_acquire(&cache.lock_path(key))? else { continue };
        let leftover = name.contains(".corrupt-");
        if referenced_keys(runs_root)?.contains(key) && !leftover {
            continue;
        }
        if p.is_dir() {
            std::fs::remove_dir_all(p)?;
        } else if p.exists() {
            std::fs::remove_file(p)?;
        }
        drop(lock);
        removed.push(p.clone());
    }
    Ok(removed)
}

/// Run directories under `runs_root` whose lock is held by a live process.
pub fn active_runs(runs_root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(runs_root) else { return vec![] };
    let mut out: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|d| RunLock::is_held(d)).collect();
    out.sort();
    out
}
