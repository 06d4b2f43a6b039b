//! The parsers under test, each with its seed inputs and one entry point that reads an input the
//! way ordo reads a file of that kind (errors are fine; a panic, a hang or unbounded memory is not).

use candle_core::Device;
use std::path::PathBuf;

/// A parser ordo exposes to files a user (or an attacker) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An experiment file (`ordo plan` / `ordo run`), planned when it parses.
    ExperimentToml,
    /// A JSONL data file, read as each stage kind's data.
    JsonlRows,
    /// A safetensors weight file.
    Safetensors,
    /// A model `config.json`.
    ConfigJson,
    /// A GGUF model file.
    Gguf,
    /// A `tokenizer.json`, loaded and used to encode and decode.
    Tokenizer,
    /// A chat template in `tokenizer_config.json`, rendered.
    ChatTemplate,
}

/// Every target, in report order.
pub const ALL: [Target; 7] = [
    Target::ExperimentToml,
    Target::JsonlRows,
    Target::Safetensors,
    Target::ConfigJson,
    Target::Gguf,
    Target::Tokenizer,
    Target::ChatTemplate,
];

impl Target {
    /// The target's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::ExperimentToml => "experiment-toml",
            Target::JsonlRows => "jsonl",
            Target::Safetensors => "safetensors",
            Target::ConfigJson => "config-json",
            Target::Gguf => "gguf",
            Target::Tokenizer => "tokenizer",
            Target::ChatTemplate => "chat-template",
        }
    }

    /// The target named `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the input is text (structure-aware mutations apply).
    pub fn is_text(self) -> bool {
        !matches!(self, Target::Safetensors | Target::Gguf)
    }
}

/// A scratch directory the targets read from: a valid data file and model directory for experiment
/// files to point at, and the files a tokenizer target rewrites each execution.
pub struct Workspace {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Workspace {
    /// Creates the scratch directory with its fixed files.
    pub fn new() -> anyhow::Result<Workspace> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("sft.jsonl"), "{\"prompt\": \"Q:1+2;{\", \"completion\": \"1+2=3}A:3;B:calc\"}\n")?;
        std::fs::write(root.join("tasks.jsonl"), "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n")?;
        let (cfg, params) = tiny_model()?;
        ordo_model::weights::save_hf_dir(
            &root.join("model"),
            &cfg,
            &params,
            Some(&ordo_world::tokenizer()),
            usize::MAX,
        )?;
        std::fs::create_dir_all(root.join("tok"))?;
        Ok(Workspace { _dir: dir, root })
    }
}

/// A two-layer model small enough that loading it costs microseconds.
fn tiny_model() -> anyhow::Result<(ordo_model::ModelConfig, ordo_model::ParamStore)> {
    let v = serde_json::json!({
        "model_type": "llama", "vocab_size": 32, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
        "eos_token_id": 1, "pad_token_id": 0,
    });
    let cfg = ordo_model::ModelConfig::from_json(&v, "fuzz seed")?;
    let params = ordo_model::ParamStore::init(&cfg, 0.02, 0, &Device::Cpu)?;
    Ok((cfg, params))
}

