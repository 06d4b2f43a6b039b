//! AdamW and clipping against values computed by hand.

use candle_core::{Device, Tensor};
use ordo_model::ParamStore;
use ordo_train::optim::{AdamW, AdamWConfig, Gradients};

/// Loss = sum(c * w) + sum(c * n): constant gradients c for both parameters.
fn grads(p: &ParamStore, c: &[f32]) -> Gradients {
    let c = Tensor::new(c, &Device::Cpu).unwrap();
    let w = p.tensor("layer.weight").unwrap();
    let n = p.tensor("model.norm.weight").unwrap();
    let loss = ((&w * &c).unwrap().sum_all().unwrap() + (&n * &c).unwrap().sum_all().unwrap()).unwrap();
    Gradients::from_backward(p, &loss.backward().unwrap())
}

fn values(p: &ParamStore, name: &str) -> Vec<f32> {
    p.var(name).unwrap().as_tensor().to_vec1::<f32>().unwrap()
}

#[test]
fn adamw_two_steps_match_hand_computation() {
    let mut p = ParamStore::new();
    p.insert("layer.weight", Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
    p.insert("model.norm.weight", Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 });
    let g = [0.5f32, -1.0];
    opt.step(&p, &grads(&p, &g), 0.1).unwrap();
    // Step 1: m̂ = g, v̂ = g², update = g / |g| = sign(g); decayed weight: w (1 - lr wd) - lr sign(g).
    let w1 = [1.0 * 0.999 - 0.1, -2.0 * 0.999 + 0.1];
    let n1 = [1.0 - 0.1, -2.0 + 0.1];
    for (a, b) in values(&p, "layer.weight").iter().zip(w1) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    for (a, b) in values(&p, "model.norm.weight").iter().zip(n1) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    opt.step(&p, &grads(&p, &g), 0.1).unwrap();
    // Step 2 with the same gradient: m = 0.095 g / 0.05 ... bias correction makes the update sign(g) again.
    let w2 = [w1[0] * 0.999 - 0.1, w1[1] * 0.999 + 0.1];
    for (a, b) in values(&p, "layer.weight").iter().zip(w2) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(opt.step, 2);
    let (m, v) = &opt.moments["layer.weight"];
    let m = m.to_vec1::<f32>().unwrap();
    let v = v.to_vec1::<f32>().unwrap();
    assert!((m[0] - 0.095).abs() < 1e-7 && (v[0] - 0.000_499_75).abs() < 1e-9, "{m:?} {v:?}");
}

#[test]
fn clipping_scales_to_the_max_norm_and_reports_the_norm_before() {
    let mut p = ParamStore::new();
    p.insert("layer.weight", Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
    p.insert("model.norm.weight", Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
    let mut g = grads(&p, &[3.0, 4.0]);
    // Two parameters each with gradient (3, 4): global norm sqrt(50).
    let before = g.clip(1.0).unwrap();
    assert!((before - 50f64.sqrt()).abs() < 1e-6);
    assert!((g.norm().unwrap() - 1.0).abs() < 1e-5);
    // Frozen parameters take no part.
    p.freeze_where(|n| n.contains("norm"));
    let g = grads(&p, &[3.0, 4.0]);
    assert!((g.norm().unwrap() - 5.0).abs() < 1e-6);
    // Accumulating two micro-batches sums their gradients.
    let mut acc = grads(&p, &[1.0, 2.0]);
    acc.accumulate(grads(&p, &[0.5, 0.5])).unwrap();
    assert_eq!(acc.by_name["layer.weight"].to_vec1::<f32>().unwrap(), vec![1.5, 2.5]);
}

#[test]
fn a_non_finite_loss_or_gradient_stops_the_step_and_leaves_the_parameters_as_they_were() {
    use ordo_train::trainer::{OptimConfig, Optimizer};
    let mut p = ParamStore::new();
    p.insert("layer.weight", Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
    p.insert("model.norm.weight", Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
    let mut opt = Optimizer::new(&OptimConfig { lr: 0.1, ..Default::default() });
    opt.step(&p, grads(&p, &[0.5, -1.0]), 1.0).unwrap();
    let before = values(&p, "layer.weight");
    let err = opt.step(&p, grads(&p, &[0.5, -1.0]), f64::NAN).unwrap_err().to_string();
    assert!(err.contains("step 2: the loss is NaN"), "{err}");
    assert!(err.contains("Lower `lr`"), "{err}");
    let err = opt.step(&p, grads(&p, &[f32::INFINITY, 1.0]), 0.5).unwrap_err().to_string();
    assert!(err.contains("step 2: the gradient norm is inf"), "{err}");
    assert_eq!(values(&p, "layer.weight"), before, "a refused step changed the parameters");
    assert_eq!(opt.adamw.step, 1, "a refused step counted as a step");
}

#[test]
fn optimiser_settings_out_of_range_are_refused_with_the_range() {
    use ordo_train::trainer::OptimConfig;
    let d = OptimConfig::default();
    let cases = [
        (OptimConfig { steps: 1_000_000_000_000_000_000, ..d.clone() }, "steps must be between 1 and"),
        (OptimConfig { batch_size: 1_000_000_000_000, micro_batch_size: 1, ..d.clone() }, "batch_size must be"),
        (OptimConfig { lr: 1e10, ..d.clone() }, "lr must be in (0, 1]"),
        (OptimConfig { min_lr_ratio: 2.0, ..d.clone() }, "min_lr_ratio must be in [0, 1]"),
        (OptimConfig { adamw: AdamWConfig { beta2: 1.5, ..d.adamw.clone() }, ..d.clone() }, "beta2 must be in [0, 1)"),
        (OptimConfig { max_grad_norm: f64::NAN, ..d.clone() }, "max_grad_norm must be"),
    ];
    for (cfg, want) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
    assert!(d.validate().is_ok());
}
