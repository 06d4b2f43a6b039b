//! The fused ops with backward passes against the composed ops (values and gradients) and finite differences.

mod common;
use candle_core::{DType, Device, Tensor, Var, D};
use common::*;
use ordo_model::decoder::ids_tensor;
use ordo_model::{fused, ops, Decoder, OpPath};

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // candle's randn is not seedable per call; derive values from a simple hash instead.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = (i.wrapping_add(seed.wrapping_mul(0x9E37_79B9)))
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((h >> 33) % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

/// `sum(f(inputs) * weights)` and the gradient of each input, for a function of several tensors.
fn value_and_grads(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], weights: &Tensor) -> (f64, Vec<Tensor>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = (f(&ts) * weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let value = loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    (value, vars.iter().map(|v| grads.get(v).cloned().unwrap_or_else(|| v.zeros_like().unwrap())).collect())
}

/// Checks `fused` against `composed` (values and every gradient) and the fused gradients against
/// central finite differences at a few coordinates of each differentiable input.
fn check(
    name: &str,
    fused_fn: &dyn Fn(&[Tensor]) -> Tensor,
    composed_fn: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    differentiable: &[bool],
    weights: &Tensor,
) {
    let (v_f, g_f) = value_and_grads(fused_fn, inputs, weights);
    let (v_c, g_c) = value_and_grads(composed_fn, inputs, weights);
    assert!((v_f - v_c).abs() < 1e-4 * (1.0 + v_c.abs()), "{name}: value {v_f} vs composed {v_c}");
    let y_f = fused_fn(inputs);
    let y_c = composed_fn(inputs);
    let mask = weights.ne(0f32).unwrap().to_dtype(DType::F32).unwrap();
    let err = max_abs_diff(&(y_f * &mask).unwrap(), &(y_c * &mask).unwrap());
    assert!(err < 1e-5, "{name}: outputs differ by {err}");
    for (i, (a, b)) in g_f.iter().zip(&g_c).enumerate() {
        if differentiable[i] {
            let err = max_abs_diff(a, b);
            assert!(err < 1e-4 * (1.0 + max_abs(b)), "{name}: gradient of input {i} differs by {err}");
        }
    }
    // Finite differences (f32: a step of 1e-2 and a loose relative tolerance).
    let h = 1e-2f64;
    for (i, x) in inputs.iter().enumerate() {
        if !differentiable[i] {
            continue;
        }
        let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grad = g_f[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for k in [0, flat.len() / 3, flat.len() / 2 + 1, flat.len() - 1] {
            let at = |delta: f64| {
                let mut v = flat.clone();
                v[k] += delta as f32;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(v, x.shape(), &DEV).unwrap();
                let y = (fused_fn(&xs).to_dtype(DType::F64).unwrap() * weights.to_dtype(DType::F64).unwrap()).unwrap();
                y.sum_all().unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let an = grad[k] as f64;
            assert!((fd - an).abs() < 2e-2 * (1.0 + an.abs()), "{name}: input {i}[{k}] analytic {an} vs finite {fd}");
        }
    }
}

#[test]
fn rms_norm_fused_equals_composed_and_finite_differences() {
    // 200 rows span several row blocks whose partial weight gradients are added.
    for (shape, eps, seed) in [(vec![3, 5, 16], 1e-5, 1), (vec![200, 8], 1e-6, 4)] {
        let x = randn(&shape, seed);
        let w = (randn(&shape[shape.len() - 1..], seed + 1) + 1.0).unwrap();
        check(
            &format!("rms_norm {shape:?}"),
            &|t| fused::rms_norm(&t[0], &t[1], eps).unwrap(),
            &|t| ops::rms_norm(&t[0], &t[1], eps, OpPath::Composed).unwrap(),
            &[x, w],
            &[true, true],
            &randn(&shape, seed + 2),
        );
    }
}

#[test]
fn rope_fused_equals_composed_and_finite_differences() {
    let (b, h, t, d) = (2, 3, 5, 8);
    let x = randn(&[b, h, t, d], 7);
    let angles = (randn(&[b, t, d / 2], 8) * 3.0).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    check(
        "rope",
        &|t| fused::rope(&t[0], &t[1], &t[2]).unwrap(),
        &|t| ops::rope(&t[0], &t[1], &t[2], OpPath::Composed).unwrap(),
        &[x, cos, sin],
        &[true, false, false],
        &randn(&[b, h, t, d], 9),
    );
}

#[test]
fn swiglu_fused_equals_composed_and_finite_differences() {
    let g = (randn(&[4, 7, 10], 10) * 3.0).unwrap();
    let u = randn(&[4, 7, 10], 11);
    check(
        "swiglu",
        &|t| fused::swiglu(&t[0], &t[1]).unwrap(),
        &|t| ops::swiglu(&t[0], &t[1], OpPath::Composed).unwrap(),
        &[g, u],
        &[true, true],
        &randn(&[4, 7, 10], 12),
    );
}

#[test]
fn token_logprobs_fused_equals_composed_and_finite_differences() {
    let logits = (randn(&[3, 4, 9], 13) * 4.0).unwrap();
    let targets = Tensor::new(&[[0u32, 8, 3, 3], [1, 2, 7, 0], [5, 5, 4, 8]], &DEV).unwrap();
    let t2 = targets.clone();
    check(
        "token_logprobs",
        &|t| fused::token_logprobs(&t[0], &targets).unwrap(),
        &|t| ops::token_logprobs_composed(&t[0], &t2).unwrap(),
        &[logits],
        &[true],
        &randn(&[3, 4], 14),
    );
    let bad = Tensor::new(&[9u32], &DEV).unwrap();
    let err = fused::token_logprobs(&randn(&[1, 9], 1), &bad).unwrap_err().to_string();
    assert!(err.contains("beyond the vocabulary"), "{err}");
}

/// The composed reference: scores, additive causal + padding mask, softmax, weighted values.
fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, valid: &[Vec<u8>], scale: f64) -> Tensor {
    let (b, heads, t, d) = q.dims4().unwrap();
    let kv_heads = k.dim(1).unwrap();
    let rep = |x: &Tensor| {
        let n = heads / kv_heads;
        x.unsqueeze(2).unwrap().broadcast_as((b, kv_heads, n, t, d)).unwrap().reshape((b, heads, t, d)).unwrap()
    };
    let (k, v) = (rep(k), rep(v));
    let mut bias = vec![0f32; b * t * t];
    for r in 0..b {
        for i in 0..t {
            for j in 0..t {
                if j > i || valid[r][j] == 0 {
                    bias[(r * t + i) * t + j] = -1e9;
                }
            }
        }
    }
    let bias = Tensor::from_vec(bias, (b, 1, t, t), &DEV).unwrap();
    let scores =
        (q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap() * scale).unwrap().broadcast_add(&bias).unwrap();
    ops::softmax_last_dim(&scores, OpPath::Composed).unwrap().matmul(&v.contiguous().unwrap()).unwrap()
}

#[test]
fn causal_attention_fused_equals_composed_with_padding_and_grouped_heads() {
    let (b, heads, kv_heads, t, d) = (2, 4, 2, 6, 8);
    // Row 0 is left-padded by two positions, row 1 has a padded hole and a right pad.
    let valid = vec![vec![0u8, 0, 1, 1, 1, 1], vec![1u8, 1, 0, 1, 1, 0]];
    let q = randn(&[b, heads, t, d], 15);
    let k = randn(&[b, kv_heads, t, d], 16);
    let v = randn(&[b, kv_heads, t, d], 17);
    // Only real query positions carry loss (a padded query's output is unused).
    let wq: Vec<f32> = randn(&[b, heads, t, d], 18).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let wq: Vec<f32> = wq
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let (r, pos) = (i / (heads * t * d), (i / d) % t);
            if valid[r][pos] != 0 {
                x
            } else {
                0.0
            }
        })
        .collect();
    let weights = Tensor::from_vec(wq, (b, heads, t, d), &DEV).unwrap();
    let scale = 1.0 / (d as f64).sqrt();
    let (v1, v2) = (valid.clone(), valid.clone());
    check(
        "causal_attention",
        &move |x| fused::causal_attention(&x[0], &x[1], &x[2], &v1, scale).unwrap(),
        &move |x| composed_attention(&x[0], &x[1], &x[2], &v2, scale),
        &[q, k, v],
        &[true, true, true],
        &weights,
    );
}

