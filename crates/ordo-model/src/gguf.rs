//! GGUF files (llama.cpp): import to HF-named f32 parameters with the tokenizer from metadata, and export.

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::norm;
use crate::params::ParamStore;
use crate::tensors::{self, by_hf, GgufHeads, Slot};
pub use crate::tensors::{gguf_name, hf_name};
use crate::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A model imported from GGUF.
pub struct GgufModel {
    pub config: ModelConfig,
    pub params: ParamStore,
    /// Built from the GGUF tokenizer metadata; `Err` says why it could not be.
    pub tokenizer: std::result::Result<TextTokenizer, String>,
    /// Elements stored per GGUF tensor type (e.g. "Q4_1").
    pub stored_dtypes: BTreeMap<String, usize>,
}

/// llama.cpp stores Llama q/k projections with the two halves of each head interleaved.
/// `to_gguf = false` undoes that (GGUF -> HF); `true` applies it (HF -> GGUF).
fn permute_heads(t: &Tensor, heads: usize, to_gguf: bool) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let half = rows / heads / 2;
    let (a, b) = if to_gguf { (2, half) } else { (half, 2) };
    Ok(t.reshape((heads, a, b, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

fn meta<'a>(md: &'a HashMap<String, GValue>, key: &str, origin: &str) -> Result<&'a GValue> {
    md.get(key).ok_or_else(|| ModelError::Config(format!("{origin}: GGUF metadata `{key}` is missing")))
}

fn meta_usize(md: &HashMap<String, GValue>, key: &str, origin: &str) -> Result<usize> {
    meta(md, key, origin)?
        .to_u64()
        .or_else(|_| meta(md, key, origin).and_then(|v| Ok(v.to_u32()? as u64)))
        .map(|v| v as usize)
        .map_err(|_| ModelError::Config(format!("{origin}: GGUF metadata `{key}`: expected an integer")))
}

/// A metadata count that must be at least 1 (a head count of 0 would divide by zero).
fn meta_positive(md: &HashMap<String, GValue>, key: &str, origin: &str) -> Result<usize> {
    match meta_usize(md, key, origin)? {
        0 => Err(ModelError::Config(format!("{origin}: GGUF metadata `{key}`: expected a positive integer, found 0"))),
        v => Ok(v),
    }
}

fn meta_f64(md: &HashMap<String, GValue>, key: &str) -> Option<f64> {
    // An f32 field becomes the f64 with the same shortest decimal form (1e-5, not 9.99999974e-6).
    md.get(key).and_then(|v| v.to_f32().map(|x| x.to_string().parse().unwrap_or(x as f64)).or_else(|_| v.to_f64()).ok())
}

/// Reads a GGUF model: config from metadata, tensors dequantised to f32 under HF names.
pub fn load_gguf(path: &Path, device: &Device) -> Result<GgufModel> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    read_gguf(&mut file, &path.display().to_string(), device)
}

