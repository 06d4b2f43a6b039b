//! LoRA stages end to end: SFT, DPO and GRPO stages with `lora_rank` train adapters on a frozen base,
//! commit the merged model with the adapters in PEFT's layout beside it, and change the node keys;
//! bad LoRA settings are errors naming their key.

mod common;
use common::{options, problems, TINY};
use ordo_model::lora::weight_shape;
use ordo_model::weights::load_peft_dir;
use ordo_model::{Device, Tensor};

const SFT: &str = r#"sft      = { kind = "sft", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }"#;
const PREF: &str = r#"pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }"#;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn lora_stages_train_adapters_and_commit_the_merged_model() {
    let text = TINY
        .replace("seeds = [1, 2]", "seeds = [1]")
        .replace(
            SFT,
            r#"sft      = { kind = "sft", size = 16, steps = 2, batch_size = 4, lr = 1e-2, lora_rank = 4, lora_alpha = 8, lora_targets = ["q_proj", "down_proj"] }"#,
        )
        .replace(PREF, r#"pref     = { kind = "dpo", size = 16, steps = 2, batch_size = 4, lr = 1e-2, lora_rank = 2, lora_dropout = 0.1 }"#);
    let dir = tempfile::tempdir().unwrap();
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let out = ordo_lab::run(&exp, &options(dir.path(), "tiny", 1)).unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let plan = ordo_lab::plan::plan(&exp);
    let cache = dir.path().join("runs/cache");
    let plain = ordo_lab::plan::plan(
        &ordo_lab::spec::parse(&TINY.replace("seeds = [1, 2]", "seeds = [1]"), "tiny.toml", dir.path()).unwrap(),
    );
    let mut checked = 0;
    for node in plan.nodes.iter().filter(|n| n.stage == "sft" || n.stage == "pref") {
        let nd = cache.join(&node.key);
        let parent = cache.join(node.parent.as_ref().unwrap()).join("model");
        let (before, after) = (
            ordo_model::load(&parent, &Device::Cpu).unwrap(),
            ordo_model::load(&nd.join("model"), &Device::Cpu).unwrap(),
        );
        let cfg = &after.config;
        let adapters = load_peft_dir(&nd.join("adapter"), cfg.num_hidden_layers, |s| weight_shape(cfg, s)).unwrap();
        let want_targets: &[&str] = if node.stage == "sft" {
            &["q_proj", "down_proj"]
        } else {
            &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        };
        assert_eq!(adapters.config.targets, want_targets);
        assert!(
            adapters.adapters.iter().all(|a| a.low_rank.b.iter().any(|&v| v != 0.0)),
            "{}: every B trained",
            node.stage
        );
        // The committed model is the parent's weights plus the adapters; every other tensor is the parent's.
        for (name, var) in after.params.iter() {
            let old = values(before.params.var(name).unwrap().as_tensor());
            let new = values(var.as_tensor());
            let adapted = adapters.adapters.iter().find(|a| ordo_model::tensors::hf(Some(a.layer), a.slot) == *name);
            match adapted {
                Some(a) => {
                    let mut want = old.clone();
                    a.low_rank.merge_into(&mut want);
                    let err = want.iter().zip(&new).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                    assert!(err < 1e-6, "{}: {name} is not parent + s B A ({err})", node.stage);
                    assert_ne!(old, new, "{}: {name} changed", node.stage);
                }
                None => assert_eq!(old, new, "{}: {name} is frozen", node.stage),
            }
        }
        assert!(plain.nodes.iter().all(|p| p.key != node.key), "LoRA settings are part of the node key");
        checked += 1;
    }
    assert_eq!(checked, 3, "sft once, pref twice (after the base and after rlvf)");
}

#[test]
fn bad_lora_settings_name_their_key() {
    let cases = [
        (r#"lora_alpha = 8"#, "stages.sft.lora_alpha: LoRA settings need `lora_rank`"),
        (r#"lora_rank = 0"#, "stages.sft.lora_rank"),
        (r#"lora_rank = 4, lora_targets = ["lm_head"]"#, "unknown target module `lm_head`"),
        (r#"lora_rank = 4, lora_targets = "q_proj""#, "stages.sft.lora_targets: expected a list of strings"),
        (r#"lora_rank = 4, lora_dropout = 1.5"#, "dropout must be in [0, 1)"),
    ];
    for (extra, says) in cases {
        let text = TINY.replace(SFT, &SFT.replace(" }", &format!(", {extra} }}")));
        let found = problems(&text);
        assert!(found.iter().any(|p| p.contains(says)), "{extra}: {found:?}");
    }
}

#[test]
fn a_lora_reward_model_trains_its_adapters_and_head_and_saves_both_layouts() {
    let text = TINY.replace("seeds = [1, 2]", "seeds = [1]").replace(
        SFT,
        r#"sft      = { kind = "reward_model", size = 16, steps = 3, batch_size = 4, lr = 1e-2, lora_rank = 2, lora_targets = ["v_proj"] }"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let out = ordo_lab::run(&exp, &options(dir.path(), "tiny", 1)).unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let plan = ordo_lab::plan::plan(&exp);
    let node = plan.nodes.iter().find(|n| n.stage == "sft").unwrap();
    let nd = dir.path().join("runs/cache").join(&node.key);
    let base = ordo_model::load(&nd.join("model"), &Device::Cpu).unwrap();
    let rm = ordo_model::load(&nd.join("rm"), &Device::Cpu).unwrap();
    // PEFT's sequence-classification layout: the adapters under their keys, the head whole.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nd.join("rm-adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["modules_to_save"], serde_json::json!(["score"]));
    assert_eq!(config["base_model_name_or_path"], "../model");
    let saved = candle_core::safetensors::load(nd.join("rm-adapter/adapter_model.safetensors"), &Device::Cpu).unwrap();
    let head = &saved["base_model.model.score.weight"];
    assert_eq!(values(head), values(rm.params.var("score.weight").unwrap().as_tensor()));
    let cfg = &rm.config;
    assert_eq!(saved.len(), 2 * cfg.num_hidden_layers + 1, "v_proj's A and B in every layer, and the head");
    // The whole reward model is the start policy's weights with the adapters merged into v_proj only
    // (W + alpha/r B A, alpha 8 and r 2).
    let merged_delta = |name: &str| {
        let layer = name.strip_prefix("model.layers.")?.split('.').next()?.to_string();
        name.ends_with("self_attn.v_proj.weight").then(|| {
            let key = |f: &str| format!("base_model.model.model.layers.{layer}.self_attn.v_proj.lora_{f}.weight");
            let (a, b) = (&saved[&key("A")], &saved[&key("B")]);
            assert!(values(b).iter().any(|&v| v != 0.0), "layer {layer}: B trained");
            (b.matmul(a).unwrap() * 4.0).unwrap()
        })
    };
    for (name, var) in rm.params.iter().filter(|(n, _)| n.as_str() != "score.weight") {
        let start = base.params.var(name).unwrap().as_tensor();
        let want = match merged_delta(name) {
            Some(delta) => (start + delta).unwrap(),
            None => start.clone(),
        };
        let diff = (var.as_tensor() - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{name}: differs by {diff}");
    }
}
