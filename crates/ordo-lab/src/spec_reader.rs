//! Reading TOML tables field by field, collecting every problem with its path.

use ordo_train::schedule::ValueSchedule;
use ordo_train::settings::SettingsReader;
use toml::Value;

/// Reads fields of one TOML table, recording problems with their paths and unknown keys.
pub(crate) struct Reader<'a> {
    pub(crate) table: &'a toml::Table,
    pub(crate) path: String,
    pub(crate) used: Vec<&'static str>,
}

pub(crate) fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("{b}"),
        Value::Datetime(_) => "a date".into(),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

impl<'a> Reader<'a> {
    /// This table as a [`SettingsReader`] recording its problems in `errs`.
    pub(crate) fn settings<'r>(&'r mut self, errs: &'r mut Vec<String>) -> Fields<'r, 'a> {
        Fields { reader: self, errs }
    }
    pub(crate) fn new(table: &'a toml::Table, path: &str) -> Self {
        Reader { table, path: path.to_string(), used: Vec::new() }
    }
    pub(crate) fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.table.get(key)
    }
    pub(crate) fn bad(&self, errs: &mut Vec<String>, key: &str, expected: &str, v: &Value) {
        errs.push(format!("{}: expected {expected}, found {}", self.at(key), type_name(v)));
    }
    pub(crate) fn string(&mut self, errs: &mut Vec<String>, key: &'static str) -> Option<String> {
        match self.raw(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.bad(errs, key, "a string", v);
                None
            }
        }
    }
    pub(crate) fn number(&mut self, errs: &mut Vec<String>, key: &'static str, default: f64) -> f64 {
        match self.raw(key) {
            None => default,
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(i)) => *i as f64,
            Some(v) => {
                self.bad(errs, key, "a number", v);
                default
            }
        }
    }
    /// A value that may change over the stage's steps: a number, `{ from = A, to = B }` (linear from
    /// the first step to the last) or `{ steps = [[STEP, VALUE], ...] }` (piecewise constant, the
    /// first at step 0, steps increasing); every value must satisfy `ok` (`expected` says how).
    pub(crate) fn schedule(
        &mut self,
        errs: &mut Vec<String>,
        key: &'static str,
        default: f64,
        expected: &str,
        ok: impl Fn(f64) -> bool,
    ) -> ValueSchedule {
        let at = self.at(key);
        let form = "a number, { from = A, to = B } or { steps = [[STEP, VALUE], ...] }";
        let number = |v: &Value| match v {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        };
        let schedule = match self.raw(key) {
            None => return ValueSchedule::Constant(default),
            Some(v @ (Value::Float(_) | Value::Integer(_))) => ValueSchedule::Constant(number(v).expect("a number")),
            Some(Value::Table(t)) => {
                let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
                keys.sort_unstable();
                match keys.as_slice() {
                    ["from", "to"] => match (number(&t["from"]), number(&t["to"])) {
                        (Some(from), Some(to)) => ValueSchedule::Linear { from, to },
                        _ => {
                            errs.push(format!("{at}: from and to must be numbers"));
                            return ValueSchedule::Constant(default);
                        }
                    },
                    ["steps"] => {
                        let points: Option<Vec<(usize, f64)>> = t["steps"].as_array().and_then(|a| {
                            a.iter()
                                .map(|p| match p.as_array().map(Vec::as_slice) {
                                    Some([Value::Integer(s), v]) if *s >= 0 => Some((*s as usize, number(v)?)),
                                    _ => None,
                                })
                                .collect()
                        });
                        match points {
                            Some(p) if p.first().is_some_and(|f| f.0 == 0) && p.windows(2).all(|w| w[0].0 < w[1].0) => {
                                ValueSchedule::Steps { steps: p }
                            }
                            _ => {
                                errs.push(format!(
                                    "{at}.steps: expected [[STEP, VALUE], ...] with the first step 0 and steps increasing"
                                ));
                                return ValueSchedule::Constant(default);
                            }
                        }
                    }
                    _ => {
                        errs.push(format!("{at}: expected {form}, found a table with keys {}", keys.join(", ")));
                        return ValueSchedule::Constant(default);
                    }
                }
            }
            Some(v) => {
                errs.push(format!("{at}: expected {form}, found {}", type_name(v)));
                return ValueSchedule::Constant(default);
            }
        };
        if let Some(bad) = schedule.values().into_iter().find(|v| !ok(*v)) {
            errs.push(format!("{at}: expected {expected}, found {bad}"));
        }
        schedule
    }
    /// A number that must satisfy `ok`; `expected` describes the accepted range in the error.
    pub(crate) fn number_where(
        &mut self,
        errs: &mut Vec<String>,
        key: &'static str,
        default: f64,
        expected: &str,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        self.settings(errs).number_where(key, default, expected, &ok)
    }
    /// A positive integer of at most `max`.
    pub(crate) fn count_max(
        &mut self,
        errs: &mut Vec<String>,
        key: &'static str,
        default: Option<usize>,
        max: usize,
    ) -> usize {
        self.settings(errs).count_max(key, default, max)
    }
    pub(crate) fn count(&mut self, errs: &mut Vec<String>, key: &'static str, default: Option<usize>) -> usize {
        match self.raw(key) {
            None => {
                if default.is_none() {
                    errs.push(format!("{}: missing (expected a positive integer)", self.at(key)));
                }
                default.unwrap_or(1)
            }
            Some(Value::Integer(i)) if *i > 0 => *i as usize,
            Some(v) => {
                self.bad(errs, key, "a positive integer", v);
                default.unwrap_or(1)
            }
        }
    }
    pub(crate) fn seed(&mut self, errs: &mut Vec<String>, key: &'static str, default: u64) -> u64 {
        match self.raw(key) {
            None => default,
            Some(Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(v) => {
                self.bad(errs, key, "a non-negative integer", v);
                default
            }
        }
    }
    pub(crate) fn boolean(&mut self, errs: &mut Vec<String>, key: &'static str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(v) => {
                self.bad(errs, key, "true or false", v);
                default
            }
        }
    }
    pub(crate) fn table(&mut self, errs: &mut Vec<String>, key: &'static str) -> Option<&'a toml::Table> {
        match self.raw(key) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(v) => {
                self.bad(errs, key, "a table", v);
                None
            }
        }
    }
    /// Reports keys that were never read.
    pub(crate) fn finish(self, errs: &mut Vec<String>) {
        for k in self.table.keys() {
            if !self.used.contains(&k.as_str()) {
                let mut known = self.used.clone();
                known.sort();
                known.dedup();
                errs.push(format!("{}: unknown key (known keys here: {})", self.at(k), known.join(", ")));
            }
        }
    }
}