/// The seed inputs of a target.
pub fn seeds(target: Target, ws: &Workspace) -> anyhow::Result<Vec<Vec<u8>>> {
    let examples = || -> Vec<Vec<u8>> {
        [
            include_str!("../../../examples/orders.toml"),
            include_str!("../../../examples/quick.toml"),
            include_str!("../../../examples/leaky-tests.toml"),
            include_str!("../../../examples/smollm2-arith.toml"),
            SEED_EXPERIMENT,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    };
    Ok(match target {
        Target::ExperimentToml => examples(),
        Target::JsonlRows => {
            let first_lines = |s: &str| s.lines().take(3).collect::<Vec<_>>().join("\n").into_bytes();
            vec![
                first_lines(include_str!("../../../examples/data/arith-sft.jsonl")),
                first_lines(include_str!("../../../examples/data/arith-prefs.jsonl")),
                b"{\"text\": \"Q:1+2;{1+2=3}A:3;B:calc\"}\n{\"text\": \"Q:2*3;T:6;{use T}A:6;B:test\"}\n".to_vec(),
                b"{\"prompt\": \"What is 2+2?\", \"answer\": \"4\", \"id\": 7}\n".to_vec(),
                b"{\"prompt\": \"Q:1+2;{\", \"completion\": \"1+2=3}A:3;B:calc\"}\n".to_vec(),
            ]
        }
        Target::Safetensors => {
            let (_, params) = tiny_model()?;
            let f32s = std::fs::read(ws.root.join("model/model.safetensors"))?;
            let one: Vec<(String, Vec<u8>, Vec<usize>)> = params
                .iter()
                .take(2)
                .map(|(n, v)| Ok((n.clone(), ordo_model::weights::f32_bytes(v.as_tensor())?, v.dims().to_vec())))
                .collect::<ordo_model::Result<_>>()?;
            vec![f32s, ordo_model::weights::f32_safetensors_bytes(&one)?]
        }
        Target::ConfigJson => {
            let (cfg, _) = tiny_model()?;
            let qwen = serde_json::json!({
                "model_type": "qwen3", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
                "rope_parameters": { "rope_theta": 1000000.0 },
                "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8 },
                "architectures": ["Qwen3ForSequenceClassification"], "num_labels": 1, "eos_token_id": [1, 2],
            });
            vec![
                serde_json::to_vec_pretty(&cfg.to_hf_json())?,
                serde_json::to_vec_pretty(&ordo_world::organism_config().to_hf_json())?,
                serde_json::to_vec_pretty(&qwen)?,
            ]
        }
        Target::Gguf => {
            let (cfg, params) = tiny_model()?;
            let mut out = Vec::new();
            for dtype in [candle_core::quantized::GgmlDType::F32, candle_core::quantized::GgmlDType::Q8_0] {
                let p = ws.root.join("seed.gguf");
                ordo_model::gguf::save_gguf(&p, &cfg, &params, None, dtype)?;
                out.push(std::fs::read(&p)?);
            }
            out
        }
        Target::Tokenizer => {
            let tok = ordo_world::tokenizer();
            let text = tok.inner().to_string(false).map_err(anyhow::Error::msg)?;
            vec![text.into_bytes(), WORD_LEVEL.as_bytes().to_vec()]
        }
        Target::ChatTemplate => vec![CHATML.as_bytes().to_vec(), LLAMA_STYLE.as_bytes().to_vec()],
    })
}

/// Runs one input through the target; true when the parser accepted it (so the code after parsing
/// ran too). Errors are the parser doing its job; the caller catches panics.
pub fn run(target: Target, input: &[u8], ws: &Workspace) -> bool {
    match target {
        Target::ExperimentToml => {
            let Ok(text) = std::str::from_utf8(input) else { return false };
            let Ok(exp) = ordo_lab::spec::parse(text, "fuzz.toml", &ws.root) else { return false };
            let plan = ordo_lab::plan::plan(&exp);
            let _ = ordo_lab::plan::model_parameters(&exp)
                .map(|n| plan.nodes.iter().map(|node| ordo_lab::plan::estimate_seconds(node, n)).sum::<f64>());
            true
        }
        Target::JsonlRows => {
            let Ok(text) = std::str::from_utf8(input) else { return false };
            let Ok(rows) = ordo_train::data::parse_jsonl(text, "fuzz.jsonl") else { return false };
            let mut any = false;
            for kind in ["text", "sft", "preferences", "rl_prompts"] {
                any |= ordo_train::data::check_rows(&rows, "fuzz.jsonl", kind).is_ok();
            }
            let _ = ordo_train::data::require_fields(&rows, "fuzz.jsonl", &["answer"]);
            any
        }
        Target::Safetensors => {
            let mut raw =
                ordo_model::weights::RawWeights { tensors: Default::default(), stored_dtypes: Default::default() };
            ordo_model::weights::read_safetensors_bytes(input, "fuzz.safetensors", &Device::Cpu, &mut raw).is_ok()
        }
        Target::ConfigJson => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) else { return false };
            let Ok(cfg) = ordo_model::ModelConfig::from_json(&v, "fuzz config.json") else { return false };
            let _ = (cfg.parameter_count(), cfg.to_hf_json(), cfg.kv_groups());
            true
        }
        Target::Gguf => {
            let mut cursor = std::io::Cursor::new(input);
            ordo_model::gguf::read_gguf(&mut cursor, "fuzz.gguf", &Device::Cpu).is_ok()
        }
        Target::Tokenizer => {
            let dir = ws.root.join("tok");
            let _ = std::fs::remove_file(dir.join("tokenizer_config.json"));
            if std::fs::write(dir.join("tokenizer.json"), input).is_err() {
                return false;
            }
            let Ok(Some(tok)) = ordo_model::TextTokenizer::from_dir(&dir) else { return false };
            if let Ok(ids) = tok.encode("Q:12+3;T:15;{12+3=15}A:15;B:calc", true) {
                let _ = tok.decode(&ids, false);
            }
            let _ = tok.encode_strict("Q:1+2;{");
            true
        }
        Target::ChatTemplate => {
            let Ok(template) = std::str::from_utf8(input) else { return false };
            let cfg = serde_json::json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}});
            let msgs = [
                ordo_model::ChatMessage::new("system", "Be brief."),
                ordo_model::ChatMessage::new("user", "What is 2+2?"),
                ordo_model::ChatMessage::new("assistant", "<think>2+2=4</think>4"),
            ];
            ordo_model::tokenizer::render_chat_template(template, &msgs, true, &cfg).is_ok()
        }
    }
}

