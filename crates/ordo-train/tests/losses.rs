//! Stage objectives against values computed by hand (Python's math module; see each comment).

use candle_core::{Device, Tensor, Var};
use ordo_train::losses::*;
use ordo_train::schedule::{Decay, LrSchedule};

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    x.to_scalar::<f32>().unwrap() as f64
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

// Pairs: policy chosen/rejected sums [-5, -10] / [-7, -9], reference [-6, -10] / [-6, -8], lengths [2, 4] / [3, 2].
fn pairs() -> [Tensor; 6] {
    [t(&[-5., -10.]), t(&[-7., -9.]), t(&[-6., -10.]), t(&[-6., -8.]), t(&[2., 4.]), t(&[3., 2.])]
}

fn run(loss: PreferenceLoss, beta: f64, length_normalize: bool) -> PreferenceOutput {
    let [pc, pr, rc, rr, lc, lr] = pairs();
    let b = PreferenceBatch {
        policy_chosen: &pc,
        policy_rejected: &pr,
        ref_chosen: &rc,
        ref_rejected: &rr,
        chosen_len: &lc,
        rejected_len: &lr,
    };
    preference_loss(&b, &PreferenceLossConfig { loss, beta, simpo_gamma: 0.5, length_normalize }).unwrap()
}

#[test]
fn dpo_family_losses_match_hand_computation() {
    // DPO: logits (pc - rc) - (pr - rr) = [2, 1]; mean softplus(-0.1 * logits).
    let out = run(PreferenceLoss::Dpo, 0.1, false);
    close(scalar(&out.loss), 0.6212677647275813, 1e-6);
    close(out.margin().unwrap(), 0.15, 1e-6);
    close(out.accuracy().unwrap(), 1.0, 0.0);
    // Tulu 3 length-normalised DPO: the same on per-token means.
    close(scalar(&run(PreferenceLoss::Dpo, 0.1, true).loss), 0.6604039832024303, 1e-6);
    // IPO on per-token means: mean (logits - 1 / (2 beta))^2.
    close(scalar(&run(PreferenceLoss::Ipo, 0.1, false).loss), 18.805555555555554, 1e-4);
    // SimPO, beta 2, gamma 0.5: mean softplus(-(2 (avg_c - avg_r) - 0.5)); no reference.
    close(scalar(&run(PreferenceLoss::Simpo, 2.0, false).loss), 0.6119842837700785, 1e-6);
}

