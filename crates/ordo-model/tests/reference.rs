//! The engine against transformers: logits, padded logits, greedy ids, loss and gradients.

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use ordo_model::{decoder::ids_tensor, ops, sampler, Decoder, OpPath, SamplingParams};
use std::collections::HashMap;

fn load(name: &str) -> ordo_model::LoadedModel {
    ordo_model::load(&hf_fixture(name), &Device::Cpu).unwrap()
}

#[test]
fn logits_match_transformers() {
    for name in FAMILIES {
        let m = load(name);
        let r = reference(name);
        let ids = ids_tensor(&rows_u32(&r["input_ids"]), &Device::Cpu).unwrap();
        for path in [OpPath::Differentiable, OpPath::Inference] {
            let dec = Decoder::new(&m.config, &m.params).unwrap();
            let logits = dec.forward(&ids, None, path).unwrap();
            let err = max_abs_diff(&logits, &r["logits"]);
            assert!(err < 1e-4, "{name} {path:?}: max abs logit error {err}");
        }
    }
}

#[test]
fn padded_logits_match_transformers_where_unmasked() {
    for name in FAMILIES {
        let m = load(name);
        let r = reference(name);
        let ids = ids_tensor(&rows_u32(&r["padded_input_ids"]), &Device::Cpu).unwrap();
        let mask = &r["padded_attention_mask"];
        let dec = Decoder::new(&m.config, &m.params).unwrap();
        let logits = dec.forward(&ids, Some(mask), OpPath::Differentiable).unwrap();
        let mask_rows = rows_u32(mask);
        let mut compared = 0;
        for (b, row) in mask_rows.iter().enumerate() {
            for (t, &keep) in row.iter().enumerate() {
                if keep == 1 {
                    let ours = logits.get(b).unwrap().get(t).unwrap();
                    let theirs = r["padded_logits"].get(b).unwrap().get(t).unwrap();
                    let err = max_abs_diff(&ours, &theirs);
                    assert!(err < 1e-4, "{name} row {b} pos {t}: error {err}");
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 40 - 5, "{name}: expected 5 padded positions");
    }
}

#[test]
fn greedy_generation_matches_transformers_exactly() {
    for name in FAMILIES {
        let m = load(name);
        let r = reference(name);
        let prompts = rows_u32(&r["generate_prompt"]);
        let expected = rows_u32(&r["generate_output"]);
        let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
        let out = sampler::generate(&dec, &prompts, &SamplingParams::greedy(16)).unwrap();
        for (i, row) in out.iter().enumerate() {
            let mut full = prompts[i].clone();
            full.extend(row);
            assert_eq!(full, expected[i], "{name} row {i}");
        }
    }
}

/// The loss of `ids` and every parameter's gradient by name: through candle's graph
/// (`Decoder::forward`) or through the training pass (`Decoder::forward_train`, hand-written on the CPU).
fn loss_and_gradients(m: &ordo_model::LoadedModel, ids: &Tensor, train_pass: bool) -> (f64, HashMap<String, Tensor>) {
    let dec = Decoder::new(&m.config, &m.params).unwrap();
    if train_pass {
        let pass = dec.forward_train(ids, None).unwrap();
        let loss = ops::next_token_loss(&pass.logits, ids, None).unwrap();
        let grads = pass.parameter_gradients(&loss.backward().unwrap()).unwrap();
        (loss.to_scalar::<f32>().unwrap() as f64, grads.into_iter().collect())
    } else {
        let loss = ops::next_token_loss(&dec.forward(ids, None, OpPath::Differentiable).unwrap(), ids, None).unwrap();
        let grads = loss.backward().unwrap();
        let by_name =
            m.params.iter().filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n.clone(), g.clone()))).collect();
        (loss.to_scalar::<f32>().unwrap() as f64, by_name)
    }
}

#[test]
fn loss_and_gradients_match_transformers() {
    for (name, train_pass) in FAMILIES.iter().flat_map(|n| [(*n, false), (*n, true)]) {
        let m = load(name);
        let r = reference(name);
        let rj = reference_json(name);
        let ids = ids_tensor(&rows_u32(&r["input_ids"]), &Device::Cpu).unwrap();
        let (loss_v, grads) = loss_and_gradients(&m, &ids, train_pass);
        let want = rj["loss"].as_f64().unwrap();
        assert!((loss_v - want).abs() < 1e-5, "{name} (train pass {train_pass}): loss {loss_v} vs {want}");
        assert_eq!(grads.len(), m.params.len(), "{name} (train pass {train_pass}): every parameter has a gradient");
        let mut checked = 0;
        for (key, reference) in r.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let pname = &key["grad.".len()..];
            let g = grads.get(pname).unwrap_or_else(|| panic!("no grad for {pname}"));
            assert_eq!(g.dims(), reference.dims(), "{name} {pname}: gradient shape");
            let rel = max_abs_diff(g, reference) / max_abs(reference);
            assert!(rel < 1e-4, "{name} {pname} (train pass {train_pass}): relative gradient error {rel}");
            checked += 1;
        }
        assert!(checked >= 10, "{name}: only {checked} reference gradients");
        for (pname, norm) in rj["grad_norms"].as_object().unwrap() {
            let g = &grads[pname];
            let ours = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap() as f64;
            let want = norm.as_f64().unwrap();
            assert!((ours - want).abs() / want.max(1e-12) < 1e-4, "{name} {pname}: grad norm {ours} vs {want}");
        }
    }
}

#[test]
fn gradients_agree_with_finite_differences() {
    // In f64, central differences are accurate to ~1e-9, so the analytic gradient must agree closely.
    for name in FAMILIES {
        let m = load(name);
        let params = m.params.to_dtype(DType::F64).unwrap();
        let r = reference(name);
        let ids = ids_tensor(&rows_u32(&r["input_ids"]), &Device::Cpu).unwrap();
        let loss_of = |p: &ordo_model::ParamStore| -> Tensor {
            let dec = Decoder::new(&m.config, p).unwrap();
            ops::next_token_loss(&dec.forward(&ids, None, OpPath::Differentiable).unwrap(), &ids, None).unwrap()
        };
        let grads = loss_of(&params).backward().unwrap();
        let probes = [
            ("model.embed_tokens.weight", 777usize),
            ("model.layers.0.self_attn.q_proj.weight", 5),
            ("model.layers.1.self_attn.k_proj.weight", 100),
            ("model.layers.2.mlp.down_proj.weight", 42),
            ("model.layers.0.input_layernorm.weight", 3),
            ("model.norm.weight", 7),
        ];
        for (pname, idx) in probes {
            let var = params.var(pname).unwrap();
            let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[idx];
            let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let eps = 1e-5;
            let at = |delta: f64| {
                let mut v = orig.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss_of(&params).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            at(0.0);
            let err = (analytic - numeric).abs() / analytic.abs().max(1e-6);
            assert!(err < 1e-5, "{name} {pname}[{idx}]: analytic {analytic} vs numeric {numeric}");
        }
    }
}
