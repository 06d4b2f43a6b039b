//! Regression tests of the reliability defects a hostile user found in experiments: divergence,
//! names, shared caches, gc, world datasets, evaluation checksums, setting ranges and data files.

use ordo_lab::cache::{Cache, NodeState, RunLock};
use ordo_lab::plan::plan;
use ordo_lab::{RunOptions, RunSummary};
use std::path::Path;
use std::sync::LazyLock;

mod common;
use common::{overflowing_model, problems, problems_in};

/// The shared tiny experiment on one seed, with arms `a` (pretrain, sft) and `b` (pretrain, pref, rlvf).
static TINY: LazyLock<String> = LazyLock::new(|| {
    common::TINY.replace("seeds = [1, 2]", "seeds = [1]").replace("c = [\"pretrain\", \"rlvf\", \"pref\"]\n", "")
});

fn options(dir: &Path, name: &str) -> RunOptions {
    common::options(dir, name, 1)
}

/// Runs an experiment; an arm-seed that could not finish is an error here, with its reason.
fn run_text(text: &str, dir: &Path) -> Result<RunSummary, ordo_lab::LabError> {
    let exp = ordo_lab::spec::parse(text, "tiny.toml", dir).unwrap_or_else(|e| panic!("{e}"));
    let out = ordo_lab::run(&exp, &options(dir, &exp.name))?;
    match out.failed.first() {
        Some(f) => Err(ordo_lab::LabError::Other(f.reason.clone())),
        None => Ok(out),
    }
}

fn assert_problem(text: &str, want: &str) {
    let p = problems(text);
    assert!(p.iter().any(|m| m.contains(want)), "expected {want:?} in {p:#?}");
}

/// A bad `[world]` value is reported once; the rest of the file is still checked against the
/// world's defaults, so no other problem follows from it.
#[test]
fn a_bad_world_setting_is_one_problem() {
    let text = format!("{}\n[world.task]\nmax_operandz = 3\n", common::TINY);
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with("world:") && p[0].contains("max_operandz"), "{p:#?}");
}

/// `[eval]` and `[probe]` are the world's: without a world each is one problem; with an unknown
/// world, the unknown name is the only one.
#[test]
fn eval_and_probe_tables_need_a_world() {
    let no_world =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keys-no-world.toml")).unwrap();
    for (table, want) in [
        ("[eval]\nclean_prompts = 4\n", "eval: evaluation runs in a world"),
        ("[probe]\nevery = 2\n", "probe: the uptake probe is measured in a world"),
    ] {
        let p = problems_in(&format!("{no_world}\n{table}"), &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"));
        assert!(p.iter().any(|m| m.starts_with(want)), "{table}: {p:#?}");
    }
    // The shared tiny experiment has an [eval] table and a [probe] table.
    let unknown = common::TINY.replace("world = \"leaky-tests\"", "world = \"nowhere\"");
    assert!(unknown.contains("[eval]") && unknown.contains("[probe]"));
    let p = problems(&unknown);
    assert!(p.iter().any(|m| m.contains("unknown world \"nowhere\"")), "{p:#?}");
    assert!(!p.iter().any(|m| m.contains("set experiment.world")), "{p:#?}");
}

#[test]
fn a_diverging_stage_stops_at_its_step_and_commits_no_node() {
    let dir = tempfile::tempdir().unwrap();
    overflowing_model(&dir.path().join("model"));
    for (arm, stage) in [("a", "pretrain"), ("b", "sft"), ("c", "pref"), ("d", "rlvf")] {
        let text = TINY.replace("init = \"scratch\"\npreset = \"organism\"", "init = \"hf:model\"").replace(
            "a = [\"pretrain\", \"sft\"]\nb = [\"pretrain\", \"pref\", \"rlvf\"]",
            &format!("{arm} = [\"{stage}\"]"),
        );
        let err = run_text(&text, dir.path()).unwrap_err().to_string();
        // A first pretraining stage is the shared base, trained from the base seed (0).
        let seed = if stage == "pretrain" { 0 } else { 1 };
        assert!(err.starts_with(&format!("stage `{stage}` (seed {seed}): step 1: the ")), "{err}");
        assert!(err.contains("not finite") && err.contains("Lower `lr`"), "{err}");
        let exp = ordo_lab::spec::parse(&text, "x.toml", dir.path()).unwrap();
        let cache = Cache::new(&dir.path().join("runs/cache"));
        assert_eq!(cache.state(&plan(&exp).nodes[0].key), NodeState::Missing, "{stage}: a node was committed");
    }
}

#[test]
fn a_model_with_non_finite_weights_is_not_trained_on_or_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ordo_world::organism_config();
    let mut params = ordo_model::ParamStore::init(&cfg, 0.02, 0, &ordo_model::Device::Cpu).unwrap();
    let name = "model.norm.weight";
    let nan = (params.var(name).unwrap().as_tensor() * f64::NAN).unwrap();
    params.insert(name, nan).unwrap();
    assert!(params.check_finite("x").unwrap_err().to_string().contains("`model.norm.weight` holds 128 NaN"));
    // A cached node whose weights became NaN is refused when a child stage loads it.
    let exp = ordo_lab::spec::parse(&TINY, "x.toml", dir.path()).unwrap();
    run_text(&TINY, dir.path()).unwrap();
    let cache = Cache::new(&dir.path().join("runs/cache"));
    let p = plan(&exp);
    let base = &p.nodes[0].key;
    let err = cache.model(base).map(|_| ());
    assert!(err.is_ok());
    ordo_model::weights::save_hf_dir(
        &cache.dir(base).join("model"),
        &cfg,
        &params,
        Some(&ordo_world::tokenizer()),
        usize::MAX,
    )
    .unwrap();
    let err = cache.model(base).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("NaN or infinite"), "{err}");
}

