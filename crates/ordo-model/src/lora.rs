//! LoRA adapters (Hu et al. 2021, arXiv 2106.09685) in PEFT's layout: the settings, PEFT's tensor
//! names, PEFT's initialisation, the low-rank path's forward and backward pass on f32 slices,
//! merging into the base weight, and the adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`) that `peft` reads and writes.
//!
//! An adapted linear map is `y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ` with `A` `[rank, in]`, `B` `[out, rank]`
//! and `s = alpha / rank`; `W` stays frozen, so the base model is the adapted one with its adapters
//! off, and `W + s B A` is the merged weight.

use crate::error::{ModelError, Result};
use crate::kernels::{product, Operand};
use crate::tensors::{self, Slot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The modules LoRA can adapt, by their HF module name, and the slot of each one's weight.
pub const TARGETS: &[(&str, Slot)] = &[
    ("q_proj", Slot::Q),
    ("k_proj", Slot::K),
    ("v_proj", Slot::V),
    ("o_proj", Slot::O),
    ("gate_proj", Slot::Gate),
    ("up_proj", Slot::Up),
    ("down_proj", Slot::Down),
];

/// The `[out, in]` shape of a layer's weight in a model of `cfg`.
pub fn weight_shape(cfg: &crate::config::ModelConfig, slot: Slot) -> (usize, usize) {
    let spec = tensors::LAYER.iter().find(|s| s.slot == slot).expect("a layer slot");
    match (spec.shape)(cfg).as_slice() {
        [out, inner] => (*out, *inner),
        other => unreachable!("{slot:?} is a matrix, not {other:?}"),
    }
}

/// The largest rank the settings accept (a model's own widths bound it further: [`Adapters::init`]).
pub const MAX_RANK: usize = 4096;

/// PEFT's file of the adapter settings.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's file of the adapter weights.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The settings of a model's adapters, named as in PEFT's `LoraConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of every adapter (PEFT's `r`).
    pub rank: usize,
    /// The low-rank path is scaled by `alpha / rank` (PEFT's `lora_alpha`; not rsLoRA).
    pub alpha: f64,
    /// Dropout on each adapter's input while training (PEFT's `lora_dropout`); none at evaluation.
    #[serde(default)]
    pub dropout: f64,
    /// The adapted modules by HF module name (PEFT's `target_modules`), every layer's.
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// Checks the settings: a rank of at least 1, a finite positive alpha, dropout in [0, 1), and known,
    /// distinct modules; `what` names the settings in the error (a file and field).
    pub fn check(&self, what: &str) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Input(format!("{what}: {msg}")));
        if self.rank == 0 || self.rank > MAX_RANK {
            return bad(format!("rank must be between 1 and {MAX_RANK}, got {}", self.rank));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha must be a positive number, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.targets.is_empty() {
            return bad("targets must name at least one module".into());
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !TARGETS.iter().any(|(name, _)| name == t) {
                let known: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
                return bad(format!("unknown target module `{t}` (expected one of {})", known.join(", ")));
            }
            if self.targets[..i].contains(t) {
                return bad(format!("target module `{t}` is listed twice"));
            }
        }
        Ok(())
    }

    /// The scale `alpha / rank` of the low-rank path.
    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }

    /// The slots of the adapted weights, in [`TARGETS`] order.
    pub fn slots(&self) -> Vec<Slot> {
        TARGETS.iter().filter(|(name, _)| self.targets.iter().any(|t| t == name)).map(|(_, s)| *s).collect()
    }
}

/// One of an adapter's two matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `[rank, in]`: the input side.
    A,
    /// `[out, rank]`: the output side.
    B,
}

/// PEFT's key of a layer's adapter matrix, for example
/// `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
pub fn peft_key(layer: usize, slot: Slot, factor: Factor) -> String {
    let hf = tensors::hf(Some(layer), slot);
    let module = hf.strip_suffix(".weight").unwrap_or(&hf);
    let letter = match factor {
        Factor::A => "A",
        Factor::B => "B",
    };
    format!("base_model.model.{module}.lora_{letter}.weight")
}

/// One adapter of an `[out, in]` weight: `A` `[rank, in]` and `B` `[out, rank]`, row-major, and the
/// scale of its path.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub rank: usize,
    pub inner: usize,
    pub out: usize,
    pub scale: f32,
}

/// Where an adapter's outputs lie in the rows of a (stacked) projection's output: rows of `stride`
/// values, this adapter's `out` columns from `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub stride: usize,
    pub at: usize,
}

/// What [`LowRank::forward_add`] keeps for the backward pass.
#[derive(Debug, Clone)]
pub struct LowRankTape {
    /// `drop(x) Aᵀ`, `[m, rank]`.
    pub u: Vec<f32>,
    /// The dropout's multipliers of `x` (0 or 1 / (1 - p)), `[m, in]`; None without dropout.
    pub mask: Option<Vec<f32>>,
}

impl LowRank {
    /// PEFT's initialisation: `A` from `kaiming_uniform_(a = √5)`, which is uniform in ±1/√in, and `B`
    /// zero, so that the adapted model starts as the base model.
    pub fn init(rank: usize, inner: usize, out: usize, scale: f32, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (inner as f32).sqrt();
        let a = (0..rank * inner).map(|_| rng.random_range(-bound..bound)).collect();
        LowRank { a, b: vec![0f32; out * rank], rank, inner, out, scale }
    }