/// A [`Reader`] and the problem list it records into: how stage settings read an experiment table.
pub(crate) struct Fields<'r, 'a> {
    reader: &'r mut Reader<'a>,
    errs: &'r mut Vec<String>,
}

impl SettingsReader for Fields<'_, '_> {
    fn at(&self, key: &str) -> String {
        self.reader.at(key)
    }
    fn path(&self) -> &str {
        &self.reader.path
    }
    fn problem(&mut self, message: String) {
        self.errs.push(message);
    }
    fn has(&self, key: &str) -> bool {
        self.reader.table.contains_key(key)
    }
    fn string(&mut self, key: &'static str) -> Option<String> {
        self.reader.string(self.errs, key)
    }
    fn number(&mut self, key: &'static str, default: f64) -> f64 {
        self.reader.number(self.errs, key, default)
    }
    fn count(&mut self, key: &'static str, default: Option<usize>) -> usize {
        self.reader.count(self.errs, key, default)
    }
    fn boolean(&mut self, key: &'static str, default: bool) -> bool {
        self.reader.boolean(self.errs, key, default)
    }
    fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        let v = self.reader.raw(key)?;
        let list =
            v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>());
        if list.is_none() {
            self.reader.bad(self.errs, key, "a list of strings", v);
        }
        list
    }
}
