//! The experiment's declared hypotheses (`[[hypotheses]]`): each compares one metric between two arms
//! or arm groups, each read at a stage boundary, in a claimed direction, or follows it across arms
//! given as doses; `answer.rs` tests them.

use ordo_eval::catalogue::{Catalogue, TRANSFER_PREFIX};
use ordo_eval::inference::Expect;
use serde::{Deserialize, Serialize};
use toml::Value;

/// One arm read at one boundary: `arm` (its final model) or `arm@stage` (after that stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideRef {
    pub arm: String,
    /// The boundary's index in the arm's stages (None: the final model, or the probe's figures).
    pub boundary: Option<usize>,
    /// As the file wrote it.
    pub label: String,
}

/// A declared hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub id: String,
    /// The claim in words.
    pub claim: String,
    pub metric: String,
    /// The two sides; a side of several arms is their per-seed mean (empty for a trend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub a: Vec<SideRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub b: Vec<SideRef>,
    /// A trend's arms with their doses (empty for a comparison of two sides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trend: Vec<(SideRef, f64)>,
    pub expect: Expect,
}

/// Reads `[[hypotheses]]`; arms and stages are checked here, metrics against the world's catalogue by
/// [`check_metrics`] (it depends on the evaluation's monitors).
pub fn parse_table(root: &toml::Table, arms: &[(String, Vec<String>)], errs: &mut Vec<String>) -> Vec<Hypothesis> {
    let list = match root.get("hypotheses") {
        None => return Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            errs.push("hypotheses: expected [[hypotheses]] entries (an array of tables)".into());
            return Vec::new();
        }
    };
    let mut out: Vec<Hypothesis> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("hypotheses[{i}]");
        let Value::Table(t) = v else {
            errs.push(format!("{path}: expected a table"));
            continue;
        };
        let mut r = crate::spec_reader::Reader::new(t, &path);
        let need = |r: &mut crate::spec_reader::Reader, key: &'static str, errs: &mut Vec<String>| {
            r.string(errs, key).unwrap_or_else(|| {
                errs.push(format!("{path}.{key}: missing (expected a string)"));
                String::new()
            })
        };
        let id = need(&mut r, "id", errs);
        let claim = need(&mut r, "claim", errs);
        let metric = need(&mut r, "metric", errs);
        let expect_text = need(&mut r, "expect", errs);
        let margin = r.raw("margin").map(|m| m.as_float().or(m.as_integer().map(|x| x as f64)));
        let trend = match r.raw("trend") {
            None => Vec::new(),
            Some(Value::Table(doses)) if !doses.is_empty() => doses
                .iter()
                .filter_map(|(label, d)| {
                    let at = format!("{path}.trend.{label}");
                    let dose = match d {
                        Value::Float(x) if x.is_finite() => *x,
                        Value::Integer(x) => *x as f64,
                        _ => {
                            errs.push(format!("{at}: expected the arm's dose (a number)"));
                            return None;
                        }
                    };
                    side_ref(&at, label, arms).map_err(|e| errs.push(e)).ok().map(|s| (s, dose))
                })
                .collect(),
            Some(_) => {
                errs.push(format!("{path}.trend: expected a table of arm = dose (at least two arms)"));
                Vec::new()
            }
        };
        let is_trend = r.table.contains_key("trend");
        let expect = match (expect_text.replace(' ', "").as_str(), margin, is_trend) {
            ("increasing", None, true) => Some(Expect::Increasing),
            ("decreasing", None, true) => Some(Expect::Decreasing),
            ("a>b", None, false) => Some(Expect::Greater),
            ("a<b", None, false) => Some(Expect::Less),
            ("a=b", Some(Some(m)), false) if m > 0.0 && m.is_finite() => Some(Expect::Equal { margin: m }),
            ("a=b", _, false) => {
                errs.push(format!("{path}.margin: \"a = b\" needs a positive number: |a - b| below it is equal"));
                None
            }
            (_, Some(_), _) if expect_text.replace(' ', "") != "a=b" => {
                errs.push(format!("{path}.margin: only \"a = b\" takes a margin"));
                None
            }
            ("", _, _) => None,
            (_, _, true) => {
                errs.push(format!(
                    "{path}.expect: a trend expects \"increasing\" or \"decreasing\", found {expect_text:?}"
                ));
                None
            }
            (_, _, false) => {
                errs.push(format!("{path}.expect: expected \"a > b\", \"a < b\" or \"a = b\", found {expect_text:?}"));
                None
            }
        };
        let (a, b) = if is_trend {
            for key in ["a", "b"] {
                if r.table.contains_key(key) {
                    errs.push(format!("{path}.{key}: a trend hypothesis compares the arms of `trend`, not two sides"));
                    r.used.push(if key == "a" { "a" } else { "b" });
                }
            }
            let mut doses: Vec<f64> = trend.iter().map(|(_, d)| *d).collect();
            doses.sort_by(f64::total_cmp);
            doses.dedup();
            if trend.len() == 1 {
                errs.push(format!("{path}.trend: a trend needs at least two arms"));
            } else if trend.len() > 1 && doses.len() < 2 {
                errs.push(format!("{path}.trend: every arm has the same dose; a trend needs two different doses"));
            }
            (Vec::new(), Vec::new())
        } else {
            (sides(&mut r, "a", &path, arms, errs), sides(&mut r, "b", &path, arms, errs))
        };
        r.finish(errs);
        if !id.is_empty() && out.iter().any(|h| h.id == id) {
            errs.push(format!("{path}.id: {id:?} is the id of an earlier hypothesis"));
        }
        if let Some(expect) = expect {
            out.push(Hypothesis { id, claim, metric, a, b, trend, expect });
        }
    }
    out
}

