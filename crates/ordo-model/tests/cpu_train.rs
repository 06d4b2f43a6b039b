//! The hand-written CPU training pass (`Decoder::forward_train`) against the composed candle path:
//! logits and every parameter's gradient, with padding on either side, on every model switch.

mod common;
use candle_core::{DType, Device, Tensor, D};
use common::*;
use ordo_model::decoder::ids_tensor;
use ordo_model::{Decoder, ModelConfig, OpPath, ParamStore};
use std::collections::HashMap;

const DEV: Device = Device::Cpu;

/// A loss whose logit gradient is a fixed random matrix at real positions (and 0 at padding):
/// `Σ logits · R · real`.
fn probe_loss(logits: &Tensor, real: &Tensor) -> Tensor {
    let n = logits.elem_count();
    let w: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2.0).collect();
    let w = Tensor::from_vec(w, logits.dims(), &DEV).unwrap();
    logits.broadcast_mul(&real.unsqueeze(D::Minus1).unwrap()).unwrap().mul(&w).unwrap().sum_all().unwrap()
}

/// Compares the training pass with the composed path on `rows` (0 in `mask` = padding).
fn check(cfg: &ModelConfig, params: &ParamStore, rows: &[Vec<u32>], mask: &[Vec<u32>], what: &str) {
    let ids = ids_tensor(rows, &DEV).unwrap();
    let mask = Tensor::new(mask.to_vec(), &DEV).unwrap();
    let real = mask.to_dtype(DType::F32).unwrap();
    let dec = Decoder::new(cfg, params).unwrap();

    let composed = dec.forward(&ids, Some(&mask), OpPath::Differentiable).unwrap();
    let store = probe_loss(&composed, &real).backward().unwrap();
    let want: HashMap<String, Tensor> =
        params.iter().filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n.clone(), g.clone()))).collect();

    let pass = dec.forward_train(&ids, Some(&mask)).unwrap();
    let masked = |t: &Tensor| t.broadcast_mul(&real.unsqueeze(D::Minus1).unwrap()).unwrap();
    let err = max_abs_diff(&masked(&pass.logits), &masked(&composed));
    assert!(err < 1e-4, "{what}: logits differ by {err}");
    // The inference forward (no activations kept) gives the very same logits.
    let inference = dec.forward(&ids, Some(&mask), OpPath::Inference).unwrap();
    assert_eq!(max_abs_diff(&inference, &pass.logits), 0.0, "{what}: inference and training logits differ");
    let got: HashMap<String, Tensor> =
        pass.parameter_gradients(&probe_loss(&pass.logits, &real).backward().unwrap()).unwrap().into_iter().collect();

    // One gradient per parameter; with adapters, one per adapter matrix (the base is frozen).
    let expected = if params.lora().is_some() { params.trainable().len() } else { params.len() };
    assert_eq!(got.len(), expected, "{what}: one gradient per trained parameter");
    for (name, w) in &want {
        let g = got.get(name).unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        assert_eq!(g.dims(), w.dims(), "{what}: shape of {name}'s gradient");
        let err = max_abs_diff(g, w);
        assert!(err < 1e-4 * (1.0 + max_abs(w)), "{what}: gradient of {name} differs by {err}");
    }
}

/// Right padding, a padded hole and left padding (a left-padded row's real tokens see only real keys,
/// so both paths agree at every real position), and rows that share real-token prefixes with others
/// (the training pass computes a shared prefix once and adds the gradients its rows send it): one that
/// diverges from row 0 after four tokens, row 0 again shifted right by one padding slot, and one that
/// repeats row 1 (hole included) up to its last two tokens.
fn padded_batch(vocab: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let rows = [
        [11, 20, 7, 9, 3, 0, 0, 0],
        [5, 17, 0, 9, 8, 7, 4, 0],
        [0, 0, 0, 13, 2, 19, 6, 1],
        [11, 20, 7, 9, 12, 4, 0, 0],
        [0, 11, 20, 7, 9, 3, 0, 0],
        [5, 17, 0, 9, 8, 15, 15, 15],
    ];
    let mask = vec![
        vec![1, 1, 1, 1, 1, 0, 0, 0],
        vec![1, 1, 0, 1, 1, 1, 1, 0],
        vec![0, 0, 0, 1, 1, 1, 1, 1],
        vec![1, 1, 1, 1, 1, 1, 0, 0],
        vec![0, 1, 1, 1, 1, 1, 0, 0],
        vec![1, 1, 0, 1, 1, 1, 1, 1],
    ];
    (rows.iter().map(|r| r.iter().map(|x| x % vocab).collect()).collect(), mask)
}