#[test]
fn dpo_gradient_pushes_chosen_up_and_rejected_down() {
    let [_, _, rc, rr, lc, lr] = pairs();
    let pc = Var::new(&[-5f32, -10.], &Device::Cpu).unwrap();
    let pr = Var::new(&[-7f32, -9.], &Device::Cpu).unwrap();
    let b = PreferenceBatch {
        policy_chosen: pc.as_tensor(),
        policy_rejected: pr.as_tensor(),
        ref_chosen: &rc,
        ref_rejected: &rr,
        chosen_len: &lc,
        rejected_len: &lr,
    };
    let cfg = PreferenceLossConfig { loss: PreferenceLoss::Dpo, beta: 0.1, simpo_gamma: 0.0, length_normalize: false };
    let g = preference_loss(&b, &cfg).unwrap().loss.backward().unwrap();
    let gc = g.get(pc.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let gr = g.get(pr.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    // d/d pc = -beta * sigmoid(-beta * logits) / n: sigmoid(-0.2) = 0.450166, sigmoid(-0.1) = 0.475021.
    close(gc[0] as f64, -0.1 * 0.4501660026875221 / 2.0, 1e-6);
    close(gc[1] as f64, -0.1 * 0.47502081252106 / 2.0, 1e-6);
    close(gr[0] as f64, 0.1 * 0.4501660026875221 / 2.0, 1e-6);
}

#[test]
fn bradley_terry_and_k3_match_hand_computation() {
    // mean(softplus(-(2 - 1)), softplus(-(0.5 - 1))).
    close(scalar(&bradley_terry_loss(&t(&[2.0, 0.5]), &t(&[1.0, 1.0])).unwrap()), 0.6436693358491647, 1e-6);
    // exp(-0.5) + 0.5 - 1; zero when policy equals reference.
    let k = k3_kl(&t(&[-1.0, -2.0]), &t(&[-1.5, -2.0])).unwrap().to_vec1::<f32>().unwrap();
    close(k[0] as f64, 0.10653065971263342, 1e-6);
    close(k[1] as f64, 0.0, 0.0);
    // log_sigmoid stays finite far out.
    let ls = log_sigmoid(&t(&[-200.0, 200.0])).unwrap().to_vec1::<f32>().unwrap();
    close(ls[0] as f64, -200.0, 1e-3);
    close(ls[1] as f64, 0.0, 1e-6);
}

#[test]
fn group_advantages_grpo_dr_grpo_rloo() {
    let r = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    // Group 1: mean 0.5, Bessel std sqrt(1/3); group 2 has no spread, so no signal.
    let grpo = group_advantages(&r, 4, AdvantageEstimator::Grpo { scale_by_std: true });
    let s = (1.0f64 / 3.0).sqrt() + 1e-4;
    for (a, b) in grpo.iter().zip([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0., 0., 0., 0.]) {
        close(*a, b, 1e-12);
    }
    let dr = group_advantages(&r, 4, AdvantageEstimator::Grpo { scale_by_std: false });
    assert_eq!(dr, vec![0.5, -0.5, -0.5, 0.5, 0., 0., 0., 0.]);
    // RLOO: r_i minus the mean of the other three.
    let rloo = group_advantages(&r, 4, AdvantageEstimator::Rloo);
    for (a, b) in rloo.iter().zip([2. / 3., -2. / 3., -2. / 3., 2. / 3., 0., 0., 0., 0.]) {
        close(*a, b, 1e-12);
    }
}

#[test]
fn clipped_objective_matches_hand_computation() {
    // Ratios exp(logp - old): [[e^0.2, e^-0.1], [1, e^-1 (masked)]]; advantages [1, -1]; eps 0.2.
    // Token (0,0): min(1.2214, 1.2) -> clipped to 1.2; (0,1): 0.904837 inside the range; (1,0): -1.
    let logp = Var::new(&[[-1.0f32, -2.0], [-0.5, -3.0]], &Device::Cpu).unwrap();
    let old = Tensor::new(&[[-1.2f32, -1.9], [-0.5, -2.0]], &Device::Cpu).unwrap();
    let adv = t(&[1.0, -1.0]);
    let mask = Tensor::new(&[[1f32, 1.], [1., 0.]], &Device::Cpu).unwrap();
    let e = (-0.1f64).exp();
    let cases = [
        (LossAggregation::SequenceMean, ((-1.2 - e) / 2.0 + 1.0) / 2.0),
        (LossAggregation::TokenMean, (-1.2 - e + 1.0) / 3.0),
        (LossAggregation::ConstantNormalizer { max_completion_len: 4 }, (-1.2 - e + 1.0) / 8.0),
    ];
    for (aggregation, want) in cases {
        let cfg = ClipConfig { eps_low: 0.2, eps_high: 0.2, kl_coef: 0.0, aggregation };
        let out = clipped_policy_loss(logp.as_tensor(), &old, None, &adv, &mask, &cfg).unwrap();
        close(scalar(&out.loss), want, 1e-6);
        close(out.clip_fraction, 1.0 / 3.0, 1e-9);
        if aggregation == LossAggregation::TokenMean {
            let g = out.loss.backward().unwrap().get(logp.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
            // Clipped and masked tokens get no gradient; the others -ratio * A / n_tokens.
            close(g[0][0] as f64, 0.0, 0.0);
            close(g[0][1] as f64, -e / 3.0, 1e-6);
            close(g[1][0] as f64, 1.0 / 3.0, 1e-6);
            close(g[1][1] as f64, 0.0, 0.0);
        }
    }
    // Clip-higher (DAPO): with eps_high 0.3 the first token is no longer clipped.
    let cfg = ClipConfig { eps_low: 0.2, eps_high: 0.3, kl_coef: 0.0, aggregation: LossAggregation::TokenMean };
    let out = clipped_policy_loss(logp.as_tensor(), &old, None, &adv, &mask, &cfg).unwrap();
    close(scalar(&out.loss), (-(0.2f64).exp() - e + 1.0) / 3.0, 1e-6);
    close(out.clip_fraction, 0.0, 0.0);
    // The KL term adds kl_coef * k3 per token and is reported either way.
    let reference = Tensor::new(&[[-1.5f32, -2.0], [-0.5, -3.0]], &Device::Cpu).unwrap();
    let cfg = ClipConfig { kl_coef: 0.5, ..cfg };
    let out = clipped_policy_loss(logp.as_tensor(), &old, Some(&reference), &adv, &mask, &cfg).unwrap();
    let k3 = 0.10653065971263342;
    close(out.kl, k3 / 3.0, 1e-6);
    close(scalar(&out.loss), (-(0.2f64).exp() - e + 1.0 + 0.5 * k3) / 3.0, 1e-6);
}

#[test]
fn lr_schedules_warm_up_then_decay() {
    let s = LrSchedule { peak_lr: 1.0, warmup_steps: 2, total_steps: 6, decay: Decay::Cosine, min_ratio: 0.1 };
    let lrs: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
    // Warmup 0.5, 1.0; then cosine from 1.0 (step 2) to 0.1 (step 5): step 3 = 0.1 + 0.9 * 0.5 * (1 + cos(pi/3)).
    for (a, b) in lrs.iter().zip([0.5, 1.0, 1.0, 0.775, 0.325, 0.1]) {
        close(*a, b, 1e-12);
    }
    let lin = LrSchedule { decay: Decay::Linear, ..s.clone() };
    close(lin.lr(3), 0.7, 1e-12);
    close(lin.lr(100), 0.1, 1e-12);
    let c = LrSchedule { decay: Decay::Constant, ..s };
    assert_eq!((c.lr(0), c.lr(5)), (0.5, 1.0));
}
