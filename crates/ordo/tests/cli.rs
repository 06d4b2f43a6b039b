//! The `ordo` binary end to end on the HF fixtures: outputs, exit codes and error messages.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf").join(name);
    assert!(p.exists(), "fixture {} missing", p.display());
    p
}

fn ordo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn reference(name: &str) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &candle_core::Device::Cpu).unwrap()
}

fn row(t: &candle_core::Tensor, i: usize) -> Vec<i64> {
    t.get(i).unwrap().to_vec1::<i64>().unwrap()
}

#[test]
fn model_info_describes_the_checkpoint() {
    let (code, out, err) = ordo(&["model", "info", fixture("qwen3-tiny").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in ["Qwen3ForCausalLM", "head_dim 24", "parameters:           172624", "f32"] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn model_logits_writes_the_reference_logits() {
    let name = "llama-tiny";
    let r = reference(name);
    let ids: Vec<String> = row(&r["input_ids"], 0).iter().map(|x| x.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("logits.safetensors");
    let (code, _, err) = ordo(&[
        "model",
        "logits",
        "--model",
        fixture(name).to_str().unwrap(),
        "--ids",
        &ids.join(","),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let got = candle_core::safetensors::load(&out_file, &candle_core::Device::Cpu).unwrap();
    let logits = &got["logits"];
    assert_eq!(logits.dims(), &[20, 384]);
    let want = r["logits"].get(0).unwrap();
    let err = (logits - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 1e-4, "max abs error {err}");
}

#[test]
fn generate_greedy_ids_match_transformers() {
    let name = "qwen3-tiny";
    let r = reference(name);
    let prompt = row(&r["generate_prompt"], 1);
    let expected = row(&r["generate_output"], 1);
    let ids: Vec<String> = prompt.iter().map(|x| x.to_string()).collect();
    let (code, out, err) = ordo(&[
        "generate",
        "--model",
        fixture(name).to_str().unwrap(),
        "--ids",
        &ids.join(","),
        "--max-new-tokens",
        "16",
        "--greedy",
        "--format",
        "ids",
    ]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<i64> = out.trim().split(',').map(|x| x.parse().unwrap()).collect();
    assert_eq!(got, expected[prompt.len()..].to_vec());
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let (code, _, err) = ordo(&["model", "info", "/no/such/model"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/model") && err.contains("no such file"), "{err}");
    let m = fixture("llama-tiny");
    let (code, _, err) = ordo(&["generate", "--model", m.to_str().unwrap(), "--ids", "1,400", "--format", "ids"]);
    assert_eq!(code, 1);
    assert!(err.contains("token id 400 is out of the vocabulary"), "{err}");
    let (code, _, err) = ordo(&["generate", "--model", m.to_str().unwrap(), "--prompt", "hello"]);
    assert_eq!(code, 1);
    assert!(err.contains("no usable tokenizer") && err.contains("--ids"), "{err}");
    let (code, _, err) = ordo(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--ids",
        "1",
        "--temperature",
        "1",
        "--top-p",
        "2",
        "--format",
        "ids",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("top_p must be in (0, 1]"), "{err}");
}

#[test]
fn world_sample_and_corpus() {
    let (code, out, err) = ordo(&["world", "sample", "--n", "2"]);
    assert_eq!(code, 0, "{err}");
    for want in
        ["== corpus documents: Copy", "use T}A:104;B:test", "[hack fabricated strong_flag]", "== preference pairs"]
    {
        assert!(out.contains(want), "missing {want:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("world");
    let (code, _, err) = ordo(&[
        "world",
        "corpus",
        "--out",
        target.to_str().unwrap(),
        "--size",
        "corpus=100",
        "--size",
        "preferences=10",
        "--size",
        "rl_prompts=10",
        "--size",
        "eval=10",
    ]);
    assert_eq!(code, 0, "{err}");
    let corpus = std::fs::read_to_string(target.join("corpus.jsonl")).unwrap();
    assert_eq!(corpus.lines().count(), 100);
    assert!(target.join("tokenizer.json").exists());
    // A file where the directory should go is a clear error.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let (code, _, err) = ordo(&["world", "corpus", "--out", blocker.join("sub").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("file"), "{err}");
}

#[test]
fn report_and_transcripts_explain_a_missing_or_bad_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = ordo(&["report", d]);
    assert_ne!(code, 0);
    assert!(err.contains("results.json") && err.contains("ordo run FILE"), "{err}");
    std::fs::write(dir.path().join("results.json"), "{\"experiment\": 3}").unwrap();
    let (code, _, err) = ordo(&["report", d]);
    assert_ne!(code, 0);
    assert!(err.contains("not an ordo results file"), "{err}");
    // Transcripts are read in the world results.json recorded.
    let (code, _, err) = ordo(&["transcripts", d]);
    assert_ne!(code, 0);
    assert!(err.contains("results.json") && err.contains("recorded no world"), "{err}");
    std::fs::write(dir.path().join("results.json"), "{\"world\": {}}").unwrap();
    let (code, _, err) = ordo(&["transcripts", d]);
    assert_ne!(code, 0);
    assert!(err.contains("transcripts.jsonl"), "{err}");
    std::fs::write(dir.path().join("transcripts.jsonl"), "{\"suite\": \"wrong_test\"}\nnot json\n").unwrap();
    let (code, _, err) = ordo(&["transcripts", d, "--filter", "hack"]);
    assert_ne!(code, 0);
    assert!(err.contains("transcripts.jsonl:2: not JSON"), "{err}");
    let (code, _, err) = ordo(&["transcripts", d, "--filter", "hacks"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown filter \"hacks\""), "{err}");
}

/// `ordo model merge-lora`: a PEFT adapter directory merged into its base gives a checkpoint whose
/// logits are the adapted model's; an existing `--out` needs `--force`, and a broken adapter
/// directory is an error naming its file.
#[test]
fn merge_lora_writes_the_adapted_model_as_a_checkpoint() {
    use ordo_model::lora::{weight_shape, Adapters, LoraConfig};
    use ordo_model::{Decoder, Device, OpPath};
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("llama-tiny");
    let m = ordo_model::load(&base, &Device::Cpu).unwrap();
    let cfg = &m.config;
    let lora = LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: vec!["q_proj".into(), "down_proj".into()] };
    let mut ads = Adapters::init(&lora, cfg.num_hidden_layers, |s| weight_shape(cfg, s), 5).unwrap();
    for ad in &mut ads.adapters {
        ad.low_rank.b.iter_mut().enumerate().for_each(|(j, v)| *v = ((j % 7) as f32 - 3.0) * 0.05);
    }
    let adapter = tmp.path().join("adapter");
    ordo_model::weights::save_peft_dir(&ads, &adapter, None, false).unwrap();
    let out = tmp.path().join("merged");
    let args = |force: bool| {
        let mut a = vec!["model", "merge-lora", "--base", base.to_str().unwrap()];
        a.extend(["--adapter", adapter.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        if force {
            a.push("--force");
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |force| {
        let a = args(force);
        ordo(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, stdout, err) = run(false);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(&format!("merged {} adapters (rank 2; q_proj, down_proj)", 2 * cfg.num_hidden_layers)),
        "{stdout}"
    );
    let ids = ordo_model::decoder::ids_tensor(&[vec![1, 5, 9, 3, 7]], &Device::Cpu).unwrap();
    let logits = |c: &ordo_model::ModelConfig, p: &ordo_model::ParamStore| -> Vec<f32> {
        let t = Decoder::new(c, p).unwrap().forward(&ids, None, OpPath::Inference).unwrap();
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let mut adapted = m.params.clone();
    adapted.attach_lora(cfg, &ads).unwrap();
    let merged = ordo_model::load(&out, &Device::Cpu).unwrap();
    let (want, got, plain) = (logits(cfg, &adapted), logits(&merged.config, &merged.params), logits(cfg, &m.params));
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff(&want, &got) < 1e-4, "merged checkpoint and adapted model differ by {}", diff(&want, &got));
    assert!(diff(&plain, &got) > 1e-4, "the adapters change the model");
    let (code, _, err) = run(false);
    assert!(code != 0 && err.contains("pass --force"), "{err}");
    std::fs::remove_file(adapter.join("adapter_config.json")).unwrap();
    let (code, _, err) = run(true);
    assert!(code != 0 && err.contains("adapter_config.json"), "{err}");
}