#[test]
fn training_pass_equals_composed_path_on_both_fixtures() {
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &DEV).unwrap();
        let (rows, mask) = padded_batch(m.config.vocab_size as u32);
        check(&m.config, &m.params, &rows, &mask, name);
    }
}

/// The switches the fixtures do not cover: q/k/v biases (Qwen2), q/k/v and o biases (Llama
/// `attention_bias`), grouped-query attention, rope scaling, an untied head, and a classifier.
#[test]
fn training_pass_covers_biases_grouped_queries_untied_heads_and_classifiers() {
    for (model_type, extra) in [
        ("qwen2", serde_json::json!({})),
        ("llama", serde_json::json!({ "attention_bias": true })),
        ("llama", serde_json::json!({ "architectures": ["LlamaForSequenceClassification"], "num_labels": 1 })),
    ] {
        let cfg = switches_config(model_type, &extra);
        assert_eq!(cfg.score_labels.is_some(), extra.get("num_labels").is_some());
        let params = ParamStore::init(&cfg, 0.3, 5, &DEV).unwrap();
        for (name, var) in params.iter() {
            if name.ends_with(".bias") || name.ends_with("norm.weight") {
                var.set(&Tensor::randn(0f32, 0.5, var.as_tensor().dims(), &DEV).unwrap().affine(1.0, 0.5).unwrap())
                    .unwrap();
            }
        }
        let (rows, mask) = padded_batch(50);
        check(&cfg, &params, &rows, &mask, &format!("{model_type} {extra}"));
    }
}

#[test]
fn training_pass_rejects_bad_input() {
    let m = ordo_model::load(&hf_fixture(FAMILIES[1]), &DEV).unwrap();
    let dec = Decoder::new(&m.config, &m.params).unwrap();
    let too_big = ids_tensor(&[vec![1, m.config.vocab_size as u32]], &DEV).unwrap();
    let err = dec.forward_train(&too_big, None).err().expect("an id beyond the vocabulary is an error");
    assert!(err.to_string().contains("out of the vocabulary"), "{err}");
    let long = ids_tensor(&[vec![1u32; m.config.max_position_embeddings + 1]], &DEV).unwrap();
    let err = dec.forward_train(&long, None).err().expect("a row longer than the positions is an error");
    assert!(err.to_string().contains("max_position_embeddings"), "{err}");
}

/// A row as long as the model's positions, in a batch padded to one more: the padding position is past
/// the rotary tables and must not break the pass.
#[test]
fn training_pass_takes_a_full_length_row_with_padding_after_it() {
    let cfg = switches_config("llama", &serde_json::json!({}));
    let params = ParamStore::init(&cfg, 0.3, 5, &DEV).unwrap();
    let full = cfg.max_position_embeddings;
    let rows = vec![(0..=full as u32).map(|i| i % 50).collect::<Vec<_>>(), vec![3u32; full + 1]];
    let mut mask = vec![vec![1u32; full + 1], vec![1u32; full + 1]];
    mask[0][full] = 0;
    mask[1][..2].fill(0);
    check(&cfg, &params, &rows, &mask, "full-length rows");
}