    /// `y[:, at..at + out] += s · (drop(x) Aᵀ) Bᵀ` for `m` rows of `x` (`[m, in]`) into `y`'s `cols`; `mask` is the dropout's
    /// multipliers of `x` ([`dropout_mask`]), None for no dropout. Returns what the backward needs.
    pub fn forward_add(
        &self,
        x: &[f32],
        m: usize,
        mask: Option<Vec<f32>>,
        y: &mut [f32],
        cols: Columns,
    ) -> LowRankTape {
        let Columns { stride, at } = cols;
        let tape = self.tape(x, m, mask);
        let z = product(Operand::plain(&tape.u, m, self.rank), Operand::t(&self.b, self.out, self.rank));
        for (row, zr) in y.chunks_exact_mut(stride).zip(z.chunks_exact(self.out)) {
            for (v, &d) in row[at..at + self.out].iter_mut().zip(zr) {
                *v += self.scale * d;
            }
        }
        tape
    }

    /// What [`LowRank::forward_add`] keeps, computed again from its input and dropout multipliers (a
    /// product of `m x in x rank`, against `m x in x out` for the base weight's).
    pub fn tape(&self, x: &[f32], m: usize, mask: Option<Vec<f32>>) -> LowRankTape {
        let dropped = mask.as_ref().map(|k| x.iter().zip(k).map(|(v, k)| v * k).collect::<Vec<f32>>());
        let u = product(
            Operand::plain(dropped.as_deref().unwrap_or(x), m, self.inner),
            Operand::t(&self.a, self.rank, self.inner),
        );
        LowRankTape { u, mask }
    }

    /// The backward pass of [`LowRank::forward_add`] from the gradient of `y` (`dy`, this adapter's `cols`): adds the path's part of the input's gradient into `dx`
    /// (`[m, in]`) and returns the gradients of `A` and `B`.
    pub fn backward(
        &self,
        x: &[f32],
        m: usize,
        tape: &LowRankTape,
        dy: &[f32],
        cols: Columns,
        dx: &mut [f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let Columns { stride, at } = cols;
        let dz: Vec<f32> =
            dy.chunks_exact(stride).flat_map(|r| r[at..at + self.out].iter().map(|v| v * self.scale)).collect();
        // y += s z, z = u Bᵀ, u = drop(x) Aᵀ.
        let db = product(Operand::t(&dz, m, self.out), Operand::plain(&tape.u, m, self.rank));
        let du = product(Operand::plain(&dz, m, self.out), Operand::plain(&self.b, self.out, self.rank));
        let dropped = tape.mask.as_ref().map(|k| x.iter().zip(k).map(|(v, k)| v * k).collect::<Vec<f32>>());
        let xd = dropped.as_deref().unwrap_or(x);
        let da = product(Operand::t(&du, m, self.rank), Operand::plain(xd, m, self.inner));
        let dxd = product(Operand::plain(&du, m, self.rank), Operand::plain(&self.a, self.rank, self.inner));
        match &tape.mask {
            Some(k) => dx.iter_mut().zip(dxd.iter().zip(k)).for_each(|(d, (g, k))| *d += g * k),
            None => dx.iter_mut().zip(&dxd).for_each(|(d, g)| *d += g),
        }
        (da, db)
    }

    /// `W += s · B A` for the `[out, in]` weight `w`: the merged weight.
    pub fn merge_into(&self, w: &mut [f32]) {
        let ba = product(Operand::plain(&self.b, self.out, self.rank), Operand::plain(&self.a, self.rank, self.inner));
        for (v, d) in w.iter_mut().zip(ba) {
            *v += self.scale * d;
        }
    }
}

/// The inverted-dropout multipliers of `len` inputs: 0 with probability `p`, else `1 / (1 - p)`;
/// None when `p` is 0.
pub fn dropout_mask(p: f64, len: usize, rng: &mut impl Rng) -> Option<Vec<f32>> {
    (p > 0.0).then(|| {
        let keep = (1.0 / (1.0 - p)) as f32;
        (0..len).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep }).collect()
    })
}

/// One adapter of the model: its layer, the adapted weight's slot, and its matrices.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub layer: usize,
    pub slot: Slot,
    pub low_rank: LowRank,
}

/// A model's adapters and their settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapters {
    pub config: LoraConfig,
    /// By layer, then in [`TARGETS`] order.
    pub adapters: Vec<Adapter>,
}

impl Adapters {
    /// Fresh adapters (PEFT's initialisation) on every layer's targets of a model with `layers`
    /// layers, `shape(slot)` giving each adapted weight's `[out, in]`; draws from `seed`.
    pub fn init(config: &LoraConfig, layers: usize, shape: impl Fn(Slot) -> (usize, usize), seed: u64) -> Result<Self> {
        config.check("LoRA settings")?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let adapters = (0..layers)
            .flat_map(|layer| config.slots().into_iter().map(move |slot| (layer, slot)))
            .map(|(layer, slot)| {
                let (out, inner) = shape(slot);
                if config.rank > out.min(inner) {
                    return Err(ModelError::Input(format!(
                        "LoRA rank {} exceeds the {out} x {inner} weight it adapts ({slot:?}): a rank above the \
                         smaller side adds nothing",
                        config.rank
                    )));
                }
                Ok(Adapter { layer, slot, low_rank: LowRank::init(config.rank, inner, out, config.scale(), &mut rng) })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Adapters { config: config.clone(), adapters })
    }

    /// The adapter of a layer's weight, if that weight is adapted.
    pub fn get(&self, layer: usize, slot: Slot) -> Option<&LowRank> {
        self.adapters.iter().find(|a| a.layer == layer && a.slot == slot).map(|a| &a.low_rank)
    }
}
