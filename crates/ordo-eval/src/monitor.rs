//! Pluggable CoT and action monitors: what every monitor offers, and the world's rule-based
//! monitors (keyword, regex, arithmetic checker, consistency, action-only) behind it.

use ordo_world::monitors::Monitor;
use ordo_world::response::Format;
use ordo_world::task::Prompt;

/// Why a monitor could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor `{monitor}`: {message}")]
    Failed { monitor: String, message: String },
}

/// A monitor of transcripts: flags completions it judges to be hacks.
pub trait TranscriptMonitor {
    /// Short name used in metric names (`keyword`, `learned`, `judge`).
    fn name(&self) -> String;
    /// Whether it reads the think block (CoT monitor) or only the output after it (action monitor).
    fn sees_cot(&self) -> bool;
    /// Verdicts for (prompt, completion) pairs, in order. A monitor that does not see the CoT is
    /// given the whole completion too and must only use the output.
    fn flag_all(&self, items: &[(&Prompt, &str)]) -> Result<Vec<bool>, MonitorError>;
}

/// A rule-based monitor of the world reading completions in the world's response format.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMonitor {
    pub monitor: Monitor,
    pub format: Format,
}

impl TranscriptMonitor for RuleMonitor {
    fn name(&self) -> String {
        match &self.monitor {
            Monitor::Union { monitors } if *monitors == strong_members() => "strong".into(),
            m => Monitor::name(m),
        }
    }
    fn sees_cot(&self) -> bool {
        self.monitor.sees_cot()
    }
    fn flag_all(&self, items: &[(&Prompt, &str)]) -> Result<Vec<bool>, MonitorError> {
        Ok(items.iter().map(|(p, c)| self.monitor.flags(p, c, self.format)).collect())
    }
}

fn strong_members() -> Vec<Monitor> {
    match Monitor::strong() {
        Monitor::Union { monitors } => monitors,
        _ => unreachable!("the strong monitor is a union"),
    }
}

/// The output a non-CoT monitor may see: the text after the think block's close.
pub fn output_part(completion: &str) -> &str {
    completion.split_once('}').map_or("", |(_, o)| o)
}
