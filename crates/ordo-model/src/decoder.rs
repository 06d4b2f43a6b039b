//! The Llama-family decoder shared by Llama/SmolLM, Qwen2 and Qwen3, for training and KV-cached decoding.
//!
//! The three families differ only in switches read from `config.json` (q/k/v bias for Qwen2,
//! per-head q/k RMSNorm and explicit `head_dim` for Qwen3), so one implementation serves all
//! three, with weights named exactly as in HF.

use crate::attention::{additive_bias, Mask};
use crate::config::ModelConfig;
use crate::cpu::{CpuDecoder, LayerTensors};
use crate::cpu_train::TrainPass;
use crate::error::{ModelError, Result};
use crate::lora::{peft_key, Factor, LowRank};
use crate::norm::NormTensors;
use crate::ops::{self, OpPath};
use crate::params::ParamStore;
use crate::tensors::{self, Slot};
use candle_core::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache;
use std::sync::{Arc, OnceLock};

/// A linear projection with an HF-layout weight `[out, in]` and an optional bias.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A LoRA adapter: `A` `[rank, in]`, `B` `[out, rank]` and the scale of its path.
    lora: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    /// The weight of slot `weight` in `layer`, when `bias` is given that bias, and the slot's LoRA
    /// adapter when the store has one.
    fn load(p: &ParamStore, layer: usize, weight: Slot, bias: Option<Slot>) -> Result<Self> {
        let lora = match p.lora() {
            Some(c) if c.slots().contains(&weight) => Some((
                p.tensor(&peft_key(layer, weight, Factor::A))?,
                p.tensor(&peft_key(layer, weight, Factor::B))?,
                c.alpha / c.rank as f64,
            )),
            _ => None,
        };
        Ok(Linear {
            weight: p.tensor(&tensors::hf(Some(layer), weight))?,
            bias: match bias {
                Some(b) => Some(p.tensor(&tensors::hf(Some(layer), b))?),
                None => None,
            },
            lora,
        })
    }

    /// `x Wᵀ (+ b) + s (x Aᵀ) Bᵀ` (no LoRA dropout on this path: [`Decoder::with_lora_dropout`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::linear(x, &self.weight, self.bias.as_ref())?;
        Ok(match &self.lora {
            Some((a, b, scale)) => (y + (ops::linear(&ops::linear(x, a, None)?, b, None)? * *scale)?)?,
            None => y,
        })
    }

    /// The adapter as the CPU passes hold it.
    fn low_rank(&self) -> Result<Option<LowRank>> {
        let Some((a, b, scale)) = &self.lora else { return Ok(None) };
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let (rank, inner) = a.dims2()?;
        Ok(Some(LowRank { a: flat(a)?, b: flat(b)?, rank, inner, out: b.dim(0)?, scale: *scale as f32 }))
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: NormTensors,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<NormTensors>,
    k_norm: Option<NormTensors>,
    post_norm: NormTensors,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Which keys this layer's attention sees.
    mask: Mask,
}

/// Cosine and sine tables of the rotary embedding, one row per position.
#[derive(Debug, Clone)]
struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    /// Computed as transformers does it (f32 inverse frequencies and products).
    fn new(cfg: &ModelConfig, device: &Device, dtype: DType) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let mut inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / cfg.head_dim as f32)).collect();
        if let Some(s) = &cfg.rope_scaling {
            // Llama 3.1 frequency-dependent scaling.
            let old = s.original_max_position_embeddings as f64;
            let low_wavelen = old / s.low_freq_factor;
            let high_wavelen = old / s.high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f as f64;
                let fv = *f as f64;
                *f = if wavelen < high_wavelen {
                    fv
                } else if wavelen > low_wavelen {
                    fv / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * fv / s.factor + smooth * fv
                } as f32;
            }
        }
        let n = cfg.max_position_embeddings;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
        })
    }

    /// Tables gathered at per-row positions: two tensors `[batch, seq, head_dim / 2]`.
    fn at(&self, positions: &[Vec<u32>], device: &Device) -> Result<(Tensor, Tensor)> {
        let (b, t) = (positions.len(), positions[0].len());
        let max = self.cos.dim(0)?;
        if let Some(&p) = positions.iter().flatten().find(|&&p| p as usize >= max) {
            return Err(ModelError::Input(format!(
                "position {p} is beyond max_position_embeddings ({max}); use shorter sequences"
            )));
        }
        let flat: Vec<u32> = positions.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, b * t, device)?;
        let half = self.cos.dim(1)?;
        Ok((
            self.cos.index_select(&idx, 0)?.reshape((b, t, half))?,
            self.sin.index_select(&idx, 0)?.reshape((b, t, half))?,
        ))
    }
}