/// One side: an arm reference or a list of them.
fn sides(
    r: &mut crate::spec_reader::Reader,
    key: &'static str,
    path: &str,
    arms: &[(String, Vec<String>)],
    errs: &mut Vec<String>,
) -> Vec<SideRef> {
    let items: Vec<(String, String)> = match r.raw(key) {
        None => {
            errs.push(format!("{path}.{key}: missing (expected an arm, \"arm@stage\", or a list of them)"));
            return Vec::new();
        }
        Some(Value::String(s)) => vec![(format!("{path}.{key}"), s.clone())],
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .filter_map(|(j, v)| match v {
                Value::String(s) => Some((format!("{path}.{key}[{j}]"), s.clone())),
                _ => {
                    errs.push(format!("{path}.{key}[{j}]: expected an arm name or \"arm@stage\""));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errs.push(format!("{path}.{key}: expected an arm, \"arm@stage\", or a non-empty list of them"));
            return Vec::new();
        }
    };
    items.into_iter().filter_map(|(at, label)| side_ref(&at, &label, arms).map_err(|e| errs.push(e)).ok()).collect()
}

/// Resolves `arm`, `arm@stage` or `arm@N` (after the N-th stage, from 1).
fn side_ref(at: &str, label: &str, arms: &[(String, Vec<String>)]) -> Result<SideRef, String> {
    let (arm, stage) = match label.split_once('@') {
        Some((a, s)) => (a, Some(s)),
        None => (label, None),
    };
    let Some((_, stages)) = arms.iter().find(|(a, _)| a == arm) else {
        let names: Vec<&str> = arms.iter().map(|(a, _)| a.as_str()).collect();
        return Err(format!("{at}: unknown arm {arm:?} (arms: {})", names.join(", ")));
    };
    let boundary = match stage {
        None => None,
        Some(s) => {
            if let Ok(n) = s.parse::<usize>() {
                if n == 0 || n > stages.len() {
                    return Err(format!("{at}: arm {arm} has stages 1 to {}, not {n}", stages.len()));
                }
                Some(n - 1)
            } else {
                let hits: Vec<usize> = (0..stages.len()).filter(|&i| stages[i] == s).collect();
                match hits.as_slice() {
                    [i] => Some(*i),
                    [] => {
                        return Err(format!("{at}: arm {arm} has no stage {s:?} (its stages: {})", stages.join(", ")))
                    }
                    many => {
                        let pos: Vec<String> = many.iter().map(|i| format!("{arm}@{}", i + 1)).collect();
                        return Err(format!(
                            "{at}: stage {s:?} appears {} times in arm {arm}; name the boundary by position: {}",
                            many.len(),
                            pos.join(" or ")
                        ));
                    }
                }
            }
        }
    };
    // The last boundary is the final model.
    let boundary = boundary.filter(|&i| i + 1 < stages.len());
    Ok(SideRef { arm: arm.to_string(), boundary, label: label.to_string() })
}

/// The probe figure `metric` is, if it is one (read from the final model's probe only).
pub(crate) fn probe_figure<'c>(catalogue: &'c Catalogue, metric: &str) -> Option<&'c ordo_eval::catalogue::UptakeDef> {
    let plain = metric.strip_prefix(TRANSFER_PREFIX).unwrap_or(metric);
    catalogue.probe.uptake.iter().find(|d| d.name == plain)
}

/// Checks each hypothesis's metric against the world's catalogue: known, and a probe figure only
/// where a side is read at its final model.
pub fn check_metrics(hypotheses: &[Hypothesis], catalogue: &Catalogue) -> Vec<String> {
    let mut errs = Vec::new();
    for (i, h) in hypotheses.iter().enumerate() {
        if !catalogue.metrics.iter().any(|m| m.name == h.metric) {
            let mut names: Vec<&str> = catalogue.metrics.iter().map(|m| m.name.as_str()).collect();
            names.sort();
            errs.push(format!(
                "hypotheses[{i}].metric: unknown metric {:?} (the world's: {})",
                h.metric,
                names.join(", ")
            ));
        } else if probe_figure(catalogue, &h.metric).is_some() {
            for s in h.a.iter().chain(&h.b).chain(h.trend.iter().map(|(s, _)| s)).filter(|s| s.boundary.is_some()) {
                errs.push(format!(
                    "hypotheses[{i}]: {} is a figure of the probe, which runs on each arm's final model; {:?} reads an \
                     earlier boundary",
                    h.metric, s.label
                ));
            }
        }
    }
    errs
}
