//! HF checkpoint directories (`config.json` + `model.safetensors`, or shards with an index) and PEFT
//! LoRA adapter directories (`adapter_config.json` + `adapter_model.safetensors`), in and out.

use crate::atomic;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::lora::{peft_key, Adapter, Adapters, Factor, LoraConfig, LowRank, CONFIG_FILE, WEIGHTS_FILE};
use crate::params::ParamStore;
use crate::tensors::Slot;
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Weight file name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Index file name of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// transformers' default maximum shard size (5 GB).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Tensors read from safetensors files, with the dtype each was stored in.
pub struct RawWeights {
    pub tensors: BTreeMap<String, Tensor>,
    pub stored_dtypes: BTreeMap<String, usize>,
}

/// Reads every tensor of an HF directory's weight files (single or sharded).
pub fn read_safetensors_dir(dir: &Path, device: &Device) -> Result<RawWeights> {
    let single = dir.join(SINGLE_FILE);
    let index = dir.join(INDEX_FILE);
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Weights(format!("{}: not valid JSON: {e}", index.display())))?;
        let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
            ModelError::Weights(format!("{}: expected an object field `weight_map`", index.display()))
        })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                ModelError::Weights(format!("{}: weight_map[`{name}`]: expected a file name", index.display()))
            })?;
            // A shard is a plain file name inside the checkpoint directory, never a path out of it.
            let plain = !file.is_empty()
                && Path::new(file).components().count() == 1
                && matches!(Path::new(file).components().next(), Some(std::path::Component::Normal(_)));
            if !plain {
                return Err(ModelError::Weights(format!(
                    "{}: weight_map[`{name}`]: {file:?} is not a file name inside the checkpoint directory",
                    index.display()
                )));
            }
            let p = dir.join(file);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        files
    } else if single.exists() {
        vec![single]
    } else {
        return Err(ModelError::Weights(format!(
            "{}: no {SINGLE_FILE} and no {INDEX_FILE}; expected an HF checkpoint directory",
            dir.display()
        )));
    };
    let mut raw = RawWeights { tensors: BTreeMap::new(), stored_dtypes: BTreeMap::new() };
    for file in files {
        read_safetensors_file(&file, device, &mut raw)?;
    }
    Ok(raw)
}

fn read_safetensors_file(path: &Path, device: &Device, raw: &mut RawWeights) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    read_safetensors_bytes(&bytes, &path.display().to_string(), device, raw)
}

/// Adds the tensors of one safetensors file's bytes to `raw` (as f32); `origin` names it in errors.
pub fn read_safetensors_bytes(bytes: &[u8], origin: &str, device: &Device, raw: &mut RawWeights) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        ModelError::Weights(format!("{}: not a valid safetensors file (truncated or corrupt?): {e}", origin))
    })?;
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(ModelError::Weights(format!(
                    "{}: tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16",
                    origin
                )))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)?.to_dtype(DType::F32)?;
        *raw.stored_dtypes.entry(format!("{dtype:?}").to_lowercase()).or_default() += t.elem_count();
        if raw.tensors.insert(name.clone(), t).is_some() {
            return Err(ModelError::Weights(format!("{}: tensor `{name}` appears twice", origin)));
        }
    }
    Ok(())
}

/// Loads `config.json` and the weights of an HF directory into a checked [`ParamStore`].
pub fn load_hf_params(dir: &Path, device: &Device) -> Result<(ModelConfig, ParamStore, BTreeMap<String, usize>)> {
    if !dir.is_dir() {
        return Err(ModelError::Weights(format!(
            "{}: not a directory; expected an HF checkpoint directory",
            dir.display()
        )));
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let raw = read_safetensors_dir(dir, device)?;
    let mut store = ParamStore::new();
    for (name, t) in raw.tensors {
        // Buffers some exporters include that are not parameters.
        if crate::tensors::is_buffer(&name)
            || (config.tie_word_embeddings && name == crate::tensors::hf(None, Slot::LmHead))
        {
            continue;
        }
        store.insert(name, t)?;
    }
    store.check_against(&config, &dir.display().to_string())?;
    Ok((config, store, raw.stored_dtypes))
}

/// A safetensors file (with transformers' `format: pt` metadata) of f32 tensors given as
/// (name, little-endian bytes, shape).
pub fn f32_safetensors_bytes(tensors: &[(String, Vec<u8>, Vec<usize>)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, bytes, shape)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize(views, metadata).map_err(|e| ModelError::Weights(format!("serialising safetensors: {e}")))
}

/// Little-endian f32 bytes of a tensor (converted to f32 first).
pub fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes f32 tensors to a safetensors file atomically.
pub fn write_f32_safetensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let encoded = tensors
        .iter()
        .map(|(n, t)| Ok((n.to_string(), f32_bytes(t)?, t.dims().to_vec())))
        .collect::<Result<Vec<_>>>()?;
    atomic::write_file(path, &f32_safetensors_bytes(&encoded)?)
}

