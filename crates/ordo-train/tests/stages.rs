//! The stages learn: tests that would fail if a sign or a mask were wrong.

use candle_core::Device;
use ordo_model::tokenizer::char_tokenizer;
use ordo_model::TextTokenizer;
use ordo_train::batch::{logps_from_logits, Batch};
use ordo_train::data::*;
use ordo_train::dpo::{evaluate_pairs, train_dpo, DpoSettings};
use ordo_train::grpo::{train_grpo, GrpoConfig, GrpoSettings, PromptSet};
use ordo_train::lm::{lm_gradients, target_nll, train_lm};
use ordo_train::losses::*;
use ordo_train::reward_model::{pairwise_accuracy, reward_model_from, train_reward_model};
use ordo_train::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward};
use ordo_train::schedule::Decay;
use ordo_train::trainer::{OptimConfig, StepLogger};
use ordo_train::Policy;

mod common;
use common::{tokenizer, EOS, PAD};

fn tiny_policy(tok: &TextTokenizer, seed: u64) -> Policy {
    common::tiny_policy(tok, 48, seed)
}

fn optim(steps: usize, batch: usize, lr: f64) -> OptimConfig {
    OptimConfig {
        steps,
        batch_size: batch,
        micro_batch_size: batch,
        lr,
        warmup_steps: 0,
        decay: Decay::Constant,
        min_lr_ratio: 1.0,
        adamw: ordo_train::optim::AdamWConfig { weight_decay: 0.0, ..Default::default() },
        max_grad_norm: 1.0,
    }
}

fn quiet(steps: usize) -> StepLogger {
    StepLogger::new("test", steps, None, false).unwrap()
}

fn last(logger: &StepLogger, key: &str) -> f64 {
    logger.history.last().unwrap()[key].as_f64().unwrap()
}

fn sft_data(tok: &TextTokenizer) -> Vec<TokenizedSequence> {
    let completions = ["hello", "world", "quick", "brown", "jumps", "lazy", "fox", "dog"];
    completions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ex = SftExample::PromptCompletion {
                prompt: format!("Q:{};", (b'a' + i as u8) as char),
                completion: c.to_string(),
            };
            tokenize_sft(&ex, tok, Some(EOS), 64).unwrap()
        })
        .collect()
}

#[test]
fn sft_memorises_eight_examples_and_prompt_tokens_get_no_gradient() {
    let tok = tokenizer();
    let data = sft_data(&tok);
    // The prompt is masked: "Q:a;" is 4 tokens with flag 0, then "hello" + EOS with flag 1.
    assert_eq!(data[0].loss_mask, vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);

    // d loss / d logits is zero at every position whose next token is a prompt token.
    let policy = tiny_policy(&tok, 1);
    let rows: Vec<(&[u32], &[u8])> = data.iter().map(|s| (&s.ids[..], &s.loss_mask[..])).collect();
    let batch = Batch::new(&rows, PAD, &Device::Cpu).unwrap();
    // Logits held in a variable, so the gradient of the stage's loss with respect to them is kept.
    let dec = policy.inference_decoder().unwrap();
    let logits = dec.forward(&batch.ids, Some(&batch.attention), ordo_model::OpPath::Inference).unwrap();
    let logits = candle_core::Var::from_tensor(&logits).unwrap();
    let (logps, _) = logps_from_logits(logits.as_tensor(), &batch).unwrap();
    let grads = target_nll(&logps, &batch, batch.n_targets).unwrap().backward().unwrap();
    let g = grads.get(logits.as_tensor()).unwrap();
    let g = g.narrow(1, 0, g.dim(1).unwrap() - 1).unwrap().abs().unwrap().sum(2).unwrap().to_vec2::<f32>().unwrap();
    let targets = batch.targets.to_vec2::<f32>().unwrap();
    for (r, row) in g.iter().enumerate() {
        for (t, &x) in row.iter().enumerate() {
            assert_eq!(x > 0.0, targets[r][t] > 0.0, "row {r} position {t}: gradient {x}, target {}", targets[r][t]);
        }
    }

    let mut policy = tiny_policy(&tok, 1);
    let mut log = quiet(150);
    train_lm(&mut policy, &data, &optim(150, 8, 1e-2), 0, PAD, &mut log, None).unwrap();
    let first = log.history[0]["loss"].as_f64().unwrap();
    let final_loss = last(&log, "loss");
    assert!(first > 2.5, "initial loss {first} should be near ln(vocab)");
    assert!(final_loss < 0.05, "SFT did not memorise: loss {first} -> {final_loss}");
    // Greedy decoding now reproduces a completion.
    let out = ordo_model::generate(
        &policy.inference_decoder().unwrap(),
        &[data[2].ids[..4].to_vec()],
        &ordo_model::SamplingParams { stop_tokens: vec![EOS], ..ordo_model::SamplingParams::greedy(10) },
    )
    .unwrap();
    assert_eq!(tok.decode(&out[0], true).unwrap(), "quick");
}