/// A batch with no real token has nothing to compute: zero logits and zero gradients, no panic.
#[test]
fn training_pass_takes_a_batch_of_padding_only() {
    let cfg = switches_config("llama", &serde_json::json!({}));
    let params = ParamStore::init(&cfg, 0.3, 5, &DEV).unwrap();
    let dec = Decoder::new(&cfg, &params).unwrap();
    let ids = ids_tensor(&[vec![3u32, 4], vec![5, 6]], &DEV).unwrap();
    let mask = Tensor::new(&[[0u32, 0], [0, 0]], &DEV).unwrap();
    let pass = dec.forward_train(&ids, Some(&mask)).unwrap();
    assert_eq!(max_abs(&pass.logits), 0.0);
    let loss = pass.logits.sqr().unwrap().sum_all().unwrap();
    let grads = pass.parameter_gradients(&loss.backward().unwrap()).unwrap();
    assert_eq!(grads.len(), params.len());
    assert!(grads.iter().all(|(_, g)| max_abs(g) == 0.0));
}

/// `params` with LoRA adapters (`lora`, seed 3) whose B is set to deterministic non-zero values (at
/// PEFT's initialisation B is 0 and A's gradients vanish).
fn with_lora(cfg: &ModelConfig, params: &ParamStore, lora: &ordo_model::lora::LoraConfig) -> ParamStore {
    let mut p = params.clone();
    p.add_lora(cfg, lora, 3).unwrap();
    for (i, (name, var)) in p.iter().filter(|(n, _)| n.contains(".lora_B.")).enumerate() {
        let n = var.elem_count();
        let v: Vec<f32> = (0..n).map(|j| (((i * 7919 + j) as f32 * 0.618_034).fract() - 0.5) * 0.2).collect();
        var.set(&Tensor::from_vec(v, var.dims(), &DEV).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    p
}

fn all_targets(dropout: f64) -> ordo_model::lora::LoraConfig {
    let targets = ordo_model::lora::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    ordo_model::lora::LoraConfig { rank: 4, alpha: 8.0, dropout, targets }
}

/// LoRA adapters on every target module: the training pass's gradients of A and B equal the composed
/// path's (where autograd differentiates `x Wᵀ + s (x Aᵀ) Bᵀ`), only the adapters train, the adapted
/// model's logits are the merged model's, and the base model (adapters off) is the model before them.
#[test]
fn training_pass_with_lora_equals_composed_path_and_the_merged_model() {
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &DEV).unwrap();
        let (rows, mask) = padded_batch(m.config.vocab_size as u32);
        let params = with_lora(&m.config, &m.params, &all_targets(0.0));
        check(&m.config, &params, &rows, &mask, &format!("{name} with LoRA"));
        let trainable = params.trainable();
        assert_eq!(trainable.len(), 2 * 7 * m.config.num_hidden_layers, "{name}: A and B of 7 modules per layer");
        assert!(trainable.iter().all(|(n, _)| n.contains(".lora_")), "{name}: only the adapters train");
        let (ids, mask) = (ids_tensor(&rows, &DEV).unwrap(), Tensor::new(mask.clone(), &DEV).unwrap());
        let logits =
            |p: &ParamStore| Decoder::new(&m.config, p).unwrap().forward(&ids, Some(&mask), OpPath::Inference).unwrap();
        let merged = params.merged(&m.config).unwrap();
        assert!(merged.lora().is_none() && merged.len() == m.params.len());
        let err = max_abs_diff(&logits(&params), &logits(&merged));
        assert!(err < 1e-4, "{name}: adapted and merged logits differ by {err}");
        assert!(max_abs_diff(&logits(&params), &logits(&m.params)) > 1e-3, "{name}: the adapters change the model");
        assert_eq!(max_abs_diff(&logits(&params.base()), &logits(&m.params)), 0.0, "{name}: base = adapters off");
        // An HF checkpoint has no place for adapters: saving one is refused, saving the merged model works.
        let tmp = tempfile::tempdir().unwrap();
        let err = ordo_model::weights::save_hf_dir(&tmp.path().join("x"), &m.config, &params, None, usize::MAX);
        assert!(err.unwrap_err().to_string().contains("LoRA adapters"));
        ordo_model::weights::save_hf_dir(&tmp.path().join("merged"), &m.config, &merged, None, usize::MAX).unwrap();
    }
}