/// The whole decoder on the training path (fused ops) against the composed path: a padded batch's
/// logits and the gradient of every parameter, on both fixture families.
#[test]
fn decoder_training_path_equals_composed_path_with_padding() {
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &DEV).unwrap();
        // Right padding and a padded hole. (A left-padded row's first positions see no real key:
        // the composed path then averages every value, future ones included, the fused op gives
        // zeros; neither is a real token's output, so that case is compared in the op's own test.)
        let rows = vec![vec![11u32, 200, 7, 99, 3, 0, 0], vec![5u32, 17, 0, 9, 8, 7, 0]];
        let mask = Tensor::new(vec![vec![1u32, 1, 1, 1, 1, 0, 0], vec![1u32, 1, 0, 1, 1, 1, 0]], &DEV).unwrap();
        let ids = ids_tensor(&rows, &DEV).unwrap();
        let run = |path: OpPath| {
            let dec = Decoder::new(&m.config, &m.params).unwrap();
            let logits = dec.forward(&ids, Some(&mask), path).unwrap();
            let loss = ops::next_token_loss(&logits, &ids, Some(&mask)).unwrap();
            let grads = loss.backward().unwrap();
            let real = mask.to_dtype(DType::F32).unwrap().unsqueeze(D::Minus1).unwrap();
            (logits.broadcast_mul(&real).unwrap(), grads)
        };
        let (lf, gf) = run(OpPath::Differentiable);
        let (lc, gc) = run(OpPath::Composed);
        let err = max_abs_diff(&lf, &lc);
        assert!(err < 1e-4, "{name}: logits differ by {err}");
        for (pname, var) in m.params.iter() {
            let (a, b) = (gf.get(var).unwrap(), gc.get(var).unwrap());
            let err = max_abs_diff(a, b);
            assert!(err < 1e-4 * (1.0 + max_abs(b)), "{name}: gradient of {pname} differs by {err}");
        }
    }
}