#[test]
fn gradient_accumulation_equals_the_big_batch() {
    let tok = tokenizer();
    let data = sft_data(&tok);
    let policy = tiny_policy(&tok, 2);
    let idx: Vec<usize> = (0..8).collect();
    let (big, big_loss) = lm_gradients(&policy, &data, &idx, 8, PAD).unwrap();
    for micro in [1, 2, 3] {
        let (acc, loss) = lm_gradients(&policy, &data, &idx, micro, PAD).unwrap();
        assert!((loss - big_loss).abs() < 1e-5, "micro {micro}: loss {loss} vs {big_loss}");
        for (name, g) in &big.by_name {
            let d = (g - &acc.by_name[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d <= 1e-5 * scale.max(1e-6), "micro {micro} {name}: {d} vs scale {scale}");
        }
    }
}

/// Pairs whose chosen response ends in 'A' and rejected in 'B', over varied prompts and bodies.
fn pref_pairs(tok: &TextTokenizer, range: std::ops::Range<u32>) -> Vec<TokenizedPair> {
    range
        .map(|i| {
            let c = (b'a' + (i % 26) as u8) as char;
            let d = (b'a' + ((i * 7 + 3) % 26) as u8) as char;
            let ex = PreferenceExample {
                prompt: format!("Q:{c}{d};"),
                chosen: format!("{d}{c}A"),
                rejected: format!("{d}{c}B"),
            };
            tokenize_pair(&ex, tok, Some(EOS)).unwrap()
        })
        .collect()
}

#[test]
fn dpo_raises_margin_and_accuracy_on_held_out_pairs() {
    let tok = tokenizer();
    let train = pref_pairs(&tok, 0..24);
    let held_out = pref_pairs(&tok, 30..46);
    let mut policy = tiny_policy(&tok, 3);
    let reference = policy.frozen_copy().unwrap();
    let (m0, _) = evaluate_pairs(&policy, &reference, &held_out, 0.1, PAD).unwrap();
    assert!(m0.abs() < 1e-6, "policy == reference gives margin 0, got {m0}");
    for loss in [PreferenceLoss::Dpo, PreferenceLoss::Ipo] {
        let mut p = policy.clone();
        p.params = policy.params.deep_clone().unwrap();
        let cfg = PreferenceLossConfig { loss, beta: 0.1, simpo_gamma: 0.0, length_normalize: false };
        let mut log = quiet(40);
        let settings = DpoSettings { preference: cfg, optim: optim(40, 8, 3e-3), lora: None };
        train_dpo(&mut p, &reference, &train, &settings, 0, PAD, &mut log, None).unwrap();
        let (margin, acc) = evaluate_pairs(&p, &reference, &held_out, 0.1, PAD).unwrap();
        assert!(margin > 0.1 && acc > 0.9, "{loss:?}: held-out margin {margin}, accuracy {acc}");
    }
    // SimPO needs no reference and learns too.
    let cfg = PreferenceLossConfig { loss: PreferenceLoss::Simpo, beta: 2.0, simpo_gamma: 0.5, length_normalize: true };
    let mut log = quiet(40);
    let settings = DpoSettings { preference: cfg, optim: optim(40, 8, 3e-3), lora: None };
    train_dpo(&mut policy, &reference, &train, &settings, 0, PAD, &mut log, None).unwrap();
    let (_, acc) = evaluate_pairs(&policy, &reference, &held_out, 0.1, PAD).unwrap();
    assert!(acc > 0.9, "SimPO held-out accuracy {acc}");
}

#[test]
fn reward_model_separates_separable_pairs() {
    let tok = tokenizer();
    let train = pref_pairs(&tok, 0..24);
    let held_out = pref_pairs(&tok, 30..50);
    let base = tiny_policy(&tok, 4);
    let mut rm = reward_model_from(&base, 0.02, 9).unwrap();
    assert!(rm.params.var("score.weight").is_some() && rm.params.var("lm_head.weight").is_none());
    let mut log = quiet(60);
    train_reward_model(&mut rm, &train, &optim(60, 8, 3e-3), 0, PAD, &mut log, None).unwrap();
    let acc = pairwise_accuracy(&rm, &held_out, PAD).unwrap();
    assert!(acc > 0.9, "held-out pairwise accuracy {acc}");
    // It saves as an HF sequence classifier and reloads with the same scores.
    let dir = tempfile::tempdir().unwrap();
    ordo_model::weights::save_hf_dir(dir.path(), &rm.config, &rm.params, None, usize::MAX).unwrap();
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["architectures"][0], "LlamaForSequenceClassification");
    let back = ordo_model::load(dir.path(), &Device::Cpu).unwrap();
    let back = Policy { config: back.config, params: back.params };
    assert_eq!(pairwise_accuracy(&back, &held_out, PAD).unwrap(), acc);
}

/// Prompts "Q:x;" and a verifiable reward: the share of 'A' among the first 4 output characters.
fn a_task(tok: &TextTokenizer) -> Vec<RlPrompt> {
    (0..16u8)
        .map(|i| {
            let text = format!("Q:{};", (b'a' + i) as char);
            RlPrompt { ids: tok.encode(&text, false).unwrap(), text, metadata: Default::default() }
        })
        .collect()
}