/// Reads a GGUF model from any seekable reader; `origin` names it in errors.
pub fn read_gguf<R: std::io::Read + std::io::Seek>(file: &mut R, origin: &str, device: &Device) -> Result<GgufModel> {
    let origin = origin.to_string();
    let content = gguf_file::Content::read(file)
        .map_err(|e| ModelError::Weights(format!("{origin}: not a readable GGUF file: {e}")))?;
    let md = &content.metadata;
    let arch = meta(md, "general.architecture", &origin)?
        .to_string()
        .map_err(|_| ModelError::Config(format!("{origin}: general.architecture: expected a string")))?
        .clone();
    let family = Family::from_model_type(&arch).ok_or_else(|| {
        ModelError::Unsupported(format!(
            "{origin}: GGUF architecture `{arch}` is not supported; ordo imports llama, qwen2 and qwen3"
        ))
    })?;
    let key = |k: &str| format!("{arch}.{k}");
    // The token embedding fixes the vocabulary and hidden sizes.
    let embed_name = gguf_name(&tensors::hf(None, Slot::Embed)).expect("the embedding has a GGUF name");
    let embd = content
        .tensor_infos
        .get(&embed_name)
        .ok_or_else(|| ModelError::Weights(format!("{origin}: tensor {embed_name} is missing")))?;
    let &[vocab, _] = embd.shape.dims() else {
        return Err(ModelError::Weights(format!(
            "{origin}: tensor {embed_name} has shape {:?}, expected [vocab, hidden]",
            embd.shape.dims()
        )));
    };
    let hidden = meta_positive(md, &key("embedding_length"), &origin)?;
    let heads = meta_positive(md, &key("attention.head_count"), &origin)?;
    let kv_heads = match md.contains_key(&key("attention.head_count_kv")) {
        true => meta_positive(md, &key("attention.head_count_kv"), &origin)?,
        false => heads,
    };
    let head_dim = match md.contains_key(&key("attention.key_length")) {
        true => meta_positive(md, &key("attention.key_length"), &origin)?,
        false => hidden / heads,
    };
    let tied = !content
        .tensor_infos
        .contains_key(&gguf_name(&tensors::hf(None, Slot::LmHead)).expect("the LM head has a GGUF name"));
    let has_bias = content
        .tensor_infos
        .contains_key(&gguf_name(&tensors::hf(Some(0), Slot::QBias)).expect("q bias has a GGUF name"));
    let token_id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
    let cfg_json = json!({
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": meta_usize(md, &key("feed_forward_length"), &origin)?,
        "num_hidden_layers": meta_usize(md, &key("block_count"), &origin)?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": meta_f64(md, &key(norm::GGUF_EPSILON_KEY)).unwrap_or(1e-5),
        "rope_theta": meta_f64(md, &key("rope.freq_base")).unwrap_or(10_000.0),
        "max_position_embeddings": meta_usize(md, &key("context_length"), &origin).unwrap_or(4096),
        "tie_word_embeddings": tied,
        "attention_bias": family == Family::Llama && has_bias,
        "bos_token_id": token_id("tokenizer.ggml.bos_token_id"),
        "eos_token_id": token_id("tokenizer.ggml.eos_token_id"),
        "pad_token_id": token_id("tokenizer.ggml.padding_token_id"),
    });
    let config = ModelConfig::from_json(&cfg_json, &origin)?;
    // Every tensor's shape is checked against the config before any data is read.
    let expected: HashMap<String, Vec<usize>> = config.parameter_shapes().into_iter().collect();
    for (name, info) in &content.tensor_infos {
        let Some(hf) = hf_name(name) else { continue };
        match expected.get(&hf) {
            Some(shape) if shape.as_slice() == info.shape.dims() => {}
            Some(shape) => {
                return Err(ModelError::Weights(format!(
                    "{origin}: tensor `{name}` has shape {:?}, the metadata implies {shape:?}",
                    info.shape.dims()
                )))
            }
            None => return Err(ModelError::Weights(format!("{origin}: unexpected tensor `{name}`"))),
        }
    }

    let mut params = ParamStore::new();
    let mut stored_dtypes = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = match hf_name(name) {
            Some(h) => h,
            // llama.cpp sometimes stores precomputed rope frequencies; they are not parameters.
            None if tensors::is_buffer(name) => continue,
            None => return Err(ModelError::Weights(format!("{origin}: unexpected tensor `{name}`"))),
        };
        let q = content
            .tensor(file, name, device)
            .map_err(|e| ModelError::Weights(format!("{origin}: tensor `{name}`: {e}")))?;
        *stored_dtypes.entry(format!("{:?}", q.dtype())).or_default() += q.shape().elem_count();
        let mut t = q.dequantize(device)?;
        if family == Family::Llama {
            match by_hf(&hf).and_then(|(_, s)| s.gguf_heads) {
                Some(GgufHeads::Query) => t = permute_heads(&t, heads, false)?,
                Some(GgufHeads::KeyValue) => t = permute_heads(&t, kv_heads, false)?,
                None => {}
            }
        }
        params.insert(hf, t)?;
    }
    params.check_against(&config, &origin)?;
    let tokenizer = tokenizer_from_metadata(md);
    Ok(GgufModel { config, params, tokenizer, stored_dtypes })
}

