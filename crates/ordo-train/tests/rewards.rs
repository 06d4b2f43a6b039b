//! Reward plumbing: what each source sees, weighted composition, prompt-set mixing, reward models
//! as RL rewards, inner epochs, and determinism of a whole GRPO run.

use ordo_model::TextTokenizer;
use ordo_train::data::{tokenize_pair, PreferenceExample};
use ordo_train::grpo::{train_grpo, Aggregation, GrpoConfig, GrpoSettings, PromptSet, SetAllocator};
use ordo_train::losses::*;
use ordo_train::reward_model::{reward_model_from, train_reward_model};
use ordo_train::rewards::*;
use ordo_train::schedule::Decay;
use ordo_train::trainer::{OptimConfig, StepLogger};
use ordo_train::Policy;

mod common;
use common::tokenizer;

fn tiny_policy(tok: &TextTokenizer, seed: u64) -> Policy {
    common::tiny_policy(tok, 48, seed)
}

fn prompt(tok: &TextTokenizer, text: &str) -> RlPrompt {
    RlPrompt { text: text.into(), ids: tok.encode(text, false).unwrap(), metadata: Default::default() }
}

#[test]
fn output_only_rewards_never_see_the_think_block() {
    let cot = CotFormat { open: "{".into(), close: "}".into() };
    let done = "{use T}A:7;B:test";
    assert_eq!(cot.view(done, true), done);
    assert_eq!(cot.view(done, false), "A:7;B:test");
    assert_eq!(cot.think_block(done), Some("use T"));
    // An unclosed think block shows an output-only reward nothing.
    assert_eq!(cot.view("{still thinking A:7", false), "");
    assert_eq!(CotFormat::default().view("<think>x</think>answer", false), "answer");

    // Composition: total = sum of weight x score, each source given its own view.
    let mentions = FnReward::new("mentions_t", true, |_, s: &str| s.contains('T') as u8 as f64);
    let says_test = FnReward::new("says_test", false, |_, s: &str| s.contains("test") as u8 as f64);
    let rewards = vec![
        WeightedReward { source: Box::new(mentions), weight: (-1.0).into(), target: Default::default() },
        WeightedReward { source: Box::new(says_test), weight: 0.5.into(), target: Default::default() },
    ];
    let p = RlPrompt { text: "Q".into(), ids: vec![], metadata: Default::default() };
    let comps = vec![done.to_string(), "{7}A:7;B:calc".to_string(), "{T}A:7;B:calc".to_string()];
    let s = score_all(&rewards, &cot, &[&p, &p, &p], &comps, (0, 1)).unwrap();
    assert_eq!(s.total, vec![-1.0 + 0.5, 0.0, -1.0]);
    assert_eq!(s.by_source[1], ("says_test".to_string(), vec![1.0, 0.0, 0.0]));
}

#[test]
fn prompt_sets_are_mixed_in_their_proportions() {
    let mut a = SetAllocator::new(&[0.8, 0.2]).unwrap();
    let mut totals = [0usize; 2];
    for _ in 0..10 {
        let c = a.next(16);
        assert_eq!(c.iter().sum::<usize>(), 16);
        totals[0] += c[0];
        totals[1] += c[1];
    }
    // 160 prompts at 80/20: exactly 128 and 32 over ten batches.
    assert_eq!(totals, [128, 32]);
    let mut b = SetAllocator::new(&[1.0, 1.0, 1.0]).unwrap();
    let c: Vec<Vec<usize>> = (0..3).map(|_| b.next(4)).collect();
    assert_eq!(c.iter().map(|x| x.iter().sum::<usize>()).sum::<usize>(), 12);
    assert!(c.iter().all(|x| x.iter().all(|&n| n == 1 || n == 2)));
    assert!(SetAllocator::new(&[0.0, 0.0]).is_err());
    assert!(SetAllocator::new(&[]).is_err());
}

fn grpo_cfg(steps: usize, mu: usize) -> GrpoConfig {
    GrpoConfig {
        settings: GrpoSettings {
            group_size: 4,
            max_new_tokens: 4,
            temperature: 1.0,
            top_p: Some(0.95),
            top_k: None,
            inner_epochs: mu,
            clip_low: 0.2,
            clip_high: 0.28,
            kl_coef: 0.05,
            advantage: AdvantageEstimator::Rloo,
            aggregation: Aggregation::TokenMean,
            optim: OptimConfig {
                steps,
                batch_size: 4,
                micro_batch_size: 4,
                lr: 1e-2,
                warmup_steps: 0,
                decay: Decay::Constant,
                min_lr_ratio: 1.0,
                adamw: Default::default(),
                max_grad_norm: 1.0,
            },
            cot: None,
            lora: None,
        },
        stop_tokens: vec![1],
        cot: CotFormat::default(),
    }
}

