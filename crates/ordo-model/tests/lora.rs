//! LoRA adapters: the low-rank path against a hand-computed case and the merged weight, its backward
//! pass against finite differences (with and without dropout), PEFT's initialisation and keys, the
//! settings' checks, and the PEFT adapter directory written and read back, with its errors.

use ordo_model::kernels::matmul_t;
use ordo_model::lora::*;
use ordo_model::tensors::Slot;
use ordo_model::weights::{load_peft_dir, save_peft_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn adapter(rank: usize, inner: usize, out: usize, scale: f32, seed: u64) -> LowRank {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    LowRank { a: random(rank * inner, &mut rng), b: random(out * rank, &mut rng), rank, inner, out, scale }
}

#[test]
fn the_low_rank_path_by_hand() {
    // rank 1, in 2, out 2: A = [1, 2], B = [3; 4], s = 0.5, x = [1, 1]: u = 3, z = [9, 12], y += [4.5, 6].
    let lr = LowRank { a: vec![1.0, 2.0], b: vec![3.0, 4.0], rank: 1, inner: 2, out: 2, scale: 0.5 };
    let mut y = vec![10.0, 20.0];
    let tape = lr.forward_add(&[1.0, 1.0], 1, None, &mut y, Columns { stride: 2, at: 0 });
    assert_eq!((y, tape.u), (vec![14.5, 26.0], vec![3.0]));
    // Into the middle columns of a stacked row of width 4.
    let mut y = vec![0.0; 4];
    lr.forward_add(&[1.0, 1.0], 1, None, &mut y, Columns { stride: 4, at: 1 });
    assert_eq!(y, vec![0.0, 4.5, 6.0, 0.0]);
    // Merged: W + s B A = [[1.5, 3], [2, 4]] added to W = 0.
    let mut w = vec![0.0; 4];
    lr.merge_into(&mut w);
    assert_eq!(w, vec![1.5, 3.0, 2.0, 4.0]);
}

#[test]
fn the_path_equals_the_merged_weight() {
    let (m, inner, out, rank) = (5, 12, 7, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (w, x) = (random(out * inner, &mut rng), random(m * inner, &mut rng));
    let lr = adapter(rank, inner, out, 2.0 / 3.0, 2);
    let mut y = vec![0f32; m * out];
    matmul_t(&x, m, inner, &w, out, &mut y, false);
    lr.forward_add(&x, m, None, &mut y, Columns { stride: out, at: 0 });
    let mut merged = w.clone();
    lr.merge_into(&mut merged);
    let mut want = vec![0f32; m * out];
    matmul_t(&x, m, inner, &merged, out, &mut want, false);
    let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err < 1e-5, "{err}");
}

/// Checks [`LowRank::backward`] against central differences of L = Σ g ⊙ y (y the adapter's columns
/// of a stacked output), for A, B and x, with the given dropout multipliers held fixed.
fn check_gradients(mask: Option<Vec<f32>>) {
    let (m, inner, out, rank, stride, at) = (4, 6, 5, 2, 9, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = random(m * inner, &mut rng);
    let g = random(m * stride, &mut rng);
    let lr = adapter(rank, inner, out, 1.5, 3);
    let loss = |lr: &LowRank, x: &[f32]| -> f64 {
        let mut y = vec![0f32; m * stride];
        lr.forward_add(x, m, mask.clone(), &mut y, Columns { stride, at });
        y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let mut y = vec![0f32; m * stride];
    let tape = lr.forward_add(&x, m, mask.clone(), &mut y, Columns { stride, at });
    let mut dx = vec![0.25f32; m * inner]; // the path adds into what is there
    let (da, db) = lr.backward(&x, m, &tape, &g, Columns { stride, at }, &mut dx);
    let eps = 1e-2f32;
    let close = |what: &str, i: usize, got: f32, want: f64| {
        assert!((got as f64 - want).abs() < 2e-3 * (1.0 + want.abs()), "{what}[{i}]: {got} against {want}");
    };
    for (i, &got) in da.iter().enumerate() {
        let (mut p, mut q) = (lr.clone(), lr.clone());
        p.a[i] += eps;
        q.a[i] -= eps;
        close("dA", i, got, (loss(&p, &x) - loss(&q, &x)) / (2.0 * eps as f64));
    }
    for (i, &got) in db.iter().enumerate() {
        let (mut p, mut q) = (lr.clone(), lr.clone());
        p.b[i] += eps;
        q.b[i] -= eps;
        close("dB", i, got, (loss(&p, &x) - loss(&q, &x)) / (2.0 * eps as f64));
    }
    for i in 0..x.len() {
        let (mut p, mut q) = (x.clone(), x.clone());
        p[i] += eps;
        q[i] -= eps;
        close("dx", i, dx[i] - 0.25, (loss(&lr, &p) - loss(&lr, &q)) / (2.0 * eps as f64));
    }
}

#[test]
fn the_backward_pass_matches_finite_differences() {
    check_gradients(None);
    let mask = dropout_mask(0.3, 4 * 6, &mut ChaCha8Rng::seed_from_u64(5));
    assert!(mask.as_ref().unwrap().contains(&0.0));
    check_gradients(mask);
}

#[test]
fn dropout_keeps_its_share_and_rescales() {
    let mask = dropout_mask(0.25, 20_000, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let dropped = mask.iter().filter(|&&k| k == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
    assert!(mask.iter().all(|&k| k == 0.0 || (k - 4.0 / 3.0).abs() < 1e-6));
    assert_eq!(mask, dropout_mask(0.25, 20_000, &mut ChaCha8Rng::seed_from_u64(9)).unwrap());
    assert!(dropout_mask(0.0, 10, &mut ChaCha8Rng::seed_from_u64(9)).is_none());
}

fn config(targets: &[&str]) -> LoraConfig {
    LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: targets.iter().map(|s| s.to_string()).collect() }
}

#[test]
fn initialisation_keys_and_settings_follow_peft() {
    let c = config(&["q_proj", "down_proj"]);
    assert_eq!(c.scale(), 2.0);
    assert_eq!(c.slots(), vec![Slot::Q, Slot::Down]);
    let shape = |s: Slot| if s == Slot::Down { (16, 40) } else { (32, 16) };
    let ads = Adapters::init(&c, 2, shape, 11).unwrap();
    assert_eq!(ads.adapters.len(), 4);
    let down = ads.get(1, Slot::Down).unwrap();
    assert_eq!((down.a.len(), down.b.len()), (4 * 40, 16 * 4));
    assert!(down.b.iter().all(|&v| v == 0.0), "B starts at zero: the adapted model is the base");
    let bound = 1.0 / 40f32.sqrt();
    assert!(down.a.iter().all(|v| v.abs() <= bound) && down.a.iter().any(|v| v.abs() > bound / 2.0));
    assert_eq!(ads, Adapters::init(&c, 2, shape, 11).unwrap());
    assert_ne!(ads, Adapters::init(&c, 2, shape, 12).unwrap());
    let wide = LoraConfig { rank: 17, ..c.clone() };
    let err = Adapters::init(&wide, 2, shape, 11).unwrap_err().to_string();
    assert!(err.contains("LoRA rank 17 exceeds the 32 x 16 weight"), "{err}");
    assert_eq!(peft_key(3, Slot::Q, Factor::A), "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
    assert_eq!(peft_key(0, Slot::Down, Factor::B), "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
    for (bad, says) in [
        (LoraConfig { rank: 0, ..config(&["q_proj"]) }, "rank must be between 1 and 4096"),
        (LoraConfig { rank: 1 << 30, ..config(&["q_proj"]) }, "rank must be between 1 and 4096"),
        (LoraConfig { alpha: -1.0, ..config(&["q_proj"]) }, "alpha must be a positive number"),
        (LoraConfig { dropout: 1.0, ..config(&["q_proj"]) }, "dropout must be in [0, 1)"),
        (config(&["qproj"]), "unknown target module `qproj` (expected one of q_proj"),
        (config(&["q_proj", "q_proj"]), "`q_proj` is listed twice"),
        (config(&[]), "at least one module"),
    ] {
        let err = bad.check("run.toml [stages.sft.lora]").unwrap_err().to_string();
        assert!(err.contains("run.toml [stages.sft.lora]") && err.contains(says), "{err}");
    }
}

#[test]
fn the_peft_directory_round_trips_and_refuses_what_it_cannot_read() {
    let c = LoraConfig { dropout: 0.05, ..config(&["q_proj", "v_proj", "up_proj"]) };
    let shape = |s: Slot| if s == Slot::Up { (24, 16) } else { (16, 16) };
    let mut ads = Adapters::init(&c, 2, shape, 3).unwrap();
    for (i, ad) in ads.adapters.iter_mut().enumerate() {
        ad.low_rank.b.iter_mut().enumerate().for_each(|(j, v)| *v = (i * 100 + j) as f32 / 1000.0);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    save_peft_dir(&ads, &dir, Some("HuggingFaceTB/SmolLM2-135M-Instruct"), false).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["r"], 4);
    assert_eq!(json["target_modules"], serde_json::json!(["q_proj", "v_proj", "up_proj"]));
    assert_eq!(load_peft_dir(&dir, 2, shape).unwrap(), ads);
    // An existing directory is replaced only when asked.
    assert!(save_peft_dir(&ads, &dir, Some("base"), false).is_err());
    save_peft_dir(&ads, &dir, None, true).unwrap();
    // A model with fewer layers finds tensors it has no place for; one with other shapes, wrong shapes.
    let err = load_peft_dir(&dir, 1, shape).unwrap_err().to_string();
    assert!(err.contains("adapter_model.safetensors") && err.contains("layers.1."), "{err}");
    let err = load_peft_dir(&dir, 2, |_| (8, 16)).unwrap_err().to_string();
    assert!(err.contains("has shape") && err.contains("expected [8, 4]"), "{err}");
    // Settings ordo does not implement are refused by name.
    let edit = |k: &str, v: serde_json::Value| {
        let mut j = json.clone();
        j[k] = v;
        std::fs::write(dir.join(CONFIG_FILE), j.to_string()).unwrap();
        load_peft_dir(&dir, 2, shape).unwrap_err().to_string()
    };
    assert!(edit("use_dora", true.into()).contains("`use_dora` = true is not supported"));
    assert!(edit("bias", "all".into()).contains("`bias` must be \"none\""));
    assert!(
        edit("target_modules", serde_json::json!(["q_proj", "lm_head"])).contains("unknown target module `lm_head`")
    );
    assert!(edit("peft_type", "IA3".into()).contains("`peft_type` must be \"LORA\""));
    let err = edit("modules_to_save", serde_json::json!(["lm_head"]));
    assert!(err.contains("adapter_config.json") && err.contains("`modules_to_save` is not supported"), "{err}");
}