/// Per-layer keys and values of earlier positions, and which cached positions are real tokens.
#[derive(Debug, Clone)]
pub struct DecodeCache {
    layers: Vec<KvCache>,
    /// For each row, one flag per cached position: 1 for a real token, 0 for padding.
    valid: Vec<Vec<u8>>,
    /// For each row, each cached position's position id (real tokens before it).
    positions: Vec<Vec<u32>>,
    /// For each row, the position id its next token gets.
    next_position: Vec<u32>,
}

impl DecodeCache {
    /// An empty cache for `batch` rows that grows in chunks of `capacity` positions.
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize) -> Self {
        DecodeCache {
            layers: (0..cfg.num_hidden_layers).map(|_| KvCache::new(2, capacity.max(1))).collect(),
            valid: vec![Vec::new(); batch],
            positions: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Bookkeeping for one full-sequence pass that keeps no keys or values.
    fn uncached(batch: usize) -> Self {
        DecodeCache {
            layers: Vec::new(),
            valid: vec![Vec::new(); batch],
            positions: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoder's CPU weight view, built at first use; its `Debug` does not print the weights.
#[derive(Clone, Default)]
struct CpuView(OnceLock<Option<Arc<CpuDecoder>>>);

impl std::fmt::Debug for CpuView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "CpuView(built)" } else { "CpuView(not built)" })
    }
}

/// A Llama-family decoder built over a [`ParamStore`]'s tensors.
///
/// On the CPU in f32 its forward, training and sampling passes read a copy of the weights made at
/// first use and kept for the decoder's life (one copy per optimiser step, not per call): a decoder
/// is a snapshot of the parameters for one step. Build a new one after changing the parameters.
#[derive(Debug, Clone)]
pub struct Decoder {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: NormTensors,
    lm_head: Tensor,
    rope: RopeTables,
    device: Device,
    /// The CPU weight view, built at first use (`None` inside: the decoder has no CPU path).
    cpu: CpuView,
    /// LoRA dropout's probability (0 without adapters) and, once a training step sets it, its seed.
    lora_dropout: (f64, Option<u64>),
    /// Whether the store has adapters and nothing else trains but a reward model's head (the CPU
    /// backward pass then computes no base weight's gradient).
    only_adapters_train: bool,
    /// Whether a reward model's `score` head trains.
    head_trains: bool,
}

