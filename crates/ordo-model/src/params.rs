//! Named trainable parameters (HF names), with any subset frozen, and seeded initialisation.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::lora::{peft_key, weight_shape, Adapter, Adapters, Factor, LoraConfig, LowRank};
use crate::tensors::Init;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// The parameters of a model by HF name. Trainable ones are tracked by autograd, frozen ones are not.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: BTreeMap<String, Var>,
    frozen: BTreeSet<String>,
    /// The settings of the LoRA adapters among `params` (PEFT's keys), if it has any.
    lora: Option<LoraConfig>,
    /// The seed of the current optimiser step's LoRA dropout, which decoders built over the store
    /// draw their training passes' masks from (see [`crate::Decoder::with_lora_dropout`]).
    lora_dropout_seed: Option<u64>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a parameter; it is converted to f32, the dtype ordo trains in.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Result<()> {
        let var = Var::from_tensor(&tensor.to_dtype(DType::F32)?.contiguous()?)?;
        self.params.insert(name.into(), var);
        Ok(())
    }

    /// The variable behind a parameter.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.params.get(name)
    }

    /// The tensor to compute with: tracked by autograd unless the parameter is frozen.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let var = self.params.get(name).ok_or_else(|| ModelError::Weights(format!("parameter `{name}` is missing")))?;
        Ok(if self.frozen.contains(name) { var.as_tensor().detach() } else { var.as_tensor().clone() })
    }

    /// All parameters by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.params.iter()
    }

    /// Names of all parameters, sorted.
    pub fn names(&self) -> Vec<String> {
        self.params.keys().cloned().collect()
    }

    /// Number of parameters tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Freezes every parameter whose name satisfies `pred`; returns how many it froze.
    pub fn freeze_where(&mut self, pred: impl Fn(&str) -> bool) -> usize {
        let names: Vec<String> = self.params.keys().filter(|n| pred(n)).cloned().collect();
        let n = names.len();
        self.frozen.extend(names);
        n
    }

    /// Makes one parameter trainable again (a reward model's head beside its LoRA adapters, as PEFT's
    /// `modules_to_save`); false when the store has no parameter of that name.
    pub fn unfreeze(&mut self, name: &str) -> bool {
        self.frozen.remove(name);
        self.params.contains_key(name)
    }

    /// Makes every parameter trainable again.
    pub fn unfreeze_all(&mut self) {
        self.frozen.clear();
    }

    /// Whether a parameter is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.contains(name)
    }

    /// The trainable parameters, sorted by name.
    pub fn trainable(&self) -> Vec<(&String, &Var)> {
        self.params.iter().filter(|(n, _)| !self.frozen.contains(*n)).collect()
    }

    /// A deep copy: new storage, same values, same frozen set (for reference models).
    pub fn deep_clone(&self) -> Result<Self> {
        let mut params = BTreeMap::new();
        for (n, v) in &self.params {
            params.insert(n.clone(), Var::from_tensor(&v.as_tensor().copy()?)?);
        }
        Ok(ParamStore { params, frozen: self.frozen.clone(), lora: self.lora.clone(), lora_dropout_seed: None })
    }

    /// The same parameters converted to `dtype` (ordo trains in f32; f64 serves gradient checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let mut params = BTreeMap::new();
        for (n, v) in &self.params {
            params.insert(n.clone(), Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?);
        }
        Ok(ParamStore { params, frozen: self.frozen.clone(), lora: self.lora.clone(), lora_dropout_seed: None })
    }

    /// Adds LoRA adapters (PEFT's initialisation, drawn from `seed`) on every layer's `lora.targets`
    /// of a model of `cfg`, under PEFT's keys, and freezes every other parameter: from here on the
    /// adapters are what trains.
    pub fn add_lora(&mut self, cfg: &ModelConfig, lora: &LoraConfig, seed: u64) -> Result<()> {
        let adapters = Adapters::init(lora, cfg.num_hidden_layers, |slot| weight_shape(cfg, slot), seed)?;
        self.attach_lora(cfg, &adapters)
    }

    /// Puts `adapters` (fresh, or read from a PEFT directory) among the parameters under PEFT's keys
    /// and freezes every other parameter; their shapes must be those of `cfg`'s weights.
    pub fn attach_lora(&mut self, cfg: &ModelConfig, adapters: &Adapters) -> Result<()> {
        if self.lora.is_some() {
            return Err(ModelError::Input("the model already has LoRA adapters".into()));
        }
        if let Some(ad) = adapters.adapters.iter().find(|ad| {
            ad.layer >= cfg.num_hidden_layers || (ad.low_rank.out, ad.low_rank.inner) != weight_shape(cfg, ad.slot)
        }) {
            return Err(ModelError::Input(format!(
                "the adapter of layer {} {:?} ({} x {}) does not fit this model",
                ad.layer, ad.slot, ad.low_rank.out, ad.low_rank.inner
            )));
        }
        let device = self.params.values().next().map(|v| v.device().clone()).unwrap_or(Device::Cpu);
        self.freeze_where(|_| true);
        for ad in &adapters.adapters {
            let lr = &ad.low_rank;
            self.insert(
                peft_key(ad.layer, ad.slot, Factor::A),
                Tensor::from_slice(&lr.a, (lr.rank, lr.inner), &device)?,
            )?;
            self.insert(
                peft_key(ad.layer, ad.slot, Factor::B),
                Tensor::from_slice(&lr.b, (lr.out, lr.rank), &device)?,
            )?;
        }
        self.lora = Some(adapters.config.clone());
        Ok(())
    }

    /// Sets the seed of this optimiser step's LoRA dropout (one per step; each training pass of the
    /// step draws its own masks from it).
    pub fn set_lora_dropout_seed(&mut self, seed: u64) {
        self.lora_dropout_seed = Some(seed);
    }

    /// The current step's LoRA dropout seed, if one was set.
    pub fn lora_dropout_seed(&self) -> Option<u64> {
        self.lora_dropout_seed
    }

    /// The LoRA settings of this store's adapters, if it has any.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// The base model: the same parameters (shared, not copied) without the adapters, as a frozen
    /// reference sees them.
    pub fn base(&self) -> ParamStore {
        let adapter = |n: &str| n.starts_with("base_model.model.") && n.contains(".lora_");
        ParamStore {
            params: self.params.iter().filter(|(n, _)| !adapter(n)).map(|(n, v)| (n.clone(), v.clone())).collect(),
            frozen: self.frozen.iter().filter(|n| !adapter(n)).cloned().collect(),
            lora: None,
            lora_dropout_seed: None,
        }
    }

    /// The base model with the adapters merged into its weights (`W + s B A`) and no adapters: the
    /// full checkpoint of the adapted model. Without adapters, a copy.
    pub fn merged(&self, cfg: &ModelConfig) -> Result<ParamStore> {
        let mut out = self.base().deep_clone()?;
        out.unfreeze_all();
        if let Some(adapters) = self.adapters(cfg)? {
            for ad in &adapters.adapters {
                let name = crate::tensors::hf(Some(ad.layer), ad.slot);
                let var =
                    out.var(&name).ok_or_else(|| ModelError::Weights(format!("parameter `{name}` is missing")))?;
                let t = var.as_tensor();
                let mut w = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                ad.low_rank.merge_into(&mut w);
                var.set(&Tensor::from_vec(w, t.dims(), t.device())?.to_dtype(t.dtype())?)?;
            }
        }
        Ok(out)
    }

    /// The adapters' current values (None without adapters).
    pub fn adapters(&self, cfg: &ModelConfig) -> Result<Option<Adapters>> {
        let Some(config) = &self.lora else { return Ok(None) };
        let read = |k: String| -> Result<Vec<f32>> {
            let v =
                self.params.get(&k).ok_or_else(|| ModelError::Weights(format!("adapter tensor `{k}` is missing")))?;
            Ok(v.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        };
        let mut adapters = Vec::new();
        for layer in 0..cfg.num_hidden_layers {
            for slot in config.slots() {
                let (out, inner) = weight_shape(cfg, slot);
                let (a, b) = (read(peft_key(layer, slot, Factor::A))?, read(peft_key(layer, slot, Factor::B))?);
                let low_rank = LowRank { a, b, rank: config.rank, inner, out, scale: config.scale() };
                adapters.push(Adapter { layer, slot, low_rank });
            }
        }
        Ok(Some(Adapters { config: config.clone(), adapters }))
    }

    /// Total number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// The first parameter (by name) holding a NaN or infinite value, with how many such values it has.
    pub fn first_non_finite(&self) -> Result<Option<(String, usize)>> {
        for (name, v) in &self.params {
            let values = v.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let bad = values.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                return Ok(Some((name.clone(), bad)));
            }
        }
        Ok(None)
    }

    /// Fails when any parameter is NaN or infinite; `origin` names the model in the message.
    pub fn check_finite(&self, origin: &str) -> Result<()> {
        match self.first_non_finite()? {
            None => Ok(()),
            Some((name, n)) => Err(ModelError::Weights(format!(
                "{origin}: parameter `{name}` holds {n} NaN or infinite value(s); the model is broken \
                 (a diverged training run?) and is not used"
            ))),
        }
    }

    /// Checks that the store holds exactly the parameters `cfg` needs, with the right shapes.
    pub fn check_against(&self, cfg: &ModelConfig, origin: &str) -> Result<()> {
        let mut expected = cfg.parameter_shapes();
        if let Some(lora) = &self.lora {
            for layer in 0..cfg.num_hidden_layers {
                for slot in lora.slots() {
                    let (out, inner) = weight_shape(cfg, slot);
                    expected.push((peft_key(layer, slot, Factor::A), vec![lora.rank, inner]));
                    expected.push((peft_key(layer, slot, Factor::B), vec![out, lora.rank]));
                }
            }
        }
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match self.params.get(name) {
                None => problems.push(format!("missing tensor `{name}` (expected shape {shape:?})")),
                Some(v) if v.dims() != shape.as_slice() => {
                    problems.push(format!("tensor `{name}` has shape {:?}, the config implies {shape:?}", v.dims()))
                }
                Some(_) => {}
            }
        }
        let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.params.keys() {
            if !known.contains(name.as_str()) {
                problems.push(format!("unexpected tensor `{name}` (not part of this architecture)"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights(format!(
                "{origin}: weights do not match config.json:\n  {}",
                problems.join("\n  ")
            )))
        }
    }

    /// Fresh weights for `cfg`: N(0, std²) matrices (GPT-2 scaled for output projections),
    /// unit norm weights, zero biases, all drawn from `seed`.
    pub fn init(cfg: &ModelConfig, std: f64, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = ParamStore::new();
        let out_std = std / (2.0 * cfg.num_hidden_layers as f64).sqrt();
        for (name, spec) in crate::tensors::present(cfg) {
            let shape = (spec.shape)(cfg);
            let n: usize = shape.iter().product();
            let data: Vec<f32> = match spec.init {
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Normal => (0..n).map(|_| (gaussian(&mut rng) * std) as f32).collect(),
                Init::ResidualNormal => (0..n).map(|_| (gaussian(&mut rng) * out_std) as f32).collect(),
            };
            store.insert(name, Tensor::from_vec(data, shape, device)?)?;
        }
        Ok(store)
    }
}

/// A standard normal draw (Box-Muller), so initialisation depends on nothing but the seed.
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