/// One tensor of a shard being written: its name, f32 bytes and shape.
type ShardTensor = (String, Vec<u8>, Vec<usize>);

/// Writes an HF checkpoint directory atomically: config.json, weights (sharded above
/// `max_shard_bytes`), and the tokenizer files when a tokenizer is given.
pub fn save_hf_dir(
    dir: &Path,
    config: &ModelConfig,
    params: &ParamStore,
    tokenizer: Option<&TextTokenizer>,
    max_shard_bytes: usize,
) -> Result<()> {
    if params.lora().is_some() {
        return Err(ModelError::Input(format!(
            "{}: the model has LoRA adapters, which an HF checkpoint has no place for: write them with \
             `save_peft_dir`, or merge them first (`ParamStore::merged`)",
            dir.display()
        )));
    }
    params.check_against(config, "saving")?;
    atomic::check_output_dir(dir, true)?;
    let staging = atomic::staging_dir(dir)?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = staging.join(name);
        std::fs::write(&p, bytes).map_err(|e| ModelError::io(&p, e))
    };
    let json_bytes = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    write("config.json", &json_bytes(&config.to_hf_json()))?;
    let mut gen = json!({ "bos_token_id": config.bos_token_id, "pad_token_id": config.pad_token_id });
    gen["eos_token_id"] = json!(config.eos_token_ids);
    write("generation_config.json", &json_bytes(&gen))?;

    // Group tensors into shards in name order, as transformers does.
    let mut shards: Vec<Vec<ShardTensor>> = vec![vec![]];
    let mut shard_bytes = 0usize;
    let mut total = 0usize;
    for (name, var) in params.iter() {
        let bytes = f32_bytes(var.as_tensor())?;
        if shard_bytes > 0 && shard_bytes + bytes.len() > max_shard_bytes {
            shards.push(vec![]);
            shard_bytes = 0;
        }
        shard_bytes += bytes.len();
        total += bytes.len();
        shards.last_mut().expect("at least one shard").push((name.clone(), bytes, var.dims().to_vec()));
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        for (name, _, _) in shard {
            weight_map.insert(name.clone(), json!(file));
        }
        write(&file, &f32_safetensors_bytes(shard)?)?;
    }
    if n > 1 {
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        write(INDEX_FILE, &json_bytes(&index))?;
    }
    if let Some(tok) = tokenizer {
        tok.save_to_dir(&staging)?;
    }
    atomic::commit_dir(&staging, dir, true)
}

/// Writes a model's LoRA adapters as the directory PEFT reads (`adapter_config.json`, `adapter_model.safetensors`
/// with PEFT's keys), atomically; `base_model` is recorded as `base_model_name_or_path` (null when
/// None: PEFT then needs the base model passed to `PeftModel.from_pretrained`).
pub fn save_peft_dir(adapters: &Adapters, dir: &Path, base_model: Option<&str>, replace: bool) -> Result<()> {
    save_peft(adapters, None, dir, base_model, replace)
}

/// Writes a reward model's LoRA adapters as a PEFT sequence-classification directory: the adapters as
/// [`save_peft_dir`] writes them, and the `score` head, trained whole, as PEFT's `modules_to_save`
/// (`base_model.model.score.weight`, [labels, hidden]; `task_type` `SEQ_CLS`).
pub fn save_peft_reward_dir(
    adapters: &Adapters,
    score: &Tensor,
    dir: &Path,
    base_model: Option<&str>,
    replace: bool,
) -> Result<()> {
    save_peft(adapters, Some(score), dir, base_model, replace)
}

