//! FLOP and memory accounting of the decoders: the multiply-add FLOPs of a forward pass, a training
//! step and KV-cached sampling, and the bytes a training step needs, from the configuration alone.

use crate::attention::Mask;
use crate::ModelConfig;

/// Weights a token's per-token work multiplies by: every projection and the LM head.
fn matmul_params(cfg: &ModelConfig) -> f64 {
    let (h, hd, i) = (cfg.hidden_size as f64, cfg.head_dim as f64, cfg.intermediate_size as f64);
    let (q, kv) = (cfg.num_attention_heads as f64 * hd, cfg.num_key_value_heads as f64 * hd);
    let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
    per_layer * cfg.num_hidden_layers as f64 + h * cfg.vocab_size as f64
}

/// Multiply-add FLOPs of attention's scores and weighted sums for one query against `keys` keys, all layers.
fn attention_flops(cfg: &ModelConfig, keys: f64) -> f64 {
    let heads = cfg.num_attention_heads as f64 * cfg.num_hidden_layers as f64;
    2.0 * 2.0 * heads * keys * cfg.head_dim as f64
}

/// [`attention_flops`] of a decoding step's query at `position` against the cached keys each layer's
/// mask lets it see.
fn cached_attention_flops(cfg: &ModelConfig, position: usize) -> f64 {
    let per_layer = 2.0 * 2.0 * cfg.num_attention_heads as f64 * cfg.head_dim as f64;
    (0..cfg.num_hidden_layers).map(|l| per_layer * Mask::of(cfg, l).keys(position).len() as f64).sum()
}

/// Multiply-add FLOPs of a forward pass that runs the per-token work (projections, MLP, LM head) on
/// `tokens` positions and attention on `rows` rows of `seq` positions (each query against all `seq` keys,
/// as dense attention kernels compute it).
pub fn forward_flops(cfg: &ModelConfig, tokens: usize, rows: usize, seq: usize) -> f64 {
    2.0 * tokens as f64 * matmul_params(cfg) + (rows * seq) as f64 * attention_flops(cfg, seq as f64)
}

/// Multiply-add FLOPs of one training step (forward + backward = 3x forward) on `batch` x `seq` tokens.
pub fn training_step_flops(cfg: &ModelConfig, batch: usize, seq: usize) -> f64 {
    3.0 * forward_flops(cfg, batch * seq, batch, seq)
}

/// Weights of `lora`'s adapters on a model of `cfg`: rank x (in + out) for every adapted weight.
pub fn adapter_params(cfg: &ModelConfig, lora: &crate::lora::LoraConfig) -> f64 {
    let per_layer: usize = lora
        .slots()
        .into_iter()
        .map(|slot| {
            let (out, inner) = crate::lora::weight_shape(cfg, slot);
            lora.rank * (out + inner)
        })
        .sum();
    (per_layer * cfg.num_hidden_layers) as f64
}

/// Multiply-add FLOPs of one training step of `lora`'s adapters on a forward pass of
/// [`forward_flops`]`(tokens, rows, seq)`: the forward and backward passes without the frozen weights'
/// gradients (3x forward less the base weights' 2 x tokens x weights), and the adapters' own forward
/// (2 per weight and token) and backward (A's and B's gradients and the input's, 4 per weight and token).
pub fn lora_training_flops(
    cfg: &ModelConfig,
    lora: &crate::lora::LoraConfig,
    tokens: usize,
    rows: usize,
    seq: usize,
) -> f64 {
    3.0 * forward_flops(cfg, tokens, rows, seq) - 2.0 * tokens as f64 * matmul_params(cfg)
        + 6.0 * tokens as f64 * adapter_params(cfg, lora)
}

/// Multiply-add FLOPs of sampling `new_tokens` tokens in each of `rows` rows whose prompts have
/// `prompt_len` tokens, `distinct_prompts` of them (prefilled once each): per new token the per-token
/// work and attention over the cached keys its mask sees.
pub fn sampling_flops(
    cfg: &ModelConfig,
    distinct_prompts: usize,
    rows: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> f64 {
    let prefill = forward_flops(cfg, distinct_prompts * prompt_len, distinct_prompts, prompt_len);
    let decode: f64 = (0..new_tokens)
        .map(|t| rows as f64 * (2.0 * matmul_params(cfg) + cached_attention_flops(cfg, prompt_len + t)))
        .sum();
    prefill + decode
}

/// Bytes a training step needs at least, in f32: parameters, gradients and AdamW's two moments, a frozen
/// reference's parameters when there is one, and the activations of a batch of `slots` positions
/// (rows x padded length) of which `computed` are distinct real-token prefixes, the positions the
/// training pass computes (`cpu_train`: shared prefixes once, padding never). Per computed
/// token and layer about 7 x hidden + 4 x MLP width values (norms, projections, attention output, MLP,
/// and their gradients in the backward pass); per slot and layer 3 x hidden (q, k and v on attention's
/// padded grid; no attention probabilities, which the CPU attention recomputes in its backward pass),
/// plus 2 x vocab per slot for the logits and their gradient.
pub fn step_memory_bytes(cfg: &ModelConfig, computed: usize, slots: usize, reference: bool) -> f64 {
    let p = cfg.parameter_count() as f64;
    p * 4.0 * if reference { 5.0 } else { 4.0 } + activation_bytes(cfg, computed, slots)
}

/// [`step_memory_bytes`] of a step that trains `lora`'s adapters: the base's parameters once (the
/// reference, when there is one, is the base itself), the adapters with their gradients and AdamW's
/// two moments, and the same activations.
pub fn lora_step_memory_bytes(cfg: &ModelConfig, lora: &crate::lora::LoraConfig, computed: usize, slots: usize) -> f64 {
    cfg.parameter_count() as f64 * 4.0 + adapter_params(cfg, lora) * 4.0 * 4.0 + activation_bytes(cfg, computed, slots)
}

/// The activations' bytes of [`step_memory_bytes`].
fn activation_bytes(cfg: &ModelConfig, computed: usize, slots: usize) -> f64 {
    let (h, i, layers) = (cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.num_hidden_layers as f64);
    let per_computed = (7.0 * h + 4.0 * i) * layers;
    let per_slot = 3.0 * h * layers + 2.0 * cfg.vocab_size as f64;
    (computed as f64 * per_computed + slots as f64 * per_slot) * 4.0
}
