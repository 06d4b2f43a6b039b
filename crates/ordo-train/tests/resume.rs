//! A stage resumed from a mid-stage checkpoint ends exactly where an uninterrupted run does.

use ordo_model::{ParamStore, TextTokenizer};
use ordo_train::data::{tokenize_sft, SftExample};
use ordo_train::grpo::{train_grpo, Aggregation, GrpoConfig, GrpoSettings, PromptSet};
use ordo_train::lm::train_lm;
use ordo_train::losses::*;
use ordo_train::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward};
use ordo_train::trainer::{Checkpointing, LoopState, OptimConfig, StepLogger};
use ordo_train::Policy;

mod common;
use common::{tokenizer, without_timing};

fn policy(tok: &TextTokenizer) -> Policy {
    common::tiny_policy(tok, 32, 11)
}

fn bits(p: &ParamStore) -> Vec<(String, Vec<u32>)> {
    p.iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect()
}

/// Runs `train` once uninterrupted (saving a checkpoint every step), then again from the checkpoint
/// after `resume_at` steps, and compares the two ends.
fn check(resume_at: usize, train: &dyn Fn(&mut Policy, &mut StepLogger, Option<&mut Checkpointing>)) {
    let tok = tokenizer();
    let mut saved: Vec<(ParamStore, LoopState)> = Vec::new();
    let mut full = policy(&tok);
    let mut log = StepLogger::new("full", 0, None, false).unwrap();
    let mut save = |p: &ParamStore, s: &LoopState| -> ordo_train::Result<()> {
        saved.push((p.deep_clone()?, s.clone()));
        Ok(())
    };
    train(&mut full, &mut log, Some(&mut Checkpointing { every: 1, resume: None, save: &mut save, snapshot: None }));
    let (params, state) = saved.iter().find(|(_, s)| s.step == resume_at).cloned().expect("a checkpoint at that step");
    assert_eq!(state.history.len(), resume_at);

    let mut resumed = policy(&tok);
    resumed.params = params;
    let mut log2 = StepLogger::new("resumed", 0, None, false).unwrap();
    let mut ignore = |_: &ParamStore, _: &LoopState| -> ordo_train::Result<()> { Ok(()) };
    train(
        &mut resumed,
        &mut log2,
        Some(&mut Checkpointing { every: 1, resume: Some(state), save: &mut ignore, snapshot: None }),
    );
    assert_eq!(without_timing(&log.history), without_timing(&log2.history));
    assert!(bits(&full.params) == bits(&resumed.params), "parameters differ after resuming");
}

#[test]
fn sft_resumes_bit_identically() {
    let tok = tokenizer();
    let data: Vec<_> = ["hello", "world", "quick", "brown", "fox"]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ex = SftExample::PromptCompletion {
                prompt: format!("Q:{};", (b'a' + i as u8) as char),
                completion: c.to_string(),
            };
            tokenize_sft(&ex, &tok, Some(1), 64).unwrap()
        })
        .collect();
    let cfg =
        OptimConfig { steps: 7, batch_size: 2, micro_batch_size: 1, lr: 1e-2, warmup_steps: 2, ..Default::default() };
    check(4, &|p, log, ck| {
        train_lm(p, &data, &cfg, 3, 0, log, ck).unwrap();
    });
}

#[test]
fn grpo_with_mixed_sets_resumes_bit_identically() {
    let tok = tokenizer();
    let prompts = |from: u8| -> Vec<RlPrompt> {
        (0..5u8)
            .map(|i| {
                let text = format!("Q:{};", (from + i) as char);
                RlPrompt { ids: tok.encode(&text, false).unwrap(), text, metadata: Default::default() }
            })
            .collect()
    };
    let cfg = GrpoConfig {
        settings: GrpoSettings {
            group_size: 3,
            max_new_tokens: 4,
            temperature: 1.0,
            top_p: Some(0.9),
            top_k: None,
            inner_epochs: 2,
            clip_low: 0.2,
            clip_high: 0.3,
            kl_coef: 0.1,
            advantage: AdvantageEstimator::Grpo { scale_by_std: true },
            aggregation: Aggregation::TokenMean,
            optim: OptimConfig { steps: 5, batch_size: 3, micro_batch_size: 3, lr: 1e-2, ..Default::default() },
            cot: None,
            lora: None,
        },
        stop_tokens: vec![1],
        cot: CotFormat::default(),
    };
    check(3, &|p, log, ck| {
        let reference = policy(&tok).frozen_copy().unwrap();
        let sets = [
            PromptSet {
                name: "a".into(),
                prompts: prompts(b'a'),
                proportion: 2.0.into(),
                rewards: vec![WeightedReward {
                    source: Box::new(FnReward::new("a", true, |_, s: &str| s.matches('A').count() as f64)),
                    weight: 1.0.into(),
                    target: Default::default(),
                }],
            },
            PromptSet {
                name: "b".into(),
                prompts: prompts(b'k'),
                proportion: 1.0.into(),
                rewards: vec![WeightedReward {
                    source: Box::new(FnReward::new("b", true, |_, s: &str| s.matches('B').count() as f64)),
                    weight: 1.0.into(),
                    target: Default::default(),
                }],
            },
        ];
        train_grpo(p, &reference, &sets, &tok, &cfg, 5, 0, log, ck).unwrap();
    });
}
