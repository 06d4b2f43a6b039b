//! The token log-prob op (one pass forward and backward) against the composed ops (values and gradients) and finite differences.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use ordo_model::ops;

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
fn token_logprobs_equals_composed_and_finite_differences() {
    let logits = (randn(&[3, 4, 9], 13) * 4.0).unwrap();
    let targets = Tensor::new(&[[0u32, 8, 3, 3], [1, 2, 7, 0], [5, 5, 4, 8]], &DEV).unwrap();
    let t2 = targets.clone();
    check(
        "token_logprobs",
        &|t| ops::token_logprobs(&t[0], &targets).unwrap(),
        &|t| ops::token_logprobs_composed(&t[0], &t2).unwrap(),
        &[logits],
        &[true],
        &randn(&[3, 4], 14),
    );
    let bad = Tensor::new(&[9u32], &DEV).unwrap();
    let err = ops::token_logprobs(&randn(&[1, 9], 1), &bad).unwrap_err().to_string();
    assert!(err.contains("beyond the vocabulary"), "{err}");
}
