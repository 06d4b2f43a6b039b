//! Text tokenizer (`tokenizer.json` via the `tokenizers` crate) and Jinja chat templates.

use crate::atomic;
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;

/// One chat message as chat templates expect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }
}

/// A tokenizer with its `tokenizer_config.json` (special tokens, chat template).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The tokenizer_config.json content (an object; may be empty).
    config: Value,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

/// The text of a special-token entry, which may be a string or an AddedToken object.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Parses a `tokenizer.json` text. It must be JSON first (checked here, since the `tokenizers`
/// crate panics on some malformed definitions rather than returning an error); a panic inside
/// `tokenizers` on a well-formed but invalid definition is turned into an error too.
fn parse_tokenizer_json(text: &str) -> std::result::Result<tokenizers::Tokenizer, String> {
    serde_json::from_str::<Value>(text).map_err(|e| format!("not valid JSON: {e}"))?;
    match std::panic::catch_unwind(|| tokenizers::Tokenizer::from_str(text)) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(p) => Err(format!(
            "the tokenizers library rejected the definition ({})",
            p.downcast_ref::<String>().map(String::as_str).or(p.downcast_ref::<&str>().copied()).unwrap_or("a panic")
        )),
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` if present) from a directory;
    /// `None` when the directory has no tokenizer.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&tok_path).map_err(|e| ModelError::io(&tok_path, e))?;
        let inner = parse_tokenizer_json(&text)
            .map_err(|e| ModelError::Tokenizer(format!("{}: not a valid tokenizer.json: {e}", tok_path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Tokenizer(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
            if !v.is_object() {
                return Err(ModelError::Tokenizer(format!("{}: expected a JSON object", cfg_path.display())));
            }
            v
        } else {
            json!({})
        };
        Ok(Some(TextTokenizer { inner, config }))
    }

    /// Builds a tokenizer from a `tokenizer.json` value and a `tokenizer_config.json` value.
    pub fn from_json(tokenizer_json: &Value, config: Value) -> Result<Self> {
        let inner = parse_tokenizer_json(&tokenizer_json.to_string())
            .map_err(|e| ModelError::Tokenizer(format!("invalid tokenizer definition: {e}")))?;
        Ok(TextTokenizer { inner, config })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save_to_dir(&self, dir: &Path) -> Result<()> {
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| ModelError::Tokenizer(format!("cannot serialise tokenizer: {e}")))?;
        atomic::write_file(&dir.join("tokenizer.json"), text.as_bytes())?;
        let cfg = serde_json::to_vec_pretty(&self.config).expect("JSON values serialise");
        atomic::write_file(&dir.join("tokenizer_config.json"), &cfg)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. a BOS token).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("cannot decode ids: {e}")))
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// A special token named in tokenizer_config.json (`bos_token`, `eos_token`, `pad_token`, ...).
    pub fn special_token(&self, key: &str) -> Option<String> {
        self.config.get(key).and_then(token_text)
    }

    /// The chat template, if the tokenizer has one.
    pub fn chat_template(&self) -> Option<&str> {
        match self.config.get("chat_template") {
            Some(Value::String(s)) => Some(s),
            // A list of named templates: use the default one.
            Some(Value::Array(list)) => list.iter().find_map(|t| {
                (t.get("name").and_then(Value::as_str) == Some("default"))
                    .then(|| t.get("template").and_then(Value::as_str))
                    .flatten()
            }),
            _ => None,
        }
    }

    /// Renders messages with the chat template, as transformers' `apply_chat_template` does.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.chat_template().ok_or_else(|| {
            ModelError::Tokenizer(
                "this tokenizer has no chat template (tokenizer_config.json has no `chat_template`); drop --chat"
                    .into(),
            )
        })?;
        render_chat_template(template, messages, add_generation_prompt, &self.config)
    }
}

/// Template instructions one chat-template rendering may execute: real templates use a few thousand
/// per conversation; a template with runaway loops stops here with an error instead of hanging.
pub const CHAT_TEMPLATE_FUEL: u64 = 10_000_000;

/// Renders an HF chat template (Jinja) with the variables transformers passes, within
/// [`CHAT_TEMPLATE_FUEL`] steps.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    tokenizer_config: &Value,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| ModelError::Tokenizer(format!("chat template does not parse: {e}")))?;
    let tmpl = env.get_template("chat").expect("template was just added");
    let mut ctx = serde_json::Map::new();
    for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        if let Some(t) = tokenizer_config.get(key).and_then(token_text) {
            ctx.insert(key.into(), json!(t));
        }
    }
    ctx.insert("messages".into(), json!(messages));
    ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
    tmpl.render(minijinja::Value::from_serialize(&ctx)).map_err(|e| match e.kind() {
        minijinja::ErrorKind::OutOfFuel => ModelError::Tokenizer(format!(
            "chat template did not finish within {CHAT_TEMPLATE_FUEL} steps (a runaway loop?); fix the template"
        )),
        _ => ModelError::Tokenizer(format!("chat template failed to render: {e}")),
    })
}

/// A character-level tokenizer as an ordinary `tokenizer.json`: one token per character of
/// `alphabet` (ids after the `special` tokens, which come first and are matched whole).
/// Text with a character outside the alphabet is an encoding error.
pub fn char_tokenizer(alphabet: &str, special: &[&str], eos: Option<&str>, pad: Option<&str>) -> Result<TextTokenizer> {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in special.iter().enumerate() {
        vocab.insert(s.to_string(), json!(i));
        added.push(json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true}));
    }
    for c in alphabet.chars() {
        let n = vocab.len();
        if vocab.insert(c.to_string(), json!(n)).is_some() {
            return Err(ModelError::Tokenizer(format!("character {c:?} appears twice in the alphabet")));
        }
    }
    let tok_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?s)."}, "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "\u{0}"},
    });
    let mut cfg = json!({"model_max_length": 4096});
    if let Some(e) = eos {
        cfg["eos_token"] = json!(e);
    }
    if let Some(p) = pad {
        cfg["pad_token"] = json!(p);
    }
    let tok = TextTokenizer::from_json(&tok_json, cfg)?;
    Ok(tok)
}

impl TextTokenizer {
    /// Encodes text that must be fully covered by the vocabulary (e.g. a character tokenizer's
    /// alphabet); an uncovered character is an error that names it.
    pub fn encode_strict(&self, text: &str) -> Result<Vec<u32>> {
        let uncovered = || {
            let mut rest = text.to_string();
            for t in self.inner.get_added_tokens_decoder().values() {
                rest = rest.replace(&t.content, "");
            }
            rest.chars().find(|c| self.inner.token_to_id(&c.to_string()).is_none())
        };
        match self.inner.encode(text, false) {
            Ok(enc) if !enc.get_tokens().iter().any(|t| self.inner.token_to_id(t).is_none()) => {
                Ok(enc.get_ids().to_vec())
            }
            Ok(_) | Err(_) => match uncovered() {
                Some(c) => {
                    Err(ModelError::Tokenizer(format!("{:?} is not in the vocabulary (in {text:?})", c.to_string())))
                }
                None => Err(ModelError::Tokenizer(format!("cannot encode {text:?}"))),
            },
        }
    }
}