/// A reward model with LoRA adapters and its head trained whole (PEFT's `modules_to_save`): the
/// training pass gives the adapters' and the head's gradients as the composed path does, and no base
/// weight's.
#[test]
fn a_lora_classifier_trains_its_adapters_and_its_head() {
    let extra = serde_json::json!({ "architectures": ["LlamaForSequenceClassification"], "num_labels": 1 });
    let cfg = switches_config("llama", &extra);
    let params = ParamStore::init(&cfg, 0.3, 5, &DEV).unwrap();
    let mut params = with_lora(&cfg, &params, &all_targets(0.0));
    assert!(params.unfreeze("score.weight"));
    let (rows, mask) = padded_batch(50);
    check(&cfg, &params, &rows, &mask, "LoRA classifier with its head");
    let trainable: Vec<String> = params.trainable().iter().map(|(n, _)| n.to_string()).collect();
    assert!(trainable.contains(&"score.weight".to_string()));
    assert_eq!(trainable.len(), 2 * 7 * cfg.num_hidden_layers + 1);
}

/// LoRA dropout: drawn once per optimiser step from its seed (the same seed, the same logits and
/// gradients; another seed, other logits), absent from inference passes, and differentiated with the
/// masks its forward pass drew (central differences of the loss in A agree with the gradient).
#[test]
fn lora_dropout_is_drawn_per_step_and_differentiated_with_its_masks() {
    let m = ordo_model::load(&hf_fixture("llama-tiny"), &DEV).unwrap();
    let (rows, mask) = padded_batch(m.config.vocab_size as u32);
    let (ids, mask) = (ids_tensor(&rows, &DEV).unwrap(), Tensor::new(mask, &DEV).unwrap());
    let real = mask.to_dtype(DType::F32).unwrap();
    let params = with_lora(&m.config, &m.params, &all_targets(0.3));
    let train = |p: &ParamStore, seed: Option<u64>| {
        let dec = Decoder::new(&m.config, p).unwrap();
        let dec = match seed {
            Some(s) => dec.with_lora_dropout(s),
            None => dec,
        };
        dec.forward_train(&ids, Some(&mask)).unwrap()
    };
    let loss_of =
        |p: &ParamStore, seed| probe_loss(&train(p, Some(seed)).logits, &real).to_scalar::<f32>().unwrap() as f64;
    let (a, b, c, none) =
        (train(&params, Some(1)), train(&params, Some(1)), train(&params, Some(2)), train(&params, None));
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0, "the same seed drops the same inputs");
    assert!(max_abs_diff(&a.logits, &c.logits) > 1e-4, "another seed drops others");
    assert!(max_abs_diff(&a.logits, &none.logits) > 1e-4, "dropout acts on training passes");
    // Two passes of one step (micro-batches) draw their own masks.
    let dec = Decoder::new(&m.config, &params).unwrap().with_lora_dropout(1);
    let (first, second) =
        (dec.forward_train(&ids, Some(&mask)).unwrap(), dec.forward_train(&ids, Some(&mask)).unwrap());
    assert_eq!(max_abs_diff(&first.logits, &a.logits), 0.0, "a decoder's first pass is the seed's");
    assert!(max_abs_diff(&first.logits, &second.logits) > 1e-4, "a second pass drops other inputs");
    let inference = Decoder::new(&m.config, &params).unwrap().with_lora_dropout(1);
    let eval = inference.forward(&ids, Some(&mask), OpPath::Inference).unwrap();
    assert_eq!(max_abs_diff(&eval, &none.logits), 0.0, "inference drops nothing");
    let grads: HashMap<String, Tensor> =
        a.parameter_gradients(&probe_loss(&a.logits, &real).backward().unwrap()).unwrap().into_iter().collect();
    for key in [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
    ] {
        let g = grads[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // The entry with the largest gradient, perturbed both ways.
        let (i, &gi) = g.iter().enumerate().max_by(|x, y| x.1.abs().total_cmp(&y.1.abs())).unwrap();
        let var = params.var(key).unwrap();
        let start = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        let at = |delta: f32| {
            let mut v = start.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.dims(), &DEV).unwrap()).unwrap();
            loss_of(&params, 1)
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(start, var.dims(), &DEV).unwrap()).unwrap();
        assert!((fd - gi as f64).abs() < 2e-2 * (1.0 + fd.abs()), "{key}[{i}]: gradient {gi}, central difference {fd}");
    }
}
