//! LoRA adapters (Hu et al. 2021, arXiv 2106.09685) in PEFT's layout: the settings, PEFT's tensor
//! names, PEFT's initialisation, the low-rank path's forward and backward pass on f32 slices,
//! merging into the base weight, and the adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`) that `peft` reads and writes.
//!
//! An adapted linear map is `y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ` with `A` `[rank, in]`, `B` `[out, rank]`
//! and `s = alpha / rank`; `W` stays frozen, so the base model is the adapted one with its adapters
//! off, and `W + s B A` is the merged weight.

use crate::atomic;
use crate::error::{ModelError, Result};
use crate::kernels::{product, Operand};
use crate::tensors::{self, Slot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
        if self.rank == 0 {
            return bad("rank must be at least 1".into());
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
        let dropped = mask.as_ref().map(|k| x.iter().zip(k).map(|(v, k)| v * k).collect::<Vec<f32>>());
        let xd = dropped.as_deref().unwrap_or(x);
        let u = product(Operand::plain(xd, m, self.inner), Operand::t(&self.a, self.rank, self.inner));
        let z = product(Operand::plain(&u, m, self.rank), Operand::t(&self.b, self.out, self.rank));
        for (row, zr) in y.chunks_exact_mut(stride).zip(z.chunks_exact(self.out)) {
            for (v, &d) in row[at..at + self.out].iter_mut().zip(zr) {
                *v += self.scale * d;
            }
        }
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
                Adapter { layer, slot, low_rank: LowRank::init(config.rank, inner, out, config.scale(), &mut rng) }
            })
            .collect();
        Ok(Adapters { config: config.clone(), adapters })
    }

    /// The adapter of a layer's weight, if that weight is adapted.
    pub fn get(&self, layer: usize, slot: Slot) -> Option<&LowRank> {
        self.adapters.iter().find(|a| a.layer == layer && a.slot == slot).map(|a| &a.low_rank)
    }

    /// Writes the adapter directory PEFT reads (`adapter_config.json`, `adapter_model.safetensors`
    /// with PEFT's keys), atomically; `base_model` is recorded as `base_model_name_or_path`.
    pub fn save_peft(&self, dir: &Path, base_model: &str, replace: bool) -> Result<()> {
        atomic::check_output_dir(dir, replace)?;
        let staging = atomic::staging_dir(dir)?;
        let c = &self.config;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
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
            "modules_to_save": null,
            "layers_to_transform": null,
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Weights(e.to_string()))?;
        atomic::write_file(&staging.join(CONFIG_FILE), text.as_bytes())?;
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = self
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
        atomic::write_file(&staging.join(WEIGHTS_FILE), &crate::weights::f32_safetensors_bytes(&tensors)?)?;
        atomic::commit_dir(&staging, dir, replace)
    }

    /// Reads a PEFT adapter directory for a model with `layers` layers whose adapted weights have
    /// `shape(slot)` = `[out, in]`; any mismatch (settings ordo does not implement, a missing or
    /// extra tensor, a wrong shape) is an error naming the file and what was expected.
    pub fn load_peft(dir: &Path, layers: usize, shape: impl Fn(Slot) -> (usize, usize)) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", cfg_path.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
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
            if field(k).is_some_and(|x| {
                !(x.as_array().is_some_and(Vec::is_empty) || x.as_object().is_some_and(|o| o.is_empty()))
            }) {
                return Err(bad(format!("`{k}` is not supported")));
            }
        }
        let targets = match field("target_modules") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`target_modules` must be a list of module names".into()))?,
            _ => return Err(bad("`target_modules` must be a list of module names".into())),
        };
        let config = LoraConfig {
            rank: field("r").and_then(|x| x.as_u64()).ok_or_else(|| bad("`r` must be a positive integer".into()))?
                as usize,
            alpha: field("lora_alpha")
                .and_then(|x| x.as_f64())
                .ok_or_else(|| bad("`lora_alpha` must be a number".into()))?,
            dropout: field("lora_dropout").and_then(|x| x.as_f64()).unwrap_or(0.0),
            targets,
        };
        config.check(&cfg_path.display().to_string())?;
        let w_path = dir.join(WEIGHTS_FILE);
        let mut tensors = candle_core::safetensors::load(&w_path, &candle_core::Device::Cpu)
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
            Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
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
}
