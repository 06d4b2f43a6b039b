//! How a stage's settings are read from an experiment file. Each stage kind's settings are one serde
//! struct (its fields documented, its defaults in its `read`), which the experiment parser fills
//! through a [`SettingsReader`], the node key hashes, and the stage's trainer takes as it is.

/// The longest sequence a setting may ask for (the model's own position limit is checked too).
pub const MAX_SEQUENCE: usize = 1 << 20;

/// Reads one table of settings key by key, recording a problem (named by the key's path) for a
/// value that is missing, of the wrong type or out of range, and answering the default instead.
pub trait SettingsReader {
    /// `table.key`: how problems name a key of this table.
    fn at(&self, key: &str) -> String;
    /// The table's own path.
    fn path(&self) -> &str;
    /// Records a problem (the message names its key itself).
    fn problem(&mut self, message: String);
    /// Whether the table sets `key`.
    fn has(&self, key: &str) -> bool;
    /// A string, or None when absent.
    fn string(&mut self, key: &'static str) -> Option<String>;
    /// A number (an integer is accepted), or `default` when absent.
    fn number(&mut self, key: &'static str, default: f64) -> f64;
    /// A positive integer, or `default` when absent (absent with no default is a problem).
    fn count(&mut self, key: &'static str, default: Option<usize>) -> usize;
    /// true or false, or `default` when absent.
    fn boolean(&mut self, key: &'static str, default: bool) -> bool;
    /// A list of strings, or None when absent.
    fn strings(&mut self, key: &'static str) -> Option<Vec<String>>;

    /// A number that must satisfy `ok`; `expected` describes the accepted range in the problem.
    fn number_where(&mut self, key: &'static str, default: f64, expected: &str, ok: &dyn Fn(f64) -> bool) -> f64 {
        let v = self.number(key, default);
        if !ok(v) {
            let at = self.at(key);
            self.problem(format!("{at}: expected {expected}, found {v}"));
        }
        v
    }
    /// A positive integer of at most `max`.
    fn count_max(&mut self, key: &'static str, default: Option<usize>, max: usize) -> usize {
        let v = self.count(key, default);
        if v > max {
            let at = self.at(key);
            self.problem(format!("{at}: expected a positive integer of at most {max}, found {v}"));
        }
        v
    }
    /// A number, or None when absent.
    fn opt_number(&mut self, key: &'static str) -> Option<f64> {
        self.has(key).then(|| self.number(key, 0.0))
    }
    /// A positive integer, or None when absent.
    fn opt_count(&mut self, key: &'static str) -> Option<usize> {
        self.has(key).then(|| self.count(key, Some(1)))
    }
}

/// One of `options` by its name (`default` when absent); another name is a problem that lists them.
pub fn choice<T: Copy>(r: &mut dyn SettingsReader, key: &'static str, options: &[(&str, T)], default: T) -> T {
    let Some(name) = r.string(key) else { return default };
    match options.iter().find(|(n, _)| *n == name) {
        Some((_, v)) => *v,
        None => {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
            let expected = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            let at = r.at(key);
            r.problem(format!("{at}: expected {expected}, found {name:?}"));
            default
        }
    }
}

/// A stage's LoRA adapters: `lora_rank` (its presence turns them on), `lora_alpha` (PEFT's default 8),
/// `lora_dropout` (default 0) and `lora_targets` (HF module names; default every linear layer of the
/// blocks, PEFT's `all-linear`). None without `lora_rank`.
pub fn read_lora(r: &mut dyn SettingsReader) -> Option<ordo_model::lora::LoraConfig> {
    if !r.has("lora_rank") {
        for key in ["lora_alpha", "lora_dropout", "lora_targets"] {
            if r.has(key) {
                let at = r.at(key);
                r.problem(format!("{at}: LoRA settings need `lora_rank` (the adapters' rank) in the same table"));
            }
        }
        return None;
    }
    let all = || ordo_model::lora::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    let lora = ordo_model::lora::LoraConfig {
        rank: r.count("lora_rank", None),
        alpha: r.number("lora_alpha", 8.0),
        dropout: r.number("lora_dropout", 0.0),
        targets: r.strings("lora_targets").unwrap_or_else(all),
    };
    if let Err(e) = lora.check(r.path()) {
        r.problem(e.to_string());
    }
    Some(lora)
}
