//! Step checkpoints of a node in progress: `CACHE/.<key>.resume/` holds the parameters, the AdamW
//! moments and the loop state (step, data orders, allocator carry, metrics so far), replaced
//! atomically at every checkpoint and removed when the node is committed.

use ordo_model::{Device, ParamStore, Tensor};
use ordo_train::optim::{AdamW, AdamWConfig};
use ordo_train::trainer::{DataOrder, LoopState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct StateFile {
    step: usize,
    adamw_step: u64,
    adamw: AdamWConfig,
    orders: Vec<DataOrder>,
    carry: Vec<f64>,
    history: Vec<Map<String, Value>>,
}

/// The resume directory of a node.
pub fn resume_dir(cache_root: &Path, key: &str) -> PathBuf {
    cache_root.join(format!(".{key}.resume"))
}

/// Writes a checkpoint, replacing the previous one atomically.
pub fn save(dir: &Path, params: &ParamStore, state: &LoopState) -> ordo_model::Result<()> {
    let staging = ordo_model::atomic::staging_dir(dir)?;
    let tensors: Vec<(String, Tensor)> = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    ordo_model::weights::write_f32_safetensors(&staging.join("params.safetensors"), &refs)?;
    let mut moments: Vec<(String, Tensor)> = Vec::new();
    for (name, (m, v)) in &state.adamw.moments {
        moments.push((format!("m.{name}"), m.clone()));
        moments.push((format!("v.{name}"), v.clone()));
    }
    let refs: Vec<(&str, &Tensor)> = moments.iter().map(|(n, t)| (n.as_str(), t)).collect();
    ordo_model::weights::write_f32_safetensors(&staging.join("optim.safetensors"), &refs)?;
    let file = StateFile {
        step: state.step,
        adamw_step: state.adamw.step,
        adamw: state.adamw.config.clone(),
        orders: state.orders.clone(),
        carry: state.carry.clone(),
        history: state.history.clone(),
    };
    let bytes = serde_json::to_vec(&file).expect("state serialises");
    ordo_model::atomic::write_file(&staging.join("state.json"), &bytes)?;
    ordo_model::atomic::commit_internal_dir(&staging, dir)
}

/// A step checkpoint's parameters by name.
pub type SavedParams = BTreeMap<String, Tensor>;

/// Reads a checkpoint: parameters by name and the loop state; `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<(SavedParams, LoopState)>, String> {
    if !dir.join("state.json").exists() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<BTreeMap<String, Tensor>, String> {
        let p = dir.join(name);
        let map = candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(map.into_iter().collect())
    };
    let params = read("params.safetensors")?;
    let optim = read("optim.safetensors")?;
    let text = std::fs::read(dir.join("state.json")).map_err(|e| e.to_string())?;
    let f: StateFile = serde_json::from_slice(&text).map_err(|e| format!("state.json: {e}"))?;
    let mut moments = BTreeMap::new();
    for (k, m) in &optim {
        if let Some(name) = k.strip_prefix("m.") {
            let v = optim.get(&format!("v.{name}")).ok_or_else(|| format!("optim.safetensors: v.{name} is missing"))?;
            moments.insert(name.to_string(), (m.clone(), v.clone()));
        }
    }
    let adamw = AdamW { config: f.adamw, step: f.adamw_step, moments };
    Ok(Some((params, LoopState { step: f.step, adamw, orders: f.orders, carry: f.carry, history: f.history })))
}

/// Puts checkpointed parameters into a model's variables (same names and shapes).
pub fn apply(params: &ParamStore, saved: &BTreeMap<String, Tensor>) -> Result<(), String> {
    for (name, var) in params.iter() {
        let t = saved.get(name).ok_or_else(|| format!("checkpoint lacks parameter {name}"))?;
        if t.dims() != var.dims() {
            return Err(format!("checkpoint parameter {name} has shape {:?}, the model {:?}", t.dims(), var.dims()));
        }
        var.set(t).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Removes a node's step checkpoint and any half-written one a killed run left behind.
pub fn remove(cache_root: &Path, key: &str) -> std::io::Result<()> {
    let dir = resume_dir(cache_root, key);
    let stem = dir.file_name().expect("a resume dir has a name").to_string_lossy().into_owned();
    for e in std::fs::read_dir(cache_root)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == stem || name.starts_with(&format!(".{stem}.")) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}