/// A small experiment that uses file data, a probe and most stage kinds.
const SEED_EXPERIMENT: &str = r#"[experiment]
name = "fuzz"
seeds = [1, 2]
world = "leaky-tests"
checkpoint_every = 5

[model]
init = "scratch"
preset = "organism"

[world.task]
max_operand = 9

[stages]
pretrain = { kind = "pretrain", size = 200, steps = 2, batch_size = 4, seq_len = 48 }
sft      = { kind = "sft", data = "sft.jsonl", steps = 1, batch_size = 4, lr = 1e-3 }
rm       = { kind = "reward_model", size = 16, steps = 1, batch_size = 4 }
pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 1e-3, loss = "ipo" }
rlvf     = { kind = "grpo", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = "verifier" }, { name = "cot_monitor", weight = -0.5 }] }
task     = { kind = "grpo", prompts = "tasks.jsonl", steps = 1, group_size = 2, gate = false, rewards = [{ name = "answer_match", field = "answer" }] }

[arms]
a = ["pretrain", "sft", "rm"]
b = ["pretrain", "pref", "rlvf"]

[eval]
wrong_test_prompts = 2
clean_prompts = 2
probe_prompts = 2
learned_monitor = { train = 40, heldout = 20, epochs = 20 }

[probe]
every = 1
"#;

/// A word-level tokenizer definition.
const WORD_LEVEL: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<unk>":0,"q":1,"a":2,"12":3},"unk_token":"<unk>"}}"#;

/// ChatML, as Qwen's templates write it.
const CHATML: &str = "{% for m in messages %}{% if m.role == 'system' and not m.content.strip() %}{{ raise_exception('empty system') }}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

/// A Llama-style template with namespaces, slicing and filters.
const LLAMA_STYLE: &str = "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.sys = m['content'] | trim %}{% endif %}{% endfor %}{% for m in messages[1:] %}{% if loop.index0 % 2 == 0 %}[INST] {{ (ns.sys ~ ' ' ~ m['content']) | trim }} [/INST]{% else %}{{ m['content'].split('</think>')[-1] | trim }}{{ eos_token }}{% endif %}{% endfor %}";
