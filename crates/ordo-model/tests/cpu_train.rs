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

    assert_eq!(got.len(), params.len(), "{what}: one gradient per parameter");
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