/// The GGUF tensor types ordo can read, by their names on the command line.
pub fn parse_ggml_dtype(s: &str) -> Option<GgmlDType> {
    Some(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        _ => return None,
    })
}

/// Writes a GGUF file (`dtype` for matrices, f32 for 1-D tensors) as llama.cpp's converter lays it out.
/// The tokenizer is written when it is a byte-level BPE tokenizer.
pub fn save_gguf(
    path: &Path,
    config: &ModelConfig,
    params: &ParamStore,
    tokenizer: Option<&TextTokenizer>,
    dtype: GgmlDType,
) -> Result<()> {
    params.check_against(config, "exporting GGUF")?;
    let arch = config.family.model_type();
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    for (name, var) in params.iter() {
        let g = gguf_name(name).ok_or_else(|| ModelError::Weights(format!("no GGUF name for `{name}`")))?;
        let mut t = var.as_tensor().clone();
        if config.family == Family::Llama {
            match by_hf(name).and_then(|(_, s)| s.gguf_heads) {
                Some(GgufHeads::Query) => t = permute_heads(&t, config.num_attention_heads, true)?,
                Some(GgufHeads::KeyValue) => t = permute_heads(&t, config.num_key_value_heads, true)?,
                None => {}
            }
        }
        let d = if t.rank() == 1 || t.dim(1)? % dtype.block_size() != 0 { GgmlDType::F32 } else { dtype };
        qtensors.push((g, QTensor::quantize(&t, d)?));
    }
    let u32v = |x: usize| GValue::U32(x as u32);
    let mut md: Vec<(String, GValue)> = vec![
        ("general.architecture".into(), GValue::String(arch.into())),
        (format!("{arch}.context_length"), u32v(config.max_position_embeddings)),
        (format!("{arch}.embedding_length"), u32v(config.hidden_size)),
        (format!("{arch}.block_count"), u32v(config.num_hidden_layers)),
        (format!("{arch}.feed_forward_length"), u32v(config.intermediate_size)),
        (format!("{arch}.attention.head_count"), u32v(config.num_attention_heads)),
        (format!("{arch}.attention.head_count_kv"), u32v(config.num_key_value_heads)),
        (format!("{arch}.attention.key_length"), u32v(config.head_dim)),
        (format!("{arch}.attention.value_length"), u32v(config.head_dim)),
        (format!("{arch}.rope.freq_base"), GValue::F32(config.rope_theta as f32)),
        (format!("{arch}.{}", norm::GGUF_EPSILON_KEY), GValue::F32(config.rms_norm_eps as f32)),
    ];
    if let Some(b) = config.bos_token_id {
        md.push(("tokenizer.ggml.bos_token_id".into(), GValue::U32(b)));
    }
    if let Some(&e) = config.eos_token_ids.first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), GValue::U32(e)));
    }
    if let Some(tok) = tokenizer {
        md.extend(tokenizer_to_metadata(tok)?);
    }
    let md_refs: Vec<(&str, &GValue)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &md_refs, &t_refs)?;
    crate::atomic::write_file(path, bytes.get_ref())
}

/// GPT-2 style pre-tokenizer regexes of llama.cpp's `tokenizer.ggml.pre` values.
fn split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama-bpe" | "llama3" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        "qwen2" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        _ => None,
    }
}