impl Decoder {
    /// Builds the decoder over `params` (trainable parameters stay tracked by autograd).
    pub fn new(cfg: &ModelConfig, params: &ParamStore) -> Result<Self> {
        params.check_against(cfg, "building the decoder")?;
        let embed = params.tensor(&tensors::hf(None, Slot::Embed))?;
        let device = embed.device().clone();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let norm = |slot| NormTensors::load(params, cfg, Some(l), slot);
                let bias = |b| cfg.qkv_bias.then_some(b);
                Ok(Layer {
                    input_norm: norm(Slot::InputNorm)?,
                    q: Linear::load(params, l, Slot::Q, bias(Slot::QBias))?,
                    k: Linear::load(params, l, Slot::K, bias(Slot::KBias))?,
                    v: Linear::load(params, l, Slot::V, bias(Slot::VBias))?,
                    o: Linear::load(params, l, Slot::O, cfg.o_bias.then_some(Slot::OBias))?,
                    q_norm: if cfg.qk_norm { Some(norm(Slot::QNorm)?) } else { None },
                    k_norm: if cfg.qk_norm { Some(norm(Slot::KNorm)?) } else { None },
                    post_norm: norm(Slot::PostNorm)?,
                    gate: Linear::load(params, l, Slot::Gate, None)?,
                    up: Linear::load(params, l, Slot::Up, None)?,
                    down: Linear::load(params, l, Slot::Down, None)?,
                    mask: Mask::of(cfg, l),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope = RopeTables::new(cfg, &device, embed.dtype())?;
        let score = tensors::hf(None, Slot::Score);
        let lm_head = match cfg.score_labels {
            Some(_) => params.tensor(&tensors::hf(None, Slot::Score))?,
            None if cfg.tie_word_embeddings => embed.clone(),
            None => params.tensor(&tensors::hf(None, Slot::LmHead))?,
        };
        Ok(Decoder {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: NormTensors::load(params, cfg, None, Slot::Norm)?,
            lm_head,
            rope,
            device,
            cpu: CpuView::default(),
            lora_dropout: (params.lora().map_or(0.0, |c| c.dropout), params.lora_dropout_seed()),
            only_adapters_train: params.lora().is_some()
                && params.trainable().iter().all(|(n, _)| {
                    (n.starts_with("base_model.model.") && n.contains(".lora_"))
                        || (cfg.score_labels.is_some() && n.as_str() == score)
                }),
            head_trains: cfg.score_labels.is_some() && !params.is_frozen(&score),
        })
    }

    /// This decoder with LoRA dropout in its training passes, drawn from `seed` (one seed per
    /// optimiser step: the masks of a step's forward and backward passes are the same). Without it,
    /// or without adapters or dropout, training passes drop nothing. Call before the first pass.
    pub fn with_lora_dropout(mut self, seed: u64) -> Self {
        self.lora_dropout.1 = Some(seed);
        self.cpu = CpuView::default();
        self
    }

    /// The CPU sampling path ([`CpuDecoder`]) over this decoder's copy of the weights (see
    /// [`Decoder`]); `None` off the CPU, for other dtypes than f32 and for classifiers (which are
    /// not sampled from).
    pub fn cpu_decoder(&self) -> Result<Option<Arc<CpuDecoder>>> {
        if self.cfg.score_labels.is_some() {
            return Ok(None);
        }
        self.cpu_weights()
    }

    /// A training forward pass over full sequences (`ids` [batch, seq], `mask` as in
    /// [`Decoder::forward`]): on the CPU in f32 the hand-written pass of [`crate::cpu_train`],
    /// elsewhere [`Decoder::forward`] on [`OpPath::Differentiable`] in candle's graph.
    pub fn forward_train(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<TrainPass> {
        let Some(weights) = self.cpu_weights()? else {
            if let (p, Some(_)) = self.lora_dropout {
                if p > 0.0 {
                    return Err(ModelError::Input(format!(
                        "LoRA dropout ({p}) runs on the CPU path only; set the adapters' dropout to 0 on {:?}",
                        self.device.location()
                    )));
                }
            }
            return Ok(TrainPass::in_graph(self.forward(ids, mask, OpPath::Differentiable)?));
        };
        let (rows, valid) = rows_and_mask(ids, mask)?;
        let (logits, tape) = weights.forward_train(&rows, &valid)?;
        TrainPass::on_tape(&self.cfg, weights, logits, tape, &self.device)
    }

    /// [`CpuDecoder`] weights on the CPU in f32 (classifiers included), else `None`: copied from the
    /// tensors at first use, then shared.
    fn cpu_weights(&self) -> Result<Option<Arc<CpuDecoder>>> {
        if let Some(view) = self.cpu.0.get() {
            return Ok(view.clone());
        }
        let view = self.copy_cpu_weights()?.map(Arc::new);
        Ok(self.cpu.0.get_or_init(|| view).clone())
    }

    /// A fresh copy of the weights as [`CpuDecoder`] weights (CPU, f32), else `None`.
    fn copy_cpu_weights(&self) -> Result<Option<CpuDecoder>> {
        let eligible = self.device.is_cpu() && self.embed.dtype() == DType::F32;
        Ok(if eligible {
            let layers: Vec<LayerTensors<'_>> = self
                .layers
                .iter()
                .map(|l| -> Result<LayerTensors<'_>> {
                    Ok(LayerTensors {
                        input_norm: &l.input_norm,
                        q: (&l.q.weight, l.q.bias.as_ref()),
                        k: (&l.k.weight, l.k.bias.as_ref()),
                        v: (&l.v.weight, l.v.bias.as_ref()),
                        o: (&l.o.weight, l.o.bias.as_ref()),
                        q_norm: l.q_norm.as_ref(),
                        k_norm: l.k_norm.as_ref(),
                        post_norm: &l.post_norm,
                        gate: &l.gate.weight,
                        up: &l.up.weight,
                        down: &l.down.weight,
                        lora: [
                            (Slot::Q, &l.q),
                            (Slot::K, &l.k),
                            (Slot::V, &l.v),
                            (Slot::O, &l.o),
                            (Slot::Gate, &l.gate),
                            (Slot::Up, &l.up),
                            (Slot::Down, &l.down),
                        ]
                        .into_iter()
                        .filter_map(|(slot, lin)| lin.low_rank().transpose().map(|r| r.map(|lr| (slot, lr))))
                        .collect::<Result<Vec<_>>>()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let tables = (&self.rope.cos, &self.rope.sin);
            let mut dec = CpuDecoder::new(&self.cfg, &self.embed, &layers, &self.norm, &self.lm_head, tables)?;
            if let (p, Some(seed)) = self.lora_dropout {
                dec.dropout = (p > 0.0).then_some(crate::cpu::Dropout { p, seed });
            }
            dec.base_gradients = !self.only_adapters_train;
            dec.head_gradient = self.head_trains;
            Some(dec)
        } else {
            None
        })
    }

    /// A decoder over the same weights that autograd does not track (for sampling and evaluation).
    pub fn new_inference(cfg: &ModelConfig, params: &ParamStore) -> Result<Self> {
        let mut frozen = params.clone();
        frozen.freeze_where(|_| true);
        Self::new(cfg, &frozen)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logits at every position: `ids` [batch, seq] (u32), `mask` [batch, seq] (1 = token,
    /// 0 = padding, left or right) -> [batch, seq, vocab] (a classifier: [batch, seq, labels]).
    /// Differentiable on [`OpPath::Differentiable`].
    /// On [`OpPath::Inference`] on the CPU in f32 this is the hand-written forward pass of
    /// [`crate::cpu_train`] without a graph, keeping no activations (padding's logits are 0 there;
    /// elsewhere they are whatever the masked computation gives: read logits at real tokens only).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, path: OpPath) -> Result<Tensor> {
        let (rows, valid) = rows_and_mask(ids, mask)?;
        if path == OpPath::Inference {
            if let Some(weights) = self.cpu_weights()? {
                let logits = weights.forward_logits(&rows, &valid)?;
                let shape = (rows.len(), rows.first().map_or(0, Vec::len), weights.vocab());
                return Ok(Tensor::from_vec(logits, shape, &self.device)?);
            }
        }
        let mut cache = DecodeCache::uncached(rows.len());
        self.run(&rows, &valid, &mut cache, false, path)
    }

    /// Appends `ids` (one chunk per row, equal lengths; `valid` marks padding) to the cache and
    /// returns the logits of the chunk's last position, [batch, vocab], on [`OpPath::Inference`].
    pub fn decode(&self, ids: &[Vec<u32>], valid: &[Vec<u8>], cache: &mut DecodeCache) -> Result<Tensor> {
        let logits = self.run(ids, valid, cache, true, OpPath::Inference)?;
        Ok(logits.squeeze(1)?)
    }

    fn run(
        &self,
        ids: &[Vec<u32>],
        valid: &[Vec<u8>],
        cache: &mut DecodeCache,
        last_only: bool,
        path: OpPath,
    ) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || ids.iter().any(|r| r.len() != t) {
            return Err(ModelError::Input("expected a non-empty batch of equal-length rows".into()));
        }
        if cache.valid.len() != b {
            return Err(ModelError::Input(format!("cache holds {} rows, batch has {b}", cache.valid.len())));
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(&bad) = ids.iter().flatten().find(|&&i| i >= vocab) {
            return Err(ModelError::Input(format!("token id {bad} is out of the vocabulary (size {vocab})")));
        }
        // Positions count real tokens only, so a left-padded row sees the same positions as unpadded.
        // A padding position past the rotary tables (after a full-length row) borrows the last one:
        // its value is never used.
        let last_position = self.rope.cos.dim(0)?.saturating_sub(1) as u32;
        let mut positions = vec![vec![0u32; t]; b];
        for r in 0..b {
            for i in 0..t {
                let next = cache.next_position[r];
                positions[r][i] = if valid[r][i] != 0 { next } else { next.min(last_position) };
                if valid[r][i] != 0 {
                    cache.next_position[r] += 1;
                }
            }
            cache.valid[r].extend_from_slice(&valid[r]);
            cache.positions[r].extend_from_slice(&positions[r]);
        }
        let offset = cache.len() - t;
        // An additive bias [b, 1, t, cached positions] per distinct layer mask (0 where a query sees a
        // key, -1e9 where it does not), and each layer's index into them.
        let (mut masks, mut biases, mut bias_of) = (Vec::new(), Vec::new(), Vec::with_capacity(self.layers.len()));
        for layer in &self.layers {
            let i = match masks.iter().position(|m| *m == layer.mask) {
                Some(i) => i,
                None => {
                    let bias = additive_bias(layer.mask, &positions, &cache.positions, &cache.valid, offset);
                    let shape = (b, 1, t, cache.len());
                    biases.push(Tensor::from_vec(bias, shape, &self.device)?.to_dtype(self.embed.dtype())?);
                    masks.push(layer.mask);
                    masks.len() - 1
                }
            };
            bias_of.push(i);
        }
        let (cos, sin) = self.rope.at(&positions, &self.device)?;

        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, b * t, &self.device)?;
        let mut x = self.embed.index_select(&idx, 0)?.reshape((b, t, self.cfg.hidden_size))?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x, path)?;
            let attn = self.attention(layer, &h, (&cos, &sin), &biases[bias_of[l]], cache.layers.get_mut(l), path)?;
            x = (x + attn)?;
            let h = layer.post_norm.forward(&x, path)?;
            let mlp = layer.down.forward(&ops::swiglu(&layer.gate.forward(&h)?, &layer.up.forward(&h)?)?)?;
            x = (x + mlp)?;
        }
        if last_only {
            x = x.narrow(1, t - 1, 1)?;
        }
        let x = self.norm.forward(&x, path)?;
        Ok(ops::linear(&x, &self.lm_head, None)?)
    }

    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        bias: &Tensor,
        kv: Option<&mut KvCache>,
        path: OpPath,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = h.dims3()?;
        let heads = |x: Tensor, n: usize, norm: &Option<NormTensors>| -> Result<Tensor> {
            let x = x.reshape((b, t, n, c.head_dim))?;
            let x = match norm {
                Some(norm) => norm.forward(&x, path)?,
                None => x,
            };
            Ok(x.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(layer.q.forward(h)?, c.num_attention_heads, &layer.q_norm)?;
        let k = heads(layer.k.forward(h)?, c.num_key_value_heads, &layer.k_norm)?;
        let v = heads(layer.v.forward(h)?, c.num_key_value_heads, &None)?;
        let q = ops::rope(&q, cos, sin, path)?;
        let k = ops::rope(&k, cos, sin, path)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let (k, v) = match kv {
            Some(kv) => kv.append(&k, &v)?,
            None => (k, v),
        };
        let k = repeat_kv(&k, c.kv_groups())?;
        let v = repeat_kv(&v, c.kv_groups())?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(bias)?;
        let probs = ops::softmax_last_dim(&scores, path)?;
        let out = probs.matmul(&v.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, c.num_attention_heads * c.head_dim))?;
        layer.o.forward(&out)
    }
}

/// Token rows of a batch and, per row, each position's validity flag.
type RowsAndMask = (Vec<Vec<u32>>, Vec<Vec<u8>>);

/// The rows of `ids` [batch, seq] and their validity flags from `mask` (all valid without one).
fn rows_and_mask(ids: &Tensor, mask: Option<&Tensor>) -> Result<RowsAndMask> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let valid = match mask {
        Some(m) => {
            let m = m.to_dtype(DType::U32)?.to_vec2::<u32>()?;
            if m.len() != rows.len() || m.iter().zip(&rows).any(|(a, b)| a.len() != b.len()) {
                return Err(ModelError::Input("attention mask and ids differ in shape".into()));
            }
            m.into_iter().map(|r| r.into_iter().map(|x| (x != 0) as u8).collect()).collect()
        }
        None => vec![vec![1u8; rows.first().map_or(0, Vec::len)]; rows.len()],
    };
    Ok((rows, valid))
}

/// Repeats each key/value head `n` times along the head axis (grouped-query attention).
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kvh, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?.broadcast_as((b, kvh, n, t, hd))?.reshape((b, kvh * n, t, hd))?)
}

/// A `[batch, seq]` u32 tensor from equal-length rows of token ids.
pub fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let t = rows.first().map_or(0, Vec::len);
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), t), device)?)
}

/// The logits of the last position of each row, [batch, vocab], from full-sequence logits.
pub fn last_logits(logits: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    Ok(logits.narrow(1, t - 1, 1)?.squeeze(1)?)
}