fn save_peft(
    adapters: &Adapters,
    score: Option<&Tensor>,
    dir: &Path,
    base_model: Option<&str>,
    replace: bool,
) -> Result<()> {
    atomic::check_output_dir(dir, replace)?;
    let staging = atomic::staging_dir(dir)?;
    let c = &adapters.config;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": if score.is_some() { "SEQ_CLS" } else { "CAUSAL_LM" },
        "base_model_name_or_path": base_model,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": score.map(|_| ["score"]),
        "layers_to_transform": null,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Weights(e.to_string()))?;
    atomic::write_file(&staging.join(CONFIG_FILE), text.as_bytes())?;
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = adapters
        .adapters
        .iter()
        .flat_map(|ad| {
            let lr = &ad.low_rank;
            [
                (peft_key(ad.layer, ad.slot, Factor::A), bytes(&lr.a), vec![lr.rank, lr.inner]),
                (peft_key(ad.layer, ad.slot, Factor::B), bytes(&lr.b), vec![lr.out, lr.rank]),
            ]
        })
        .collect();
    if let Some(score) = score {
        let values = score.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        tensors.push(("base_model.model.score.weight".into(), bytes(&values), score.dims().to_vec()));
    }
    atomic::write_file(&staging.join(WEIGHTS_FILE), &f32_safetensors_bytes(&tensors)?)?;
    atomic::commit_dir(&staging, dir, replace)
}

/// Reads a PEFT LoRA adapter directory for a model with `layers` layers whose adapted weights have
/// `shape(slot)` = `[out, in]`; any mismatch (settings ordo does not implement, a missing or
/// extra tensor, a wrong shape) is an error naming the file and what was expected.
pub fn load_peft_dir(dir: &Path, layers: usize, shape: impl Fn(Slot) -> (usize, usize)) -> Result<Adapters> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Weights(format!("{}: {e}", cfg_path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Weights(format!("{}: not JSON: {e}", cfg_path.display())))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let bad = |msg: String| ModelError::Weights(format!("{}: {msg}", cfg_path.display()));
    if field("peft_type").and_then(|x| x.as_str()) != Some("LORA") {
        return Err(bad("`peft_type` must be \"LORA\"".into()));
    }
    for (k, want) in [("use_rslora", false), ("use_dora", false), ("fan_in_fan_out", false)] {
        if field(k).and_then(|x| x.as_bool()).unwrap_or(false) != want {
            return Err(bad(format!("`{k}` = true is not supported")));
        }
    }
    if field("bias").and_then(|x| x.as_str()).unwrap_or("none") != "none" {
        return Err(bad("`bias` must be \"none\" (adapters with bias terms are not supported)".into()));
    }
    for k in ["modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern"] {
        if field(k)
            .is_some_and(|x| !(x.as_array().is_some_and(Vec::is_empty) || x.as_object().is_some_and(|o| o.is_empty())))
        {
            return Err(bad(format!("`{k}` is not supported")));
        }
    }
    let targets = match field("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`target_modules` must be a list of module names".into()))?,
        _ => return Err(bad("`target_modules` must be a list of module names".into())),
    };
    let config = LoraConfig {
        rank: field("r").and_then(|x| x.as_u64()).ok_or_else(|| bad("`r` must be a positive integer".into()))? as usize,
        alpha: field("lora_alpha")
            .and_then(|x| x.as_f64())
            .ok_or_else(|| bad("`lora_alpha` must be a number".into()))?,
        dropout: field("lora_dropout").and_then(|x| x.as_f64()).unwrap_or(0.0),
        targets,
    };
    config.check(&cfg_path.display().to_string())?;
    let w_path = dir.join(WEIGHTS_FILE);
    let mut tensors = candle_core::safetensors::load(&w_path, &Device::Cpu)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", w_path.display())))?;
    let mut take = |key: &str, dims: [usize; 2]| -> Result<Vec<f32>> {
        let t = tensors
            .remove(key)
            .ok_or_else(|| ModelError::Weights(format!("{}: tensor `{key}` is missing", w_path.display())))?;
        if t.dims() != dims {
            return Err(ModelError::Weights(format!(
                "{}: tensor `{key}` has shape {:?}, expected {dims:?}",
                w_path.display(),
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let mut adapters = Vec::new();
    for layer in 0..layers {
        for slot in config.slots() {
            let (out, inner) = shape(slot);
            let a = take(&peft_key(layer, slot, Factor::A), [config.rank, inner])?;
            let b = take(&peft_key(layer, slot, Factor::B), [out, config.rank])?;
            adapters.push(Adapter {
                layer,
                slot,
                low_rank: LowRank { a, b, rank: config.rank, inner, out, scale: config.scale() },
            });
        }
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(ModelError::Weights(format!(
            "{}: tensor `{extra}` is not an adapter of this model's {layers} layers and targets",
            w_path.display()
        )));
    }
    Ok(Adapters { config, adapters })
}
