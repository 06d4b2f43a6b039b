//! Training data in TRL's JSONL conventions, parsed with errors that name file:line and field,
//! and tokenised into the sequences the stages consume.
//!
//! - pretraining: `{"text": ...}`
//! - SFT: `{"prompt": ..., "completion": ...}` or `{"messages": [{"role", "content"}, ...]}`
//! - preferences: `{"prompt": ..., "chosen": ..., "rejected": ...}`
//! - RL prompts: `{"prompt": ..., <any metadata fields>}`

use crate::error::{Result, TrainError};
use ordo_model::{ChatMessage, TextTokenizer};
use serde_json::{Map, Value};
use std::path::Path;

/// One SFT example.
#[derive(Debug, Clone, PartialEq)]
pub enum SftExample {
    PromptCompletion {
        prompt: String,
        completion: String,
    },
    /// A conversation; the loss covers the last (assistant) message.
    Messages(Vec<ChatMessage>),
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceExample {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// One RL prompt with the metadata its rewards read (e.g. the true answer).
#[derive(Debug, Clone, PartialEq)]
pub struct RlPromptExample {
    pub prompt: String,
    pub metadata: Map<String, Value>,
}

/// The largest data file ordo reads.
pub const MAX_DATA_FILE_BYTES: u64 = 1 << 30;
/// The longest line of a JSONL data file.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The bytes of a data file: a regular file (not a device or a pipe, which could be endless) of at
/// most [`MAX_DATA_FILE_BYTES`].
pub fn read_data_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
    let refuse = |message: String| TrainError::Data { file: path.display().to_string(), line: 0, message };
    if !meta.is_file() {
        return Err(refuse("not a regular file (expected a JSONL file)".into()));
    }
    if meta.len() > MAX_DATA_FILE_BYTES {
        return Err(refuse(format!(
            "{} bytes is more than the {MAX_DATA_FILE_BYTES} a data file may hold",
            meta.len()
        )));
    }
    use std::io::Read;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    file.take(MAX_DATA_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| TrainError::io(path, e))?;
    if bytes.len() as u64 > MAX_DATA_FILE_BYTES {
        return Err(refuse(format!("grew past the {MAX_DATA_FILE_BYTES} bytes a data file may hold while read")));
    }
    Ok(bytes)
}

/// The non-empty lines of a JSONL file as objects, with their 1-based line numbers.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let origin = path.display().to_string();
    let text = String::from_utf8(read_data_file(path)?).map_err(|e| TrainError::Data {
        file: origin.clone(),
        line: 0,
        message: format!("not UTF-8 text: {e}"),
    })?;
    parse_jsonl(&text, &origin)
}

/// Parses JSONL text; `origin` names the file in errors. Lines longer than [`MAX_LINE_BYTES`] are refused.
pub fn parse_jsonl(text: &str, origin: &str) -> Result<Vec<(usize, Map<String, Value>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| TrainError::Data { file: origin.to_string(), line: i + 1, message };
        if line.len() > MAX_LINE_BYTES {
            return Err(err(format!("the line has {} bytes, more than the {MAX_LINE_BYTES} allowed", line.len())));
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => out.push((i + 1, o)),
            Ok(_) => return Err(err("expected a JSON object".into())),
            Err(e) => return Err(err(format!("not valid JSON: {e}"))),
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data {
            file: origin.to_string(),
            line: 0,
            message: "the file holds no examples".into(),
        });
    }
    Ok(out)
}

/// Field access that names the file, line and field in errors.
struct Record<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
    line: usize,
}

impl Record<'_> {
    fn err(&self, message: String) -> TrainError {
        TrainError::Data { file: self.origin.to_string(), line: self.line, message }
    }
    fn string(&self, field: &str) -> Result<String> {
        match self.obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(format!("field `{field}`: expected a string, found {other}"))),
            None => Err(self.err(format!("field `{field}` is missing"))),
        }
    }
    fn only(&self, allowed: &[&str]) -> Result<()> {
        match self.obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(format!("unknown field `{k}`; expected {}", allowed.join(", ")))),
            None => Ok(()),
        }
    }
}

fn records<'a>(rows: &'a [(usize, Map<String, Value>)], origin: &'a str) -> impl Iterator<Item = Record<'a>> {
    rows.iter().map(move |(line, obj)| Record { obj, origin, line: *line })
}

/// Pretraining texts.
pub fn parse_texts(rows: &[(usize, Map<String, Value>)], origin: &str) -> Result<Vec<String>> {
    records(rows, origin)
        .map(|r| {
            r.only(&["text"])?;
            r.string("text")
        })
        .collect()
}

