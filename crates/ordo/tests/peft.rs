//! ordo's LoRA adapter directories against PEFT itself, both ways (scripts/peft_check.py): PEFT loads
//! what ordo saved (a causal LM's adapters, and a reward model's adapters with its head) and computes
//! ordo's logits and score; ordo loads what PEFT saved and computes PEFT's logits.
//! Needs a Python with torch, transformers and peft, named by `ORDO_PEFT_PYTHON` (README, Tests).

use ordo_model::lora::{weight_shape, Adapters, LoraConfig};
use ordo_model::weights::{load_peft_dir, save_peft_dir};
use ordo_model::{Decoder, Device, OpPath};
use std::path::PathBuf;

fn logits(cfg: &ordo_model::ModelConfig, params: &ordo_model::ParamStore, ids: &[u32]) -> Vec<f32> {
    let t = ordo_model::decoder::ids_tensor(&[ids.to_vec()], &Device::Cpu).unwrap();
    Decoder::new(cfg, params)
        .unwrap()
        .forward(&t, None, OpPath::Inference)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
#[ignore = "needs Python with torch, transformers and peft: ORDO_PEFT_PYTHON=path/to/python"]
fn peft_round_trip() {
    let python = std::env::var("ORDO_PEFT_PYTHON")
        .expect("set ORDO_PEFT_PYTHON to a Python with torch, transformers and peft (README, Tests)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = root.join("../shared/fixtures/hf/llama-tiny");
    let m = ordo_model::load(&base, &Device::Cpu).unwrap();
    let cfg = &m.config;
    let work = tempfile::tempdir().unwrap();
    let ids: Vec<u32> = vec![1, 5, 9, 3, 7, 2];

    // ordo -> PEFT: adapters on every target with non-zero B, saved in PEFT's layout.
    let targets = ordo_model::lora::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets };
    let mut ads = Adapters::init(&lora, cfg.num_hidden_layers, |s| weight_shape(cfg, s), 9).unwrap();
    for (i, ad) in ads.adapters.iter_mut().enumerate() {
        ad.low_rank.b.iter_mut().enumerate().for_each(|(j, v)| *v = (((i * 31 + j) % 11) as f32 - 5.0) * 0.02);
    }
    save_peft_dir(&ads, &work.path().join("ordo-adapter"), Some(base.to_str().unwrap()), false).unwrap();
    let mut adapted = m.params.clone();
    adapted.attach_lora(cfg, &ads).unwrap();
    let ours = logits(cfg, &adapted, &ids);
    std::fs::write(work.path().join("ids.json"), serde_json::to_vec(&ids).unwrap()).unwrap();
    std::fs::write(work.path().join("ordo-logits.json"), serde_json::to_vec(&ours).unwrap()).unwrap();

    // A reward model: the same adapters on its backbone, its head trained whole (PEFT's modules_to_save).
    let policy = ordo_train::Policy { config: cfg.clone(), params: m.params.clone() };
    let mut rm = ordo_train::reward_model::reward_model_from(&policy, 0.5, 3).unwrap();
    rm.params.attach_lora(&rm.config, &ads).unwrap();
    assert!(rm.params.unfreeze("score.weight"));
    let head = rm.params.var("score.weight").unwrap().as_tensor().clone();
    let rm_dir = work.path().join("ordo-rm-adapter");
    ordo_model::weights::save_peft_reward_dir(&ads, &head, &rm_dir, Some(base.to_str().unwrap()), false).unwrap();
    let scores = logits(&rm.config, &rm.params, &ids);
    std::fs::write(work.path().join("ordo-rm-score.json"), serde_json::to_vec(scores.last().unwrap()).unwrap())
        .unwrap();

    let out = std::process::Command::new(&python)
        .arg(root.join("scripts/peft_check.py"))
        .arg(&base)
        .arg(work.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{said}");
    assert!(out.status.success(), "PEFT does not compute ordo's logits from ordo's adapters:\n{said}");

    // PEFT -> ordo: the adapters PEFT made, read by ordo, give PEFT's logits.
    let theirs: Vec<f32> =
        serde_json::from_slice(&std::fs::read(work.path().join("peft-logits.json")).unwrap()).unwrap();
    let read = load_peft_dir(&work.path().join("peft-adapter"), cfg.num_hidden_layers, |s| weight_shape(cfg, s))
        .unwrap_or_else(|e| panic!("ordo cannot read PEFT's adapter directory: {e}"));
    assert_eq!(read.config.rank, 3);
    let mut from_peft = m.params.clone();
    from_peft.attach_lora(cfg, &read).unwrap();
    let diff = max_diff(&logits(cfg, &from_peft, &ids), &theirs);
    eprintln!("peft -> ordo: logits differ by {diff:.2e}");
    assert!(diff < 1e-4, "ordo's logits with PEFT's adapters differ from PEFT's by {diff}");
    assert!(max_diff(&logits(cfg, &m.params, &ids), &theirs) > 1e-3, "PEFT's adapters change the model");
}
