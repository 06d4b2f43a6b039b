//! The decoder's tensors, in one table: each tensor's HF name, GGUF name, shape, when it is present
//! and how it is initialised. Checkpoint loading and saving (`weights`), GGUF import and export
//! (`gguf`), the parameter list of a configuration and initialisation (`params`) all read it.

use crate::config::ModelConfig;

/// How a fresh model initialises a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// All ones (norm weights).
    Ones,
    /// All zeros (biases).
    Zeros,
    /// N(0, std²).
    Normal,
    /// N(0, (std / sqrt(2 layers))²): projections into the residual stream (GPT-2's scaling).
    ResidualNormal,
}

/// Which heads a Llama GGUF file stores interleaved in a tensor's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufHeads {
    /// The query heads.
    Query,
    /// The key/value heads.
    KeyValue,
}

/// What a tensor is in the decoder, whatever its name in a file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Embed,
    InputNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    OBias,
    QNorm,
    KNorm,
    PostNorm,
    Gate,
    Up,
    Down,
    Norm,
    Score,
    LmHead,
}

/// One tensor of the decoder.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// What it is.
    pub slot: Slot,
    /// HF name (after `model.layers.N.` for a layer's tensors).
    pub hf: &'static str,
    /// GGUF name (after `blk.N.` for a layer's tensors); None where GGUF has none.
    pub gguf: Option<&'static str>,
    pub shape: fn(&ModelConfig) -> Vec<usize>,
    pub present: fn(&ModelConfig) -> bool,
    pub init: Init,
    /// Llama GGUF files interleave the two halves of each of these heads in the rows.
    pub gguf_heads: Option<GgufHeads>,
}

fn always(_: &ModelConfig) -> bool {
    true
}
fn qkv_bias(c: &ModelConfig) -> bool {
    c.qkv_bias
}
fn o_bias(c: &ModelConfig) -> bool {
    c.o_bias
}
fn qk_norm(c: &ModelConfig) -> bool {
    c.qk_norm
}
fn classifier(c: &ModelConfig) -> bool {
    c.score_labels.is_some()
}
fn untied_lm_head(c: &ModelConfig) -> bool {
    c.score_labels.is_none() && !c.tie_word_embeddings
}
fn q_width(c: &ModelConfig) -> usize {
    c.num_attention_heads * c.head_dim
}
fn kv_width(c: &ModelConfig) -> usize {
    c.num_key_value_heads * c.head_dim
}

const fn spec(
    slot: Slot,
    hf: &'static str,
    gguf: Option<&'static str>,
    shape: fn(&ModelConfig) -> Vec<usize>,
    present: fn(&ModelConfig) -> bool,
    init: Init,
) -> TensorSpec {
    TensorSpec { slot, hf, gguf, shape, present, init, gguf_heads: None }
}

const fn heads(s: TensorSpec, h: GgufHeads) -> TensorSpec {
    TensorSpec { gguf_heads: Some(h), ..s }
}

/// Tensors before the layers, in checkpoint order.
pub const BEFORE_LAYERS: &[TensorSpec] = &[spec(
    Slot::Embed,
    "model.embed_tokens.weight",
    Some("token_embd.weight"),
    |c| vec![c.vocab_size, c.hidden_size],
    always,
    Init::Normal,
)];

/// Each layer's tensors, in checkpoint order (this order is also the order of initialisation's draws).
pub const LAYER: &[TensorSpec] = &[
    spec(
        Slot::InputNorm,
        "input_layernorm.weight",
        Some("attn_norm.weight"),
        |c| vec![c.hidden_size],
        always,
        Init::Ones,
    ),
    heads(
        spec(
            Slot::Q,
            "self_attn.q_proj.weight",
            Some("attn_q.weight"),
            |c| vec![q_width(c), c.hidden_size],
            always,
            Init::Normal,
        ),
        GgufHeads::Query,
    ),
    heads(
        spec(
            Slot::K,
            "self_attn.k_proj.weight",
            Some("attn_k.weight"),
            |c| vec![kv_width(c), c.hidden_size],
            always,
            Init::Normal,
        ),
        GgufHeads::KeyValue,
    ),
    spec(
        Slot::V,
        "self_attn.v_proj.weight",
        Some("attn_v.weight"),
        |c| vec![kv_width(c), c.hidden_size],
        always,
        Init::Normal,
    ),
    heads(
        spec(Slot::QBias, "self_attn.q_proj.bias", Some("attn_q.bias"), |c| vec![q_width(c)], qkv_bias, Init::Zeros),
        GgufHeads::Query,
    ),
    heads(
        spec(Slot::KBias, "self_attn.k_proj.bias", Some("attn_k.bias"), |c| vec![kv_width(c)], qkv_bias, Init::Zeros),
        GgufHeads::KeyValue,
    ),
    spec(Slot::VBias, "self_attn.v_proj.bias", Some("attn_v.bias"), |c| vec![kv_width(c)], qkv_bias, Init::Zeros),
    spec(
        Slot::O,
        "self_attn.o_proj.weight",
        Some("attn_output.weight"),
        |c| vec![c.hidden_size, q_width(c)],
        always,
        Init::ResidualNormal,
    ),
    spec(Slot::OBias, "self_attn.o_proj.bias", Some("attn_output.bias"), |c| vec![c.hidden_size], o_bias, Init::Zeros),
    spec(Slot::QNorm, "self_attn.q_norm.weight", Some("attn_q_norm.weight"), |c| vec![c.head_dim], qk_norm, Init::Ones),
    spec(Slot::KNorm, "self_attn.k_norm.weight", Some("attn_k_norm.weight"), |c| vec![c.head_dim], qk_norm, Init::Ones),
    spec(
        Slot::PostNorm,
        "post_attention_layernorm.weight",
        Some("ffn_norm.weight"),
        |c| vec![c.hidden_size],
        always,
        Init::Ones,
    ),
    spec(
        Slot::Gate,
        "mlp.gate_proj.weight",
        Some("ffn_gate.weight"),
        |c| vec![c.intermediate_size, c.hidden_size],
        always,
        Init::Normal,
    ),
    spec(
        Slot::Up,
        "mlp.up_proj.weight",
        Some("ffn_up.weight"),
        |c| vec![c.intermediate_size, c.hidden_size],
        always,
        Init::Normal,
    ),
    spec(
        Slot::Down,
        "mlp.down_proj.weight",
        Some("ffn_down.weight"),
        |c| vec![c.hidden_size, c.intermediate_size],
        always,
        Init::ResidualNormal,
    ),
];