#[test]
fn experiment_names_are_plain_and_stay_inside_the_runs_directory() {
    for bad in ["..", ".", "cache", "Cache", "a/b", "../x", "", ".hidden", "x.y", "-flag"] {
        assert_problem(&TINY.replace("name = \"tiny\"", &format!("name = {bad:?}")), "experiment.name:");
    }
    for good in ["tiny", "orders-v2", "run_3", "A1"] {
        ordo_lab::spec::parse(&TINY.replace("name = \"tiny\"", &format!("name = {good:?}")), "x", Path::new("."))
            .unwrap();
    }
}

#[test]
fn two_experiments_sharing_nodes_on_one_cache_build_each_node_once_and_completely() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> =
        ["one", "two"].iter().map(|n| TINY.replace("name = \"tiny\"", &format!("name = {n:?}"))).collect();
    let summaries: Vec<RunSummary> = std::thread::scope(|s| {
        let handles: Vec<_> = texts.iter().map(|t| s.spawn(|| run_text(t, dir.path()).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let exp = ordo_lab::spec::parse(&texts[0], "x", dir.path()).unwrap();
    let p = plan(&exp);
    let cache = Cache::new(&dir.path().join("runs/cache"));
    let mut trained: Vec<&String> = summaries.iter().flat_map(|s| &s.trained).collect();
    trained.sort();
    let mut all: Vec<&String> = p.nodes.iter().map(|n| &n.key).collect();
    all.sort();
    assert_eq!(trained, all, "each node is trained by exactly one of the two runners");
    for n in &p.nodes {
        assert_eq!(cache.state(&n.key), NodeState::Complete);
        let metrics = std::fs::read_to_string(cache.dir(&n.key).join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), n.params.steps(), "{}: metrics of every step", n.stage);
    }
    // Both reports come from the same nodes.
    let summary = |name: &str| std::fs::read(dir.path().join("runs").join(name).join("results.json")).unwrap();
    let strip = |b: Vec<u8>| String::from_utf8(b).unwrap().replace("\"one\"", "\"X\"").replace("\"two\"", "\"X\"");
    assert_eq!(strip(summary("one")), strip(summary("two")));
}

#[test]
fn gc_never_lists_what_a_plan_refers_to_a_live_lock_holds_or_what_is_not_ordos() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    run_text(&TINY, dir.path()).unwrap();
    let cache = Cache::new(&runs.join("cache"));
    let exp = ordo_lab::spec::parse(&TINY, "x", dir.path()).unwrap();
    let key = plan(&exp).nodes[0].key.clone();
    // An interrupted run's step checkpoint, snapshots and staging of a referenced node stay.
    for side in ["resume", "snapshots", "staging"] {
        std::fs::create_dir_all(cache.root.join(format!(".{key}.{side}"))).unwrap();
    }
    // Someone else's file in the cache directory stays.
    std::fs::write(cache.root.join("README.txt"), "mine").unwrap();
    assert_eq!(ordo_lab::cache::unreferenced(&cache, &runs).unwrap(), Vec::<std::path::PathBuf>::new());
    // An unreferenced node is listed, with its side entries, unless a live process holds its lock.
    let orphan = "e".repeat(64);
    std::fs::create_dir_all(cache.dir(&orphan)).unwrap();
    std::fs::create_dir_all(cache.root.join(format!(".{orphan}.resume"))).unwrap();
    let held = cache.lock_node(&orphan, &mut |_| {}).unwrap();
    assert!(ordo_lab::cache::unreferenced(&cache, &runs).unwrap().is_empty());
    drop(held);
    let listed = ordo_lab::cache::unreferenced(&cache, &runs).unwrap();
    let names: Vec<String> = listed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![format!(".{orphan}.resume"), orphan.clone()], "lock files are never listed");
    // Removal re-checks: an entry a plan has come to refer to meanwhile is kept.
    let removed = ordo_lab::cache::remove_unreferenced(&cache, &runs, &listed).unwrap();
    assert_eq!(removed, listed);
    assert!(!cache.dir(&orphan).exists());
    std::fs::create_dir_all(cache.dir(&orphan)).unwrap();
    let listed = ordo_lab::cache::unreferenced(&cache, &runs).unwrap();
    let plan = format!("{{\"nodes\": [{{\"key\": \"{orphan}\"}}], \"arms\": []}}");
    std::fs::create_dir_all(runs.join("late")).unwrap();
    std::fs::write(runs.join("late/plan.json"), plan).unwrap();
    assert!(ordo_lab::cache::remove_unreferenced(&cache, &runs, &listed).unwrap().is_empty());
    assert!(cache.dir(&orphan).exists());
}

