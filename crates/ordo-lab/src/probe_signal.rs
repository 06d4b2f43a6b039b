//! What the uptake probe's stage trains on, rebuilt for its surface-match diagnostic: the preference
//! pairs a DPO or reward-model probe reads (the same draw its node made), or the world rewards of a
//! GRPO probe at its first step.

use crate::experiment::{DataSource, Experiment, Reward, StageParams};
use ordo_worlds::{Examples, ProbeSignal, World};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The signal of probe stage `stage` with `params` on the arm of seed `seed`.
pub fn probe_signal(exp: &Experiment, stage: &str, params: &StageParams, seed: u64) -> Result<ProbeSignal, String> {
    let Some(world) = exp.world() else { return Ok(ProbeSignal::Opaque) };
    Ok(match params {
        StageParams::Dpo { data, .. } | StageParams::RewardModel { data, .. } => {
            ProbeSignal::Pairs(pairs(world, data, stage, seed)?)
        }
        StageParams::Grpo { sets, .. } => {
            let steps = params.steps();
            let mut out = Vec::new();
            for set in sets {
                if !matches!(set.data, DataSource::World { .. }) {
                    return Ok(ProbeSignal::Opaque);
                }
                let mut rewards = Vec::new();
                for r in &set.rewards {
                    let Reward::World(w) = &r.reward else { return Ok(ProbeSignal::Opaque) };
                    rewards.push((world.reward(w, r.sees_cot)?, r.weight.at(0, steps)));
                }
                if set.proportion.at(0, steps) > 0.0 {
                    out.push(rewards);
                }
            }
            ProbeSignal::Rewards(out)
        }
        StageParams::Pretrain { .. } | StageParams::Sft { .. } => ProbeSignal::Opaque,
    })
}

/// The pairs a preference stage named `stage` reads on seed `seed`: the world's draw from the seed its
/// node generates data with, or the file's rows.
fn pairs(
    world: &dyn World,
    data: &DataSource,
    stage: &str,
    seed: u64,
) -> Result<Vec<ordo_train::data::PreferenceExample>, String> {
    match data {
        DataSource::World { dataset, size } => {
            let mut rng = ChaCha8Rng::seed_from_u64(crate::plan::data_seed(stage, seed));
            match world.generate(dataset, *size, &mut rng)? {
                Examples::Preferences(p) => Ok(p),
                _ => Err(format!("world:{dataset} holds no preference pairs")),
            }
        }
        DataSource::File { path, .. } => {
            let rows = ordo_train::data::read_jsonl(path).map_err(|e| e.to_string())?;
            ordo_train::data::parse_preferences(&rows, &path.display().to_string()).map_err(|e| e.to_string())
        }
    }
}