fn a_share(_: &RlPrompt, out: &str) -> f64 {
    out.chars().take(4).filter(|&c| c == 'A').count() as f64 / 4.0
}

fn grpo_cfg(steps: usize, kl_coef: f64) -> GrpoConfig {
    GrpoConfig {
        settings: GrpoSettings {
            group_size: 8,
            max_new_tokens: 4,
            kl_coef,
            optim: optim(steps, 8, 1e-2),
            ..Default::default()
        },
        stop_tokens: vec![],
        cot: CotFormat::default(),
    }
}

fn run_grpo(kl_coef: f64, steps: usize) -> (StepLogger, Policy) {
    let tok = tokenizer();
    let mut policy = tiny_policy(&tok, 5);
    let reference = policy.frozen_copy().unwrap();
    let sets = [PromptSet {
        name: "a".into(),
        prompts: a_task(&tok),
        proportion: 1.0.into(),
        rewards: vec![WeightedReward {
            source: Box::new(FnReward::new("share_of_a", true, a_share)),
            weight: 1.0.into(),
            target: Default::default(),
        }],
    }];
    let mut log = quiet(steps);
    train_grpo(&mut policy, &reference, &sets, &tok, &grpo_cfg(steps, kl_coef), 0, PAD, &mut log, None).unwrap();
    (log, policy)
}

#[test]
fn grpo_raises_the_mean_reward_of_a_verifiable_task() {
    let (log, _) = run_grpo(0.0, 30);
    let reward = |range: std::ops::Range<usize>| {
        range.clone().map(|i| log.history[i]["reward"].as_f64().unwrap()).sum::<f64>() / range.len() as f64
    };
    let (start, end) = (reward(0..5), reward(25..30));
    assert!(end > start + 0.3 && end > 0.4, "mean reward {start:.3} -> {end:.3}");
    assert!(log.history[0]["reward/a/share_of_a"].is_number());
}

#[test]
fn a_kl_penalty_keeps_the_policy_closer_to_the_reference() {
    let (free, _) = run_grpo(0.0, 20);
    let (anchored, _) = run_grpo(1.0, 20);
    let kl = |l: &StepLogger| (15..20).map(|i| l.history[i]["kl"].as_f64().unwrap()).sum::<f64>() / 5.0;
    assert!(kl(&anchored) < 0.5 * kl(&free), "KL with penalty {} vs without {}", kl(&anchored), kl(&free));
}

#[test]
fn malformed_data_names_file_line_and_field() {
    let bad = [
        ("{\"prompt\": \"a\", \"chosen\": \"b\"}", "x.jsonl:1: field `rejected` is missing"),
        (
            "\n{\"prompt\": 3, \"chosen\": \"b\", \"rejected\": \"c\"}",
            "x.jsonl:2: field `prompt`: expected a string, found 3",
        ),
        (
            "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\", \"extra\": 1}",
            "x.jsonl:1: unknown field `extra`",
        ),
        ("{\"prompt\": \"a\"", "x.jsonl:1: not valid JSON"),
    ];
    for (text, want) in bad {
        let e =
            parse_jsonl(text, "x.jsonl").and_then(|rows| parse_preferences(&rows, "x.jsonl")).unwrap_err().to_string();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
    let msgs = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let e = parse_sft(&parse_jsonl(msgs, "s.jsonl").unwrap(), "s.jsonl").unwrap_err().to_string();
    assert!(e.contains("s.jsonl:1") && e.contains("last message must have role \"assistant\""), "{e}");
    // RL prompts keep every other field as metadata.
    let rl =
        parse_rl_prompts(&parse_jsonl("{\"prompt\": \"Q\", \"answer\": 42}", "r.jsonl").unwrap(), "r.jsonl").unwrap();
    assert_eq!(rl[0].metadata["answer"], 42);
}

#[test]
fn chat_sft_examples_mask_everything_but_the_assistant_reply() {
    let tok =
        char_tokenizer("abcdefghijklmnopqrstuvwxyz<>|:\n ", &["<pad>", "<eos>"], Some("<eos>"), Some("<pad>")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save_to_dir(dir.path()).unwrap();
    let cfg_path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = serde_json::json!(
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    );
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let tok = TextTokenizer::from_dir(dir.path()).unwrap().unwrap();
    let ex = SftExample::Messages(vec![
        ordo_model::ChatMessage::new("user", "hi"),
        ordo_model::ChatMessage::new("assistant", "yo"),
    ]);
    let (prompt, completion) = sft_texts(&ex, &tok).unwrap();
    assert_eq!(prompt, "<|user|>\nhi\n<|assistant|>\n");
    assert_eq!(completion, "yo\n");
    let seq = tokenize_sft(&ex, &tok, Some(EOS), 100).unwrap();
    assert_eq!(seq.loss_mask.iter().filter(|&&m| m == 1).count(), "yo\n".len() + 1);
}