#[test]
fn mixed_prompt_sets_reward_models_and_inner_epochs_in_one_grpo_run_are_deterministic() {
    let tok = tokenizer();
    // A reward model trained to prefer outputs with 'A' over 'B', used as an output-only reward.
    let pairs: Vec<_> = (0..16u8)
        .map(|i| {
            let c = (b'a' + i) as char;
            let ex =
                PreferenceExample { prompt: format!("Q:{c};"), chosen: format!("{c}A"), rejected: format!("{c}B") };
            tokenize_pair(&ex, &tok, Some(1)).unwrap()
        })
        .collect();
    let mut rm = reward_model_from(&tiny_policy(&tok, 1), 0.02, 2).unwrap();
    let opt = OptimConfig { steps: 30, batch_size: 8, micro_batch_size: 4, lr: 3e-3, ..grpo_cfg(1, 1).settings.optim };
    train_reward_model(&mut rm, &pairs, &opt, 0, 0, &mut StepLogger::new("rm", 30, None, false).unwrap(), None)
        .unwrap();
    // A ground truth the reward model is compared with in the logs, one that tells this tiny policy's
    // completions apart: the parity of the sum of its bytes.
    let truth = || {
        let parity = |_: &RlPrompt, s: &str| (s.bytes().map(usize::from).sum::<usize>() % 2) as f64;
        Some(Box::new(FnReward::new("byte_parity", true, parity)) as Box<dyn RewardSource>)
    };
    let rm_source = RewardModelSource {
        name: "rm".into(),
        sees_cot: false,
        model: rm,
        tokenizer: tok.clone(),
        pad: 0,
        eos: Some(1),
        truth: truth(),
    };
    let p = prompt(&tok, "Q:a;");
    let good = rm_source.score(&[&p, &p], &["aA", "aB"]).unwrap();
    assert!(good[0] > good[1], "the reward model prefers 'A': {good:?}");

    let run = |rm_source: RewardModelSource| {
        let mut policy = tiny_policy(&tok, 3);
        let reference = policy.frozen_copy().unwrap();
        let sets = [
            PromptSet {
                name: "verifiable".into(),
                prompts: (0..6u8).map(|i| prompt(&tok, &format!("Q:{};", (b'a' + i) as char))).collect(),
                proportion: 3.0.into(),
                rewards: vec![WeightedReward {
                    source: Box::new(FnReward::new("starts_with_a", true, |_, s: &str| {
                        s.starts_with('A') as u8 as f64
                    })),
                    weight: 1.0.into(),
                    target: Default::default(),
                }],
            },
            PromptSet {
                name: "preference".into(),
                prompts: (0..6u8).map(|i| prompt(&tok, &format!("Q:{};", (b'n' + i) as char))).collect(),
                proportion: 1.0.into(),
                rewards: vec![WeightedReward {
                    source: Box::new(rm_source),
                    weight: 0.5.into(),
                    target: Default::default(),
                }],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let metrics_path = dir.path().join("metrics.jsonl");
        let mut log = StepLogger::new("grpo", 4, Some(&metrics_path), false).unwrap();
        train_grpo(&mut policy, &reference, &sets, &tok, &grpo_cfg(4, 2), 7, 0, &mut log, None).unwrap();
        let lines = std::fs::read_to_string(&metrics_path).unwrap();
        (log, policy, lines)
    };
    let rm_copy = RewardModelSource {
        name: "rm".into(),
        sees_cot: false,
        model: rm_source.model.clone_deep().unwrap(),
        tokenizer: tok.clone(),
        pad: 0,
        eos: Some(1),
        truth: truth(),
    };
    let (log_a, policy_a, lines) = run(rm_source);
    let (log_b, policy_b, _) = run(rm_copy);
    // 3:1 mixing of 4 prompts per step: 3 verifiable, 1 preference each step.
    for m in &log_a.history {
        assert_eq!((m["prompts/verifiable"].as_u64(), m["prompts/preference"].as_u64()), (Some(3), Some(1)));
        for key in [
            "loss",
            "reward",
            "kl",
            "entropy",
            "clip_fraction",
            "lr",
            "grad_norm",
            "tokens_per_s",
            "seconds",
            "seconds/sampling",
            "seconds/reference",
            "seconds/update",
            "reward/verifiable/starts_with_a",
            "reward/preference/rm",
            "diagnostic/preference/rm/truth",
        ] {
            assert!(m[key].is_number(), "metric {key} missing: {m:?}");
        }
        let truth = m["diagnostic/preference/rm/truth"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&truth), "the truth here is a share: {truth}");
        // Pairwise accuracy is logged exactly when some group holds completions the truth tells apart.
        if let Some(acc) = m.get("diagnostic/preference/rm/pairwise_accuracy") {
            assert!((0.0..=1.0).contains(&acc.as_f64().unwrap()), "{acc}");
        }
    }
    assert!(
        log_a.history.iter().any(|m| m.contains_key("diagnostic/preference/rm/pairwise_accuracy")),
        "some step's group held completions the truth tells apart: {:?}",
        log_a.history
    );
    assert_eq!(lines.lines().count(), 4, "one JSON line per step");
    // Two inner epochs: the second sees a ratio away from 1, so the KL to the reference is non-zero.
    assert!(log_a.history.iter().any(|m| m["kl"].as_f64().unwrap() > 0.0));
    // Same seed, same everything.
    let strip = |l: &StepLogger| -> Vec<serde_json::Value> {
        l.history
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.retain(|k, _| !ordo_train::trainer::is_timing_metric(k));
                serde_json::Value::Object(m)
            })
            .collect()
    };
    assert_eq!(strip(&log_a), strip(&log_b));
    for (name, v) in policy_a.params.iter() {
        let a = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = policy_b.params.var(name).unwrap().as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{name} differs between identical runs");
    }
}