#[test]
fn a_lock_left_by_a_dead_process_or_naming_a_reused_pid_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    // A lock file naming a live PID (ours) that no process holds: the lock is free.
    std::fs::write(dir.path().join("lock"), format!("{}\n", std::process::id())).unwrap();
    assert!(!RunLock::is_held(dir.path()));
    let lock = RunLock::acquire(dir.path()).unwrap();
    assert!(RunLock::is_held(dir.path()));
    let err = RunLock::acquire(dir.path()).unwrap_err();
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    drop(lock);
    assert!(!RunLock::is_held(dir.path()));
}

#[test]
fn a_world_dataset_must_fit_the_stage_kind() {
    for (stage, data, want) in [
        ("pref", "world:corpus", "stages.pref.data: world:corpus holds pretraining text"),
        ("pref", "world:sft", "this stage kind reads world:preferences"),
        ("pref", "world:rl_prompts", "stages.pref.data: world:rl_prompts holds RL prompts"),
        ("sft", "world:preferences", "stages.sft.data: world:preferences holds preference pairs"),
        ("pretrain", "world:sft", "stages.pretrain.data: world:sft holds prompt-completion examples"),
    ] {
        let text = TINY.replace(&format!("{stage:<8} = {{ kind"), &format!("{stage:<8} = {{ data = {data:?}, kind"));
        assert_ne!(text, *TINY);
        assert_problem(&text, want);
    }
    assert_problem(
        &TINY.replace(
            "size = 16, steps = 1, batch_size = 2",
            "prompts = \"world:corpus\", size = 16, steps = 1, batch_size = 2",
        ),
        "stages.rlvf.prompts: world:corpus holds pretraining text",
    );
}