/// SFT examples, prompt/completion or messages.
pub fn parse_sft(rows: &[(usize, Map<String, Value>)], origin: &str) -> Result<Vec<SftExample>> {
    records(rows, origin)
        .map(|r| {
            if r.obj.contains_key("messages") {
                r.only(&["messages"])?;
                let msgs = r.obj["messages"]
                    .as_array()
                    .ok_or_else(|| r.err("field `messages`: expected a list of {role, content}".into()))?;
                let parsed = msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let role = m.get("role").and_then(Value::as_str);
                        let content = m.get("content").and_then(Value::as_str);
                        match (role, content) {
                            (Some(role), Some(content)) => Ok(ChatMessage::new(role, content)),
                            _ => Err(r.err(format!(
                                "field `messages[{i}]`: expected {{\"role\": string, \"content\": string}}"
                            ))),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                match parsed.last() {
                    Some(m) if m.role == "assistant" => Ok(SftExample::Messages(parsed)),
                    _ => Err(r.err(
                        "field `messages`: the last message must have role \"assistant\" (it is what SFT learns)"
                            .into(),
                    )),
                }
            } else {
                r.only(&["prompt", "completion"])?;
                Ok(SftExample::PromptCompletion { prompt: r.string("prompt")?, completion: r.string("completion")? })
            }
        })
        .collect()
}

/// Preference pairs.
pub fn parse_preferences(rows: &[(usize, Map<String, Value>)], origin: &str) -> Result<Vec<PreferenceExample>> {
    records(rows, origin)
        .map(|r| {
            r.only(&["prompt", "chosen", "rejected"])?;
            Ok(PreferenceExample {
                prompt: r.string("prompt")?,
                chosen: r.string("chosen")?,
                rejected: r.string("rejected")?,
            })
        })
        .collect()
}

/// RL prompts; every field but `prompt` is metadata for the rewards.
pub fn parse_rl_prompts(rows: &[(usize, Map<String, Value>)], origin: &str) -> Result<Vec<RlPromptExample>> {
    records(rows, origin)
        .map(|r| {
            let prompt = r.string("prompt")?;
            let mut metadata = r.obj.clone();
            metadata.remove("prompt");
            Ok(RlPromptExample { prompt, metadata })
        })
        .collect()
}

/// Checks that every row has each of `fields` (the prompt metadata a reward reads), naming the first
/// line without one.
pub fn require_fields(rows: &[(usize, Map<String, Value>)], origin: &str, fields: &[&str]) -> Result<()> {
    for r in records(rows, origin) {
        if let Some(f) = fields.iter().find(|f| !r.obj.contains_key(**f)) {
            return Err(r.err(format!("field `{f}` is missing (a reward of this stage reads it)")));
        }
    }
    Ok(())
}

/// Parses rows as the data a stage kind reads, only to check them: `text` for pretraining,
/// `sft`, `preferences` or `rl_prompts`.
pub fn check_rows(rows: &[(usize, Map<String, Value>)], origin: &str, kind: &str) -> Result<()> {
    match kind {
        "text" => parse_texts(rows, origin).map(drop),
        "sft" => parse_sft(rows, origin).map(drop),
        "preferences" => parse_preferences(rows, origin).map(drop),
        _ => parse_rl_prompts(rows, origin).map(drop),
    }
}

/// A token sequence with the positions that are training targets (1) and those that are not (0).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedSequence {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
}

/// A tokenised preference pair: one prompt, two responses (each ends with EOS when one is given).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPair {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Splits an SFT example into prompt text and completion text (chat template applied to messages).
pub fn sft_texts(ex: &SftExample, tok: &TextTokenizer) -> Result<(String, String)> {
    match ex {
        SftExample::PromptCompletion { prompt, completion } => Ok((prompt.clone(), completion.clone())),
        SftExample::Messages(msgs) => {
            let prompt = tok.apply_chat_template(&msgs[..msgs.len() - 1], true)?;
            let full = tok.apply_chat_template(msgs, false)?;
            let completion = full.strip_prefix(&prompt).ok_or_else(|| {
                TrainError::Config(
                    "the chat template does not render the conversation as prompt + reply; cannot mask the prompt"
                        .into(),
                )
            })?;
            Ok((prompt, completion.to_string()))
        }
    }
}

/// Prompt tokens (not targets) followed by completion tokens and `eos` (targets), truncated to `max_len`.
pub fn tokenize_sft(
    ex: &SftExample,
    tok: &TextTokenizer,
    eos: Option<u32>,
    max_len: usize,
) -> Result<TokenizedSequence> {
    let (prompt, completion) = sft_texts(ex, tok)?;
    let p = tok.encode(&prompt, false)?;
    let mut c = tok.encode(&completion, false)?;
    c.extend(eos);
    let mut ids = p.clone();
    ids.extend(&c);
    let mut loss_mask = vec![0u8; p.len()];
    loss_mask.extend(vec![1u8; c.len()]);
    ids.truncate(max_len);
    loss_mask.truncate(max_len);
    Ok(TokenizedSequence { ids, loss_mask })
}

/// Packs texts (each followed by `eos`) into one stream cut into sequences of `seq_len` tokens;
/// every token is a target. The final partial chunk is kept if it has at least two tokens.
pub fn pack_texts(
    texts: &[String],
    tok: &TextTokenizer,
    eos: Option<u32>,
    seq_len: usize,
) -> Result<Vec<TokenizedSequence>> {
    let mut stream = Vec::new();
    for t in texts {
        stream.extend(tok.encode(t, false)?);
        stream.extend(eos);
    }
    Ok(stream
        .chunks(seq_len)
        .filter(|c| c.len() >= 2)
        .map(|c| TokenizedSequence { ids: c.to_vec(), loss_mask: vec![1; c.len()] })
        .collect())
}

/// Tokenises a preference pair.
pub fn tokenize_pair(ex: &PreferenceExample, tok: &TextTokenizer, eos: Option<u32>) -> Result<TokenizedPair> {
    let mut chosen = tok.encode(&ex.chosen, false)?;
    chosen.extend(eos);
    let mut rejected = tok.encode(&ex.rejected, false)?;
    rejected.extend(eos);
    Ok(TokenizedPair { prompt: tok.encode(&ex.prompt, false)?, chosen, rejected })
}