/// Pairwise accuracy of a scorer against ground truth, by hand: only pairs of the same prompt whose
/// truth differs count, and a tie in the scores counts one half.
#[test]
fn pairwise_accuracy_by_hand() {
    let tok = tokenizer();
    let (a, b) = (prompt(&tok, "Q:a;"), prompt(&tok, "Q:b;"));
    let prompts = [&a, &a, &a, &b, &b];
    // Prompt a: truth 1, 0, 0; scores 0.9, 0.1, 0.9 -> pairs (0,1) agree, (0,2) tie, (1,2) same truth.
    // Prompt b: truth 0, 1; scores 0.7, 0.2 -> disagrees. Cross-prompt pairs never count.
    let scores = [0.9, 0.1, 0.9, 0.7, 0.2];
    let truth = [1.0, 0.0, 0.0, 0.0, 1.0];
    assert_eq!(pairwise_accuracy(&prompts, &scores, &truth), Some((1.0 + 0.5 + 0.0) / 3.0));
    assert_eq!(pairwise_accuracy(&prompts, &scores, &[1.0; 5]), None, "no pair the truth tells apart");
}

/// Schedules: a prompt set's proportion and a reward's weight change over the stage's steps, as the
/// hand-computed mixes and weights say; a schedule that leaves no set at some step is refused.
#[test]
fn scheduled_proportions_and_weights_follow_their_steps() {
    use ordo_train::schedule::ValueSchedule;
    let tok = tokenizer();
    let set = |name: &str, first: u8, proportion: ValueSchedule, weight: ValueSchedule| PromptSet {
        name: name.into(),
        prompts: (0..6u8).map(|i| prompt(&tok, &format!("Q:{};", (first + i) as char))).collect(),
        proportion,
        rewards: vec![WeightedReward {
            source: Box::new(FnReward::new("one", true, |_, _: &str| 1.0)),
            weight,
            target: Default::default(),
        }],
    };
    // Four steps of 4 prompts: "early" alone for steps 0-1, then "late" alone (pressure on, then off);
    // "late"'s weight runs linearly from 0 to 3 (0, 1, 2, 3).
    let sets = [
        set("early", b'a', ValueSchedule::Steps { steps: vec![(0, 1.0), (2, 0.0)] }, 1.0.into()),
        set(
            "late",
            b'n',
            ValueSchedule::Steps { steps: vec![(0, 0.0), (2, 1.0)] },
            ValueSchedule::Linear { from: 0.0, to: 3.0 },
        ),
    ];
    let mut policy = tiny_policy(&tok, 3);
    let reference = policy.frozen_copy().unwrap();
    let mut log = StepLogger::new("grpo", 4, None, false).unwrap();
    train_grpo(&mut policy, &reference, &sets, &tok, &grpo_cfg(4, 1), 7, 0, &mut log, None).unwrap();
    let counts: Vec<(u64, u64)> = log
        .history
        .iter()
        .map(|m| {
            let n = |k: &str| m.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            (n("prompts/early"), n("prompts/late"))
        })
        .collect();
    assert_eq!(counts, [(4, 0), (4, 0), (0, 4), (0, 4)]);
    let weights: Vec<f64> = log.history.iter().map(|m| m["weight/late/one"].as_f64().unwrap()).collect();
    assert_eq!(weights, [0.0, 1.0, 2.0, 3.0]);
    // Every sample of a step scores `weight * 1`.
    let rewards: Vec<f64> = log.history.iter().map(|m| m["reward"].as_f64().unwrap()).collect();
    assert_eq!(rewards, [1.0, 1.0, 2.0, 3.0]);

    let none_left = [
        set("a", b'a', ValueSchedule::Steps { steps: vec![(0, 1.0), (2, 0.0)] }, 1.0.into()),
        set("b", b'n', ValueSchedule::Steps { steps: vec![(0, 1.0), (3, 0.0)] }, 1.0.into()),
    ];
    let mut log = StepLogger::new("grpo", 4, None, false).unwrap();
    let err = train_grpo(&mut policy, &reference, &none_left, &tok, &grpo_cfg(4, 1), 7, 0, &mut log, None)
        .err()
        .expect("no prompt set at step 3");
    assert!(err.to_string().contains("at step 3 of 4"), "{err}");
}