#[test]
fn an_edited_evaluation_is_not_reported_as_measured() {
    let dir = tempfile::tempdir().unwrap();
    run_text(&TINY, dir.path()).unwrap();
    let exp = ordo_lab::spec::parse(&TINY, "x", dir.path()).unwrap();
    let cache = Cache::new(&dir.path().join("runs/cache"));
    let key = plan(&exp).arms[0].chain.last().unwrap().clone();
    let rel = ordo_lab::evaluation::eval_file("eval", &exp, 1);
    let path = cache.dir(&key).join(&rel);
    let honest = std::fs::read(&path).unwrap();
    assert_eq!(cache.evaluation(&key, &rel).unwrap().as_deref(), Some(&honest[..]), "the evaluation is listed");
    let manifest = cache.manifest(&key).unwrap();
    assert!(manifest["evaluations"][&rel].is_string(), "{manifest}");
    // Edit one measured value.
    let mut v: serde_json::Value = serde_json::from_slice(&honest).unwrap();
    v["metrics"]["hack_rate"]["value"] = serde_json::json!(0.123456);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(cache.evaluation(&key, &rel).unwrap_err().contains("does not match its checksum"));
    // The next run evaluates again: the report holds the measured value, not the edited one.
    run_text(&TINY, dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), honest);
    let results = std::fs::read_to_string(dir.path().join("runs/tiny/results.json")).unwrap();
    assert!(!results.contains("0.123456"));
    // The node itself stays complete: only the evaluation was redone.
    assert_eq!(cache.state(&key), NodeState::Complete);
}