/// Tensors after the layers, in checkpoint order.
pub const AFTER_LAYERS: &[TensorSpec] = &[
    spec(Slot::Norm, "model.norm.weight", Some("output_norm.weight"), |c| vec![c.hidden_size], always, Init::Ones),
    spec(
        Slot::Score,
        "score.weight",
        None,
        |c| vec![c.score_labels.unwrap_or(1), c.hidden_size],
        classifier,
        Init::Normal,
    ),
    spec(
        Slot::LmHead,
        "lm_head.weight",
        Some("output.weight"),
        |c| vec![c.vocab_size, c.hidden_size],
        untied_lm_head,
        Init::Normal,
    ),
];

/// What checkpoints may hold besides parameters (skipped on loading): HF's rotary inverse
/// frequencies (a name suffix) and llama.cpp's precomputed rope frequencies.
pub const NOT_PARAMETERS: [&str; 2] = ["rotary_emb.inv_freq", "rope_freqs.weight"];

/// Whether a checkpoint tensor is a buffer rather than a parameter.
pub fn is_buffer(name: &str) -> bool {
    NOT_PARAMETERS.iter().any(|s| name.ends_with(s))
}

impl ModelConfig {
    /// Every parameter's HF name and shape, in checkpoint order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        present(self).into_iter().map(|(name, spec)| (name, (spec.shape)(self))).collect()
    }
}

/// Every tensor present in `cfg`'s decoder with its full HF name, in checkpoint order.
pub fn present(cfg: &ModelConfig) -> Vec<(String, &'static TensorSpec)> {
    let mut out: Vec<(String, &'static TensorSpec)> =
        BEFORE_LAYERS.iter().filter(|s| (s.present)(cfg)).map(|s| (s.hf.to_string(), s)).collect();
    for l in 0..cfg.num_hidden_layers {
        out.extend(LAYER.iter().filter(|s| (s.present)(cfg)).map(|s| (format!("model.layers.{l}.{}", s.hf), s)));
    }
    out.extend(AFTER_LAYERS.iter().filter(|s| (s.present)(cfg)).map(|s| (s.hf.to_string(), s)));
    out
}

/// The spec of a full HF name and its layer index (None outside the layers).
pub fn by_hf(name: &str) -> Option<(Option<usize>, &'static TensorSpec)> {
    let global = BEFORE_LAYERS.iter().chain(AFTER_LAYERS).find(|s| s.hf == name);
    if let Some(s) = global {
        return Some((None, s));
    }
    let (layer, tail) = name.strip_prefix("model.layers.")?.split_once('.')?;
    Some((Some(layer.parse().ok()?), LAYER.iter().find(|s| s.hf == tail)?))
}

/// The spec of a full GGUF name and its layer index (None outside the layers).
pub fn by_gguf(name: &str) -> Option<(Option<usize>, &'static TensorSpec)> {
    let global = BEFORE_LAYERS.iter().chain(AFTER_LAYERS).find(|s| s.gguf == Some(name));
    if let Some(s) = global {
        return Some((None, s));
    }
    let (layer, tail) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((Some(layer.parse().ok()?), LAYER.iter().find(|s| s.gguf == Some(tail))?))
}

/// The full name of a tensor, in HF's or GGUF's naming.
fn full_name(layer: Option<usize>, spec: &TensorSpec, gguf: bool) -> Option<String> {
    let name = if gguf { spec.gguf? } else { spec.hf };
    Some(match layer {
        Some(l) if gguf => format!("blk.{l}.{name}"),
        Some(l) => format!("model.layers.{l}.{name}"),
        None => name.to_string(),
    })
}

/// The full HF name of a slot's tensor (`layer`: its layer, for a layer's tensor).
pub fn hf(layer: Option<usize>, slot: Slot) -> String {
    let spec = BEFORE_LAYERS
        .iter()
        .chain(LAYER)
        .chain(AFTER_LAYERS)
        .find(|s| s.slot == slot)
        .expect("every slot has a row in the table");
    full_name(layer.filter(|_| LAYER.iter().any(|s| s.slot == slot)), spec, false).expect("every tensor has an HF name")
}

/// Translates an HF parameter name to its GGUF name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let (layer, spec) = by_hf(hf)?;
    full_name(layer, spec, true)
}

/// Translates a GGUF tensor name to its HF parameter name.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (layer, spec) = by_gguf(gguf)?;
    full_name(layer, spec, false)
}