/// Reward targeting: which tokens belong to the think block, each token's advantage from the targets
/// that update it (by hand), and an output-targeted reward's objective has exactly zero gradient at
/// every think-block token.
#[test]
fn targeted_rewards_update_only_their_tokens() {
    use candle_core::{Device, Tensor, Var};
    use ordo_train::grpo::{cot_token_count, target_advantage};
    let tok = tokenizer();
    let ids = |s: &str| tok.encode(s, false).unwrap();
    // "ab}" closes the think block at its third token; an unclosed block is all think block.
    assert_eq!(cot_token_count(&tok, &ids("ab}AB"), "}").unwrap(), 3);
    assert_eq!(cot_token_count(&tok, &ids("}A"), "}").unwrap(), 1);
    assert_eq!(cot_token_count(&tok, &ids("abAB"), "}").unwrap(), 4);
    let by_target = vec![
        (RewardTarget::All, vec![0.5, -0.5]),
        (RewardTarget::Output, vec![2.0, -2.0]),
        (RewardTarget::Cot, vec![10.0, -10.0]),
    ];
    assert_eq!(target_advantage(&by_target, 0, true), 10.5);
    assert_eq!(target_advantage(&by_target, 0, false), 2.5);
    assert_eq!(target_advantage(&by_target, 1, false), -2.5);

    // Two completions of 5 tokens whose think blocks are their first 3: an output-only advantage.
    let dev = Device::Cpu;
    let cot = 3;
    let adv: Vec<f32> = (0..2)
        .flat_map(|r| {
            let by_target = vec![(RewardTarget::Output, vec![1.0, -1.0])];
            (0..5).map(move |k| target_advantage(&by_target, r, k < cot) as f32)
        })
        .collect();
    let adv = Tensor::from_vec(adv, (2, 5), &dev).unwrap();
    let logp = Var::from_tensor(
        &Tensor::new(&[[-1.0f32, -2.0, -0.5, -1.5, -0.7], [-0.3, -0.9, -1.1, -2.2, -0.4]], &dev).unwrap(),
    )
    .unwrap();
    let old = Tensor::new(&[[-1.1f32, -1.9, -0.6, -1.4, -0.8], [-0.2, -1.0, -1.0, -2.0, -0.5]], &dev).unwrap();
    let mask = Tensor::ones((2, 5), candle_core::DType::F32, &dev).unwrap();
    for aggregation in [LossAggregation::SequenceMean, LossAggregation::TokenMean] {
        let clip = ClipConfig { eps_low: 0.2, eps_high: 0.28, kl_coef: 0.0, aggregation };
        let out = clipped_policy_loss(logp.as_tensor(), &old, None, &adv, &mask, &clip).unwrap();
        let grad = out.loss.backward().unwrap().get(&logp).unwrap().to_vec2::<f32>().unwrap();
        for row in &grad {
            assert!(row[..cot].iter().all(|g| *g == 0.0), "think-block gradients {row:?}");
            assert!(row[cot..].iter().all(|g| *g != 0.0), "output gradients {row:?}");
        }
    }
}