#[test]
fn nonsense_settings_are_refused_before_anything_trains() {
    let cases = [
        (
            "steps = 2, batch_size = 4, seq_len = 48",
            "steps = 1000000000000000000, batch_size = 4, seq_len = 48",
            "stages.pretrain: steps must be between 1 and",
        ),
        ("seq_len = 48", "seq_len = 100000000", "stages.pretrain.seq_len: expected a positive integer of at most"),
        ("seq_len = 48", "seq_len = 4096", "stages.pretrain.seq_len: 4096 positions do not fit the model's 128"),
        ("group_size = 2", "group_size = 1", "stages.rlvf.group_size: expected at least 2"),
        ("max_new_tokens = 8", "max_new_tokens = 120", "stages.rlvf.max_new_tokens: 138 positions (with the longest prompt"),
        (
            "size = 16, steps = 1, batch_size = 2",
            "prompts = [{ data = \"world:rl_prompts\", proportion = -0.5, rewards = [{ name = \"verifier\" }] }], steps = 1, batch_size = 2",
            "stages.rlvf.prompts[0].proportion: expected a positive number (0 allowed within a schedule), found -0.5",
        ),
        ("group_size = 2", "group_size = 2, temperature = -1", "stages.rlvf.temperature: expected a number in (0, 10]"),
        ("group_size = 2", "group_size = 2, top_p = 1.5", "stages.rlvf.top_p: expected a number in (0, 1]"),
        ("size = 200, steps = 2", "size = 200, steps = 2, beta2 = 1.5", "beta2 must be in [0, 1)"),
        (
            "kind = \"dpo\", size = 16",
            "kind = \"dpo\", beta = -1, size = 16",
            "stages.pref.beta: expected a number in (0, 1000]",
        ),
        ("size = 200, steps = 2", "size = 200, steps = 2, min_lr_ratio = 2", "min_lr_ratio must be in [0, 1]"),
        ("size = 200, steps = 2", "size = 200, steps = 2, lr = 1e10", "stages.pretrain: lr must be in (0, 1]"),
        ("steps = 2, batch_size = 4", "steps = 2, batch_size = 1000000000000", "batch_size must be between 1 and"),
        ("size = 200,", "size = 100000000000,", "stages.pretrain.size: expected a positive integer of at most"),
        (
            "[eval]",
            "[world.corpus]\nhonest = 5.0\n\n[eval]",
            "world.corpus.honest: expected a probability in [0, 1], found 5",
        ),
        ("[eval]", "[world.task]\nheldout_percent = 100\n\n[eval]", "world.task.heldout_percent"),
        ("[eval]", "[world.rl]\nclean_share = -0.5\n\n[eval]", "world.rl.clean_share: expected a probability"),
        (
            "learned_monitor",
            "judge = { base_url = \"http://127.0.0.1:9\", model = \"m\", timeout_s = 1e300 }\nlearned_monitor",
            "eval.judge.timeout_s: expected seconds in (0, 3600]",
        ),
        (
            "learned_monitor",
            "judge = { base_url = \"http://127.0.0.1:9\", model = \"m\", retries = 1000000000 }\nlearned_monitor",
            "eval.judge.retries: expected at most 10",
        ),
        (
            "learned_monitor",
            "judge = { base_url = \"http://user:secret@127.0.0.1:9/v1\", model = \"m\" }\nlearned_monitor",
            "eval.judge.base_url: holds credentials",
        ),
    ];
    // Schedules of a reward's weight and a prompt set's proportion, on the rlvf stage.
    let head = "rlvf     = { kind = \"grpo\", ";
    let tail = "batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false";
    let weighted =
        |w: &str| format!("{head}size = 16, steps = 1, {tail}, rewards = [{{ name = \"verifier\", weight = {w} }}] }}");
    let two_sets = |a: &str, b: &str| {
        let set = |p: &str| {
            format!(
                "{{ data = \"world:rl_prompts\", size = 16, proportion = {p}, rewards = [{{ name = \"verifier\" }}] }}"
            )
        };
        format!("{head}prompts = [{}, {}], steps = 4, {tail} }}", set(a), set(b))
    };
    let schedule_cases = [
        (
            format!("{head}size = 16, steps = 1, {tail}, rewards = [{{ name = \"verifier\", targets = \"thoughts\" }}] }}"),
            "rewards[0].targets: expected \"all\", \"output\" or \"cot\", found \"thoughts\"",
        ),
        (weighted("{ start = 1 }"), "rewards[0].weight: expected a number, { from = A, to = B } or { steps = [[STEP, VALUE], ...] }, found a table with keys start"),
        (weighted("{ steps = [[1, 1.0]] }"), "rewards[0].weight.steps: expected [[STEP, VALUE], ...] with the first step 0"),
        (weighted("{ steps = [[0, 1.0], [0, 2.0]] }"), "rewards[0].weight.steps: expected [[STEP, VALUE], ...] with the first step 0 and steps increasing"),
        (weighted("\"high\""), "rewards[0].weight: expected a number, { from = A, to = B } or { steps = [[STEP, VALUE], ...] }, found the string \"high\""),
        (two_sets("{ from = 1.0, to = -1.0 }", "1.0"), "prompts[0].proportion: expected a positive number (0 allowed within a schedule), found -1"),
        (two_sets("0", "1.0"), "prompts[0].proportion: expected a positive number, found 0"),
        (
            two_sets("{ steps = [[0, 1.0], [4, 0.0]] }", "1.0"),
            "prompts[0].proportion: step 4 is not a step of this stage (steps 0 to 3)",
        ),
        (two_sets("{ steps = [[0, 1.0], [2, 0.0]] }", "{ steps = [[0, 1.0], [3, 0.0]] }"), "prompts: at step 3 of 4 every prompt set's proportion is 0"),
    ];
    let line = TINY.lines().find(|l| l.starts_with("rlvf")).unwrap();
    for (to, want) in &schedule_cases {
        let text = TINY.replacen(line, to, 1);
        assert_ne!(text, *TINY, "{to}");
        assert_problem(&text, want);
    }
    // A schedule that is valid parses, and it is part of the node key.
    let ok = TINY.replacen(line, &two_sets("{ steps = [[0, 1.0], [2, 0.0]] }", "{ from = 0.0, to = 1.0 }"), 1);
    let dir = tempfile::tempdir().unwrap();
    let scheduled = ordo_lab::spec::parse(&ok, "tiny.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let constant =
        ordo_lab::spec::parse(&TINY.replacen(line, &two_sets("1.0", "1.0"), 1), "tiny.toml", dir.path()).unwrap();
    let key =
        |e: &ordo_lab::experiment::Experiment| plan(e).nodes.iter().find(|n| n.stage == "rlvf").unwrap().key.clone();
    assert_ne!(key(&scheduled), key(&constant));
    for (from, to, want) in cases {
        let text = TINY.replacen(from, to, 1);
        assert_ne!(text, *TINY, "{from}");
        assert_problem(&text, want);
    }
    // No message repeats a credential.
    let text = TINY.replacen(
        "learned_monitor",
        "judge = { base_url = \"http://user:secret@127.0.0.1:9/v1\", model = \"m\" }\nlearned_monitor",
        1,
    );
    assert!(problems(&text).iter().all(|m| !m.contains("secret")));
}

#[test]
fn data_files_are_checked_whole_when_the_experiment_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    // A malformed preference file is reported at plan time, not after the stages before it trained.
    write("pairs.jsonl", "{\"prompt\": \"Q:1+2;{\", \"chosen\": \"x\", \"rejected\": \"y\"}\n{\"prompt\": \"Q:1+2;{\", \"chosen\": \"x\"}\n");
    let text = TINY.replace("kind = \"dpo\"", "kind = \"dpo\", data = \"pairs.jsonl\"");
    let p = problems_in(&text, dir.path());
    assert!(
        p.iter().any(|m| m.contains("stages.pref.data: ") && m.contains("pairs.jsonl:2: field `rejected` is missing")),
        "{p:#?}"
    );
    // An RL prompt without the field its reward reads.
    write("tasks.jsonl", "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n{\"prompt\": \"What is 3+3?\"}\n");
    let rl = TINY.replace(
        "size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"verifier\" }]",
        "prompts = \"tasks.jsonl\", steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"answer_match\", field = \"answer\" }]",
    );
    assert_ne!(rl, *TINY);
    let p = problems_in(&rl, dir.path());
    assert!(p.iter().any(|m| m.contains("tasks.jsonl:2: field `answer` is missing")), "{p:#?}");
    // A device, which would never end, and an over-long line.
    let dev = TINY.replace("kind = \"sft\"", "kind = \"sft\", data = \"/dev/zero\"");
    let p = problems_in(&dev, dir.path());
    assert!(p.iter().any(|m| m.contains("/dev/zero:0: not a regular file")), "{p:#?}");
    write("long.jsonl", &format!("{{\"text\": \"{}\"}}\n", "1".repeat(5 << 20)));
    let long = TINY.replace("kind = \"pretrain\"", "kind = \"pretrain\", data = \"long.jsonl\"");
    let p = problems_in(&long, dir.path());
    assert!(p.iter().any(|m| m.contains("long.jsonl:1: the line has 5242892 bytes")), "{p:#?}");
}