/// Builds a `tokenizers` BPE tokenizer from llama.cpp's `tokenizer.ggml.*` metadata.
fn tokenizer_from_metadata(md: &HashMap<String, GValue>) -> std::result::Result<TextTokenizer, String> {
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .ok_or("the GGUF file has no tokenizer (tokenizer.ggml.model is missing)")?;
    if model != "gpt2" {
        return Err(format!("GGUF tokenizer model `{model}` is not supported; ordo reads byte-level BPE (`gpt2`)"));
    }
    let strings = |k: &str| -> std::result::Result<Vec<String>, String> {
        md.get(k)
            .and_then(|v| v.to_vec().ok())
            .ok_or(format!("GGUF metadata `{k}` is missing"))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| format!("GGUF metadata `{k}`: expected strings")))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
        .unwrap_or_else(|| vec![1; tokens.len()]);
    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match (pre, split_regex(pre)) {
        ("smollm", _) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        (_, Some(re)) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false}, byte_level(false)]}),
        ("default" | "gpt2", None) => byte_level(true),
        (other, None) => {
            return Err(format!(
                "GGUF pre-tokenizer `{other}` is not supported (known: smollm, gpt2, llama-bpe, qwen2)"
            ))
        }
    };
    let vocab: serde_json::Map<String, Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    // Control (3) and user-defined (4) tokens are matched whole before BPE, as llama.cpp does.
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| ty == 3 || ty == 4)
        .map(|(i, &ty)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": ty == 3})
        })
        .collect();
    let tok_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let tok_name = |k: &str| md.get(k).and_then(|v| v.to_u32().ok()).and_then(|i| tokens.get(i as usize)).cloned();
    let mut cfg = json!({ "model_max_length": 8192 });
    for (field, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ] {
        if let Some(t) = tok_name(key) {
            cfg[field] = json!(t);
        }
    }
    if let Some(t) = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()) {
        cfg["chat_template"] = json!(t);
    }
    TextTokenizer::from_json(&tok_json, cfg).map_err(|e| e.to_string())
}

/// llama.cpp tokenizer metadata for a byte-level BPE tokenizer.
fn tokenizer_to_metadata(tok: &TextTokenizer) -> Result<Vec<(String, GValue)>> {
    let v: Value = serde_json::from_str(
        &tok.inner().to_string(false).map_err(|e| ModelError::Tokenizer(format!("cannot serialise tokenizer: {e}")))?,
    )
    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let model = &v["model"];
    if model["type"] != "BPE" {
        return Err(ModelError::Unsupported("GGUF export writes byte-level BPE tokenizers only".into()));
    }
    let mut tokens = vec![String::new(); tok.vocab_size()];
    let mut types = vec![1i32; tok.vocab_size()];
    for (t, id) in model["vocab"].as_object().into_iter().flatten() {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = t.clone();
        }
    }
    for a in v["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(c)) = (a["id"].as_u64(), a["content"].as_str()) {
            tokens[id as usize] = c.to_string();
            types[id as usize] = if a["special"] == true { 3 } else { 4 };
        }
    }
    let merges: Vec<GValue> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::Array(p) => {
                GValue::String(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")))
            }
            other => GValue::String(other.as_str().unwrap_or("").to_string()),
        })
        .collect();
    let mut md = vec![
        ("tokenizer.ggml.model".to_string(), GValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GValue::String("default".into())),
        ("tokenizer.ggml.tokens".to_string(), GValue::Array(tokens.into_iter().map(GValue::String).collect())),
        ("tokenizer.ggml.token_type".to_string(), GValue::Array(types.into_iter().map(GValue::I32).collect())),
        ("tokenizer.ggml.merges".to_string(), GValue::Array(merges)),
    ];
    if let Some(t) = tok.chat_template() {
        md.push(("tokenizer.chat_template".to_string(), GValue::String(t.to_string())));
    }
    Ok(md)
}

/// Number of weights in a GGUF file, read from its header (no tensor data is loaded).
pub fn gguf_parameter_count(path: &Path) -> Result<usize> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::Weights(format!("{}: not a readable GGUF file: {e}", path.display())))?;
    Ok(content.tensor_infos.values().map(|t| t.shape.elem_count()).sum())
}