/// The per-token advantages of targeted rewards reduce exactly to the per-sequence ones: adding a
/// think-block-targeted reward of weight 0 (which forces the per-token path and adds nothing) leaves
/// every trained parameter bit-identical; with weight 1 it trains to something else.
#[test]
fn targeted_advantages_reduce_to_the_sequence_advantage() {
    let tok = tokenizer();
    let train = |extra: Option<(RewardTarget, f64)>| {
        let mut rewards = vec![WeightedReward {
            source: Box::new(FnReward::new("starts_with_a", true, |_, s: &str| s.starts_with('a') as u8 as f64)),
            weight: 1.0.into(),
            target: RewardTarget::All,
        }];
        if let Some((target, w)) = extra {
            rewards.push(WeightedReward {
                source: Box::new(FnReward::new("has_b", true, |_, s: &str| s.contains('b') as u8 as f64)),
                weight: w.into(),
                target,
            });
        }
        let sets = [PromptSet {
            name: "s".into(),
            prompts: (0..6u8).map(|i| prompt(&tok, &format!("Q:{};{{", (b'a' + i) as char))).collect(),
            proportion: 1.0.into(),
            rewards,
        }];
        let mut policy = tiny_policy(&tok, 5);
        let reference = policy.frozen_copy().unwrap();
        let mut log = StepLogger::new("grpo", 3, None, false).unwrap();
        train_grpo(&mut policy, &reference, &sets, &tok, &grpo_cfg(3, 1), 11, 0, &mut log, None).unwrap();
        policy
    };
    let values = |p: &Policy| -> Vec<Vec<f32>> {
        p.params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    };
    let plain = values(&train(None));
    assert!(values(&train(Some((RewardTarget::Cot, 0.0)))) == plain, "a zero-weight targeted reward changed training");
    // (Four new tokens rarely close the think block here, so the second reward targets the think block.)
    assert!(values(&train(Some((RewardTarget::Cot, 1.0)))) != plain, "a targeted reward changed nothing");
}

/// A set whose scheduled proportion drops to 0 gets no prompt from then on, whatever fractional
/// quota it had carried (with fractional shares, a leftover slot could otherwise go to it).
#[test]
fn a_set_switched_off_gets_no_prompt() {
    let mut a = SetAllocator::new(&[3.0, 0.7, 0.5]).unwrap();
    for _ in 0..4 {
        a.next(1);
    }
    a.set_proportions(&[3.0, 0.7, 0.0]).unwrap();
    for step in 0..200 {
        let c = a.next(1);
        assert_eq!(c.iter().sum::<usize>(), 1);
        assert_eq!(c[2], 0, "step {step}: {c:?}");
    }
    let mut b = SetAllocator::new(&[1.0, 2.0, 0.7, 2.0]).unwrap();
    b.next(4);
    b.set_proportions(&[1.0, 2.0, 0.7, 0.0]).unwrap();
    for _ in 0..50 {
        assert_eq!(b.next(4)[3], 0);
    }
}

/// Per-token advantages sit exactly where the batch's targets are, think block and output apart.
#[test]
fn token_advantages_line_up_with_the_batch_targets() {
    use ordo_train::batch::Batch;
    use ordo_train::grpo::{cot_token_count, token_advantages};
    let tok = tokenizer();
    let ids = |s: &str| tok.encode(s, false).unwrap();
    let (prompts, completions) = (vec![ids("Q:a;{"), ids("Q:bb;{")], vec![ids("ab}AB"), ids("a}")]);
    let rows: Vec<(Vec<u32>, Vec<u8>)> = prompts
        .iter()
        .zip(&completions)
        .map(|(p, c)| ([&p[..], &c[..]].concat(), [vec![0u8; p.len()], vec![1u8; c.len()]].concat()))
        .collect();
    let refs: Vec<(&[u32], &[u8])> = rows.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    let batch = Batch::new(&refs, 0, &candle_core::Device::Cpu).unwrap();
    let targets = batch.targets.to_vec2::<f32>().unwrap();
    let shape: Vec<(usize, usize, usize)> = prompts
        .iter()
        .zip(&completions)
        .map(|(p, c)| (p.len(), c.len(), cot_token_count(&tok, c, "}").unwrap()))
        .collect();
    // Row 0 closes its think block at its third token, so its last two get 1; row 1 is all think block.
    let by_target = vec![(RewardTarget::Output, vec![1.0, -1.0])];
    let width = targets[0].len();
    let adv = token_advantages(&by_target, &shape, width);
    let want: [&[f32]; 2] = [&[0.0, 0.0, 0.0, 1.0, 1.0], &[0.0, 0.0]];
    for (r, row) in targets.iter().enumerate() {
        let at: Vec<usize> = (0..width).filter(|&i| row[i] == 1.0).collect();
        assert_eq!(at.len(), completions[r].len(), "row {r}: one target per completion token");
        let got: Vec<f32> = at.iter().map(|&i| adv[r * width + i]).collect();
        assert_eq!(got, want[r], "row {r}");
        assert!(
            (0..width).filter(|i| !at.contains(i)).all(|i| adv[r * width + i] == 0.0),
            "row {r}: off-target entries"
        );
    }
}