#[test]
fn world_settings_that_would_make_drawing_loop_forever_are_refused() {
    assert_problem(
        &TINY.replace("[eval]", "[world.corpus.test_line]\np_show = 0.0\n\n[eval]"),
        "world.corpus.test_line.p_show: expected more than 0",
    );
    assert_problem(
        &TINY.replace(
            "[eval]",
            "[world.task]\nmax_operand = 1\nmax_operands = 2\np_multiply = 0.0\nheldout_percent = 1\n\n[eval]",
        ),
        "world.task: the problem space is too small for a held-out split",
    );
}

/// RLHF: a `reward_model` stage's model is the reward of a later `grpo` stage of the same arm; a
/// reward model that is not a reward_model stage, or that does not come before its stage in every arm
/// running it, is refused before anything trains.
#[test]
fn a_reward_model_stage_scores_a_later_rl_stage_of_its_arm() {
    let rm = "rm       = { kind = \"reward_model\", size = 16, steps = 2, batch_size = 4, lr = 1e-3 }\n\
              rlhf     = { kind = \"grpo\", size = 16, steps = 2, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"reward_model\", stage = \"rm\", truth = \"honesty\" }] }\n";
    let text = TINY.replace("[arms]\n", &format!("{rm}\n[arms]\n")).replace(
        "a = [\"pretrain\", \"sft\"]\nb = [\"pretrain\", \"pref\", \"rlvf\"]",
        "rlhf = [\"pretrain\", \"rm\", \"rlhf\"]",
    );
    let dir = tempfile::tempdir().unwrap();
    run_text(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let node = plan(&exp).nodes.into_iter().find(|n| n.stage == "rlhf").unwrap();
    let metrics = std::fs::read_to_string(dir.path().join("runs/cache").join(&node.key).join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let r = l["reward/set0/reward_model/rm"].as_f64().expect("the reward model's mean score is logged");
        assert!(r.is_finite() && r == l["reward"].as_f64().unwrap(), "{l}");
        // Its ground truth (the honesty judge reading whole completions) is logged beside it.
        let truth = l["diagnostic/set0/reward_model/rm/truth"].as_f64().expect("the ground truth is logged");
        assert!((-1.0..=1.0).contains(&truth), "{l}");
    }

    let problems_of = |arms: &str, extra: &str| {
        problems(
            &TINY
                .replace("[arms]\n", &format!("{rm}{extra}\n[arms]\n"))
                .replace("a = [\"pretrain\", \"sft\"]\nb = [\"pretrain\", \"pref\", \"rlvf\"]", arms),
        )
    };
    let p = problems_of("rlhf = [\"pretrain\", \"rlhf\", \"rm\"]", "");
    let order =
        "arms.rlhf: stage `rlhf` scores with the reward model of stage `rm`, which does not come before it in this arm";
    assert!(p.iter().any(|m| m == order), "{p:#?}");
    // The same stage also named as the probe (which runs after the arm) is still checked where the arm runs it.
    let p = problems(
        &TINY
            .replace("[arms]\n", &format!("{rm}\n[arms]\n"))
            .replace(
                "a = [\"pretrain\", \"sft\"]\nb = [\"pretrain\", \"pref\", \"rlvf\"]",
                "rlhf = [\"pretrain\", \"rlhf\", \"rm\"]",
            )
            .replace("[probe]\nenabled = false", "[probe]\nstage = \"rlhf\"\nevery = 1"),
    );
    assert!(p.iter().any(|m| m == order), "{p:#?}");
    let bad = "bad = { kind = \"grpo\", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"reward_model\", stage = \"pref\" }] }\n";
    let p = problems_of("x = [\"pretrain\", \"pref\", \"bad\"]", bad);
    assert!(
        p.iter().any(
            |m| m.contains("stages.bad: its reward_model reward names \"pref\", which is not a reward_model stage")
        ),
        "{p:#?}"
    );
    let missing = "bad = { kind = \"grpo\", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"reward_model\" }] }\n";
    let p = problems_of("x = [\"pretrain\", \"bad\"]", missing);
    assert!(p.iter().any(|m| m.starts_with("stages.bad.rewards[0].stage: missing")), "{p:#?}");
    for (reward, message) in [
        (
            "{ name = \"reward_model\", stage = \"rm\", truth = \"nope\" }",
            "stages.bad.rewards[0].truth: unknown world reward \"nope\"",
        ),
        (
            "{ name = \"verifier\", truth = \"honesty\" }",
            "stages.bad.rewards[0].truth: `truth` belongs to the reward_model reward",
        ),
    ] {
        let bad = format!("bad = {{ kind = \"grpo\", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{reward}] }}\n");
        let p = problems_of("x = [\"pretrain\", \"rm\", \"bad\"]", &bad);
        assert!(p.iter().any(|m| m.starts_with(message)), "{p:#?}");
    }
}

/// A hypothesis that names what the file does not have, or says it in a way ordo cannot test, is
/// rejected with the entry and field; a metric the world does not measure stops the run before training.
#[test]
fn bad_hypotheses_are_rejected_with_their_field() {
    let with = |h: &str| format!("{}\n{h}", common::TINY);
    let cases = [
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"zz\"\nb = \"a\"\nexpect = \"a > b\"\n",
         "hypotheses[0].a: unknown arm \"zz\" (arms: a, b, c)"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b@sft\"\nb = \"a\"\nexpect = \"a > b\"\n",
         "hypotheses[0].a: arm b has no stage \"sft\" (its stages: pretrain, pref, rlvf)"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b@9\"\nb = \"a\"\nexpect = \"a > b\"\n",
         "hypotheses[0].a: arm b has stages 1 to 3, not 9"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b\"\nb = \"a\"\nexpect = \"bigger\"\n",
         "hypotheses[0].expect: expected \"a > b\", \"a < b\" or \"a = b\", found \"bigger\""),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b\"\nb = \"a\"\nexpect = \"a = b\"\n",
         "hypotheses[0].margin: \"a = b\" needs a positive number"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b\"\nexpect = \"a > b\"\n",
         "hypotheses[0].b: missing"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\ntrend = { a = 0, b = 1 }\na = \"b\"\nexpect = \"increasing\"\n",
         "hypotheses[0].a: a trend hypothesis compares the arms of `trend`, not two sides"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\ntrend = { a = 0, b = 1 }\nexpect = \"a > b\"\n",
         "hypotheses[0].expect: a trend expects \"increasing\" or \"decreasing\""),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b\"\nb = \"a\"\nexpect = \"a > b\"\nsides = 2\n",
         "hypotheses[0].sides"),
        ("[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"b\"\nb = \"a\"\nexpect = \"a > b\"\n\
          [[hypotheses]]\nid = \"H1\"\nclaim = \"y\"\nmetric = \"hack_rate\"\na = \"b\"\nb = \"a\"\nexpect = \"a < b\"\n",
         "hypotheses[1].id: \"H1\" is the id of an earlier hypothesis"),
    ];
    for (h, want) in cases {
        assert_problem(&with(h), want);
    }
    // A stage twice in an arm must be named by position.
    let twice = common::TINY
        .replace("c = [\"pretrain\", \"rlvf\", \"pref\"]", "c = [\"pretrain\", \"pref\", \"rlvf\", \"pref\"]");
    let h = "[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rate\"\na = \"c@pref\"\nb = \"a\"\nexpect = \"a > b\"\n";
    assert_problem(
        &format!("{twice}\n{h}"),
        "stage \"pref\" appears 2 times in arm c; name the boundary by position: c@2 or c@4",
    );
    // The metric is checked against the world's catalogue when the run starts, before any training.
    let dir = tempfile::tempdir().unwrap();
    let h =
        "[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"hack_rat\"\na = \"b\"\nb = \"a\"\nexpect = \"a > b\"\n";
    let err = run_text(&with(h), dir.path()).unwrap_err().to_string();
    assert!(err.contains("hypotheses[0].metric: unknown metric \"hack_rat\""), "{err}");
    assert!(
        !dir.path().join("runs/cache").exists()
            || std::fs::read_dir(dir.path().join("runs/cache")).unwrap().count() == 0
    );
    // A probe figure is read from the final model only.
    let h = "[[hypotheses]]\nid = \"H1\"\nclaim = \"x\"\nmetric = \"steps_to_halve\"\na = \"b@pref\"\nb = \"a\"\nexpect = \"a > b\"\n";
    let err = run_text(&with(h), dir.path()).unwrap_err().to_string();
    assert!(err.contains("steps_to_halve is a figure of the probe, which runs on each arm's final model"), "{err}");
}
