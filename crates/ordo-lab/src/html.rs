//! `report.html`: the report with plots (inline SVG), one self-contained file readable offline.
//! Plots are drawn as SVG by hand so the browser lays out their text (no font files needed).

use crate::markdown::markdown;
use crate::summary::{fmt_estimate, ArmSummary, Summary};
use ordo_eval::catalogue::ProbeRate;
use ordo_eval::stats::Estimate;
use ordo_worlds::World;
use std::fmt::Write as _;

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const W: f64 = 420.0;
const H: f64 = 260.0;
const L: f64 = 58.0;
const R: f64 = 12.0;
const T: f64 = 28.0;
const B: f64 = 56.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One line with its interval band: (x, mean, lo, hi) for each measured point.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64, f64, f64)>,
}

fn point(x: f64, e: &Estimate) -> Option<(f64, f64, f64, f64)> {
    let m = e.mean?;
    Some((x, m, e.lo.unwrap_or(m), e.hi.unwrap_or(m)))
}

/// The y range of a plot: [0, 1] for rates, else the data's range padded.
fn y_range(series: &[Series], unit: bool) -> (f64, f64) {
    if unit {
        return (0.0, 1.0);
    }
    let vals: Vec<f64> = series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.2, p.3])).collect();
    let (lo, hi) = vals.iter().fold((0.0f64, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    }
}

fn axes(o: &mut String, title: &str, (y0, y1): (f64, f64), x_ticks: &[(f64, String)], x_range: (f64, f64)) {
    let _ = write!(o, "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" class=\"title\">{}</text>", W / 2.0, esc(title));
    let _ = write!(o, "<line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>", H - B, W - R, H - B);
    let _ = write!(o, "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" class=\"axis\"/>", H - B);
    let step = nice_step((y1 - y0) / 4.0);
    let mut v = (y0 / step).ceil() * step;
    while v <= y1 + step * 1e-9 {
        let y = sy(v, (y0, y1));
        let _ = write!(o, "<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>", W - R, L - 4.0, y + 4.0, tick(v, step));
        v += step;
    }
    // Many category labels (bar charts) are slanted so that long arm names do not overlap.
    let slant = x_ticks.len() > 3 && x_ticks.iter().any(|(_, l)| l.len() > 4);
    for (x, label) in x_ticks {
        let (px, py) = (sx(*x, x_range), H - B + 14.0);
        let anchor = if slant { format!("end\" transform=\"rotate(-25 {px:.1} {py:.1})") } else { "middle".into() };
        let _ = write!(
            o,
            "<text x=\"{px:.1}\" y=\"{py:.1}\" text-anchor=\"{anchor}\" class=\"tick\">{}</text>",
            esc(label)
        );
    }
}

/// A round step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// A tick label with as many decimals as the tick step needs.
fn tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        "0".into()
    } else {
        s
    }
}

fn sx(x: f64, (x0, x1): (f64, f64)) -> f64 {
    let span = if x1 > x0 { x1 - x0 } else { 1.0 };
    L + (x - x0) / span * (W - L - R)
}

fn sy(y: f64, (y0, y1): (f64, f64)) -> f64 {
    H - B - (y - y0) / (y1 - y0) * (H - T - B)
}

/// A line plot with interval bands and a legend.
fn line_plot(title: &str, series: &[Series], x_ticks: &[(f64, String)], x_range: (f64, f64), unit: bool) -> String {
    let n: usize = series.iter().map(|s| s.points.len()).sum();
    if n == 0 {
        return empty_plot(title);
    }
    let yr = y_range(series, unit);
    let mut o = format!(
        "<svg class=\"plot\" data-points=\"{n}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">"
    );
    axes(&mut o, title, yr, x_ticks, x_range);
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let up: Vec<String> = s.points.iter().map(|p| format!("{:.1},{:.1}", sx(p.0, x_range), sy(p.3, yr))).collect();
        let down: Vec<String> =
            s.points.iter().rev().map(|p| format!("{:.1},{:.1}", sx(p.0, x_range), sy(p.2, yr))).collect();
        let _ =
            write!(o, "<polygon class=\"band\" fill=\"{}\" points=\"{} {}\"/>", s.color, up.join(" "), down.join(" "));
        let line: Vec<String> =
            s.points.iter().map(|p| format!("{:.1},{:.1}", sx(p.0, x_range), sy(p.1, yr))).collect();
        let _ = write!(
            o,
            "<polyline class=\"series\" data-n=\"{}\" stroke=\"{}\" points=\"{}\"><title>{}</title></polyline>",
            s.points.len(),
            s.color,
            line.join(" "),
            esc(s.name)
        );
        for p in &s.points {
            let _ = write!(o, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{}: {:.3} [{:.3}, {:.3}]</title></circle>", sx(p.0, x_range), sy(p.1, yr), s.color, esc(s.name), p.1, p.2, p.3);
        }
    }
    o.push_str("</svg>");
    o
}

/// A bar chart of final means with interval whiskers, one bar per arm.
fn bar_plot(title: &str, arms: &[&ArmSummary], metric: &str, unit: bool) -> String {
    let pts: Vec<(usize, (f64, f64, f64, f64))> = arms
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.final_estimate(metric).and_then(|e| point(i as f64, e)).map(|p| (i, p)))
        .collect();
    if pts.is_empty() {
        return empty_plot(title);
    }
    let series = [Series { name: metric, color: COLORS[0], points: pts.iter().map(|p| p.1).collect() }];
    let yr = y_range(&series, unit);
    let yr = (yr.0.min(0.0), yr.1);
    let xr = (-0.5, arms.len() as f64 - 0.5);
    let ticks: Vec<(f64, String)> = arms.iter().enumerate().map(|(i, a)| (i as f64, a.arm.clone())).collect();
    let mut o = format!(
        "<svg class=\"plot\" data-points=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">",
        pts.len()
    );
    axes(&mut o, title, yr, &ticks, xr);
    let bw = (W - L - R) / arms.len().max(1) as f64 * 0.6;
    for (i, (x, m, lo, hi)) in &pts {
        let (px, y0, ym) = (sx(*x, xr), sy(0.0f64.max(yr.0), yr), sy(*m, yr));
        let _ = write!(o, "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {m:.3} [{lo:.3}, {hi:.3}]</title></rect>", px - bw / 2.0, ym.min(y0), (y0 - ym).abs(), COLORS[i % COLORS.len()], esc(&arms[*i].arm));
        let _ = write!(
            o,
            "<line class=\"whisker\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
            sy(*lo, yr),
            sy(*hi, yr)
        );
    }
    o.push_str("</svg>");
    o
}

/// One hypothesis: each side's seed values as dots over a bar at the side's mean.
fn hypothesis_plot(r: &crate::answer::HypothesisResult, unit: bool) -> String {
    let h = &r.hypothesis;
    let diff = match (r.test.difference, r.test.lo, r.test.hi) {
        (Some(d), Some(lo), Some(hi)) => format!("a − b {d:+.3} [{lo:+.3}, {hi:+.3}]"),
        (Some(d), _, _) => format!("a − b {d:+.3}"),
        _ => "a − b n/m".into(),
    };
    if !r.by_dose.is_empty() {
        // A trend: the figure's mean over seeds at each dose, with its interval as a band.
        let slope = r.test.difference.map_or("n/m".into(), |d| format!("{d:+.2e}"));
        let title = format!("{} {} by dose: slope {slope}, {}", h.id, h.metric, r.decision.verdict.word());
        let points: Vec<_> = r.by_dose.iter().filter_map(|(d, e)| point(*d, e)).collect();
        let (x0, x1) = r.by_dose.iter().fold((f64::MAX, f64::MIN), |(a, b), (d, _)| (a.min(*d), b.max(*d)));
        let ticks: Vec<(f64, String)> = r.by_dose.iter().map(|(d, _)| (*d, format!("{d}"))).collect();
        let pad = 0.05 * (x1 - x0).max(1.0);
        return line_plot(
            &title,
            &[Series { name: &h.metric, color: COLORS[0], points }],
            &ticks,
            (x0 - pad, x1 + pad),
            unit,
        );
    }
    let title = format!("{} {}: {diff}, {}", h.id, h.metric, r.decision.verdict.word());
    if r.values_a.is_empty() && r.values_b.is_empty() {
        return empty_plot(&title);
    }
    let sides = [(crate::answer::side_label(&h.a), &r.values_a), (crate::answer::side_label(&h.b), &r.values_b)];
    let series: Vec<Series> = sides
        .iter()
        .enumerate()
        .map(|(i, (name, v))| Series {
            name,
            color: COLORS[i],
            points: v.iter().map(|&x| (i as f64, x, x, x)).collect(),
        })
        .collect();
    let yr = y_range(&series, unit);
    let yr = (yr.0.min(0.0), yr.1);
    let xr = (-0.5, 1.5);
    let ticks: Vec<(f64, String)> =
        sides.iter().enumerate().map(|(i, (n, _))| (i as f64, format!("{} {n}", ["a", "b"][i]))).collect();
    let points = r.values_a.len() + r.values_b.len();
    let mut o = format!("<svg class=\"plot\" data-points=\"{points}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">");
    axes(&mut o, &title, yr, &ticks, xr);
    let bw = (W - L - R) / 2.0 * 0.5;
    for (i, (name, v)) in sides.iter().enumerate() {
        let px = sx(i as f64, xr);
        if let Some(m) = ordo_eval::stats::mean(v) {
            let (y0, ym) = (sy(0.0f64.max(yr.0), yr), sy(m, yr));
            let _ = write!(o, "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.35\"><title>{}: mean {m:.3}</title></rect>", px - bw / 2.0, ym.min(y0), (y0 - ym).abs(), COLORS[i], esc(name));
        }
        for (j, x) in v.iter().enumerate() {
            // Seeds spread across the bar so that equal values stay visible.
            let dx = (j as f64 + 0.5) / v.len() as f64 * bw * 0.8 - bw * 0.4;
            let _ = write!(
                o,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}: {x:.3}</title></circle>",
                px + dx,
                sy(*x, yr),
                COLORS[i],
                esc(name)
            );
        }
    }
    o.push_str("</svg>");
    o
}

/// In place of a plot whose figure no arm and seed could measure.
fn empty_plot(title: &str) -> String {
    format!(
        "<svg class=\"plot-empty\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\"><text x=\"{}\" y=\"16\" text-anchor=\"middle\" class=\"title\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">not measurable on any arm and seed (see the report's list)</text></svg>",
        W / 2.0,
        esc(title),
        W / 2.0,
        H / 2.0
    )
}

/// One series per arm, in the arms' colours.
fn arm_series<'a>(s: &'a Summary, points: impl Fn(&ArmSummary) -> Vec<(f64, f64, f64, f64)>) -> Vec<Series<'a>> {
    s.arms
        .iter()
        .enumerate()
        .map(|(i, a)| Series { name: &a.arm, color: COLORS[i % COLORS.len()], points: points(a) })
        .collect()
}

/// Which plot shows which probe rate: "Hack rate (left) and B:test rate (right)"; one plot per rate.
fn probe_caption(rates: &[ProbeRate]) -> String {
    let mut names: Vec<String> = rates.iter().map(|r| r.label.to_string()).collect();
    if let Some(first) = names.first_mut() {
        let mut c = first.chars();
        *first = c.next().map_or(String::new(), |h| h.to_uppercase().chain(c).collect());
    }
    match names.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} (left) and {b} (right)"),
        many => format!("{} (left to right)", many.join(", ")),
    }
}

/// The HTML report, in the run's world.
pub fn html(s: &Summary, world: &dyn World) -> String {
    let mut o = String::new();
    let cat = world.catalogue(&s.run.monitors);
    let shown = |m: &&&str| cat.get(m).is_some();
    let _ = write!(o, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ordo report: {}</title><style>{}</style></head><body>", esc(&s.run.experiment), CSS);
    let legend: String = s
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "<span class=\"key\"><i style=\"background:{}\"></i>{}</span>",
                COLORS[i % COLORS.len()],
                esc(&a.arm)
            )
        })
        .collect();

    let _ = write!(o, "<h1>ordo report: {}</h1>", esc(&s.run.experiment));
    if !s.hypotheses.is_empty() {
        let _ = write!(
            o,
            "<h2>The answer</h2><p>{}</p><p>Each plot: every seed's value of each side (dots) and the side's mean (bar); the title gives a − b with its 95% interval and the verdict. The table with p-values and how they were computed is in the full report below.</p><div class=\"plots\">",
            esc(&crate::answer::plain_summary(&s.hypotheses, s.run.seeds.len()))
        );
        for r in &s.hypotheses {
            o.push_str(&hypothesis_plot(r, cat.is_rate(&r.hypothesis.metric)));
        }
        o.push_str("</div>");
    }
    let _ = write!(o, "<h2>Trajectories across stage boundaries</h2><p>Mean over seeds after each stage of each arm, with the 95% seed-level interval as a band. x: number of stages done.</p><div class=\"legend\">{legend}</div><div class=\"plots\">");
    let depth = s.arms.iter().map(|a| a.stages.len()).max().unwrap_or(1);
    let ticks: Vec<(f64, String)> = (1..=depth).map(|i| (i as f64, i.to_string())).collect();
    for metric in cat.trajectories.iter().filter(shown) {
        let series = arm_series(s, |a| {
            a.boundaries
                .iter()
                .enumerate()
                .filter_map(|(j, b)| b.get(*metric).and_then(|e| point(j as f64 + 1.0, e)))
                .collect()
        });
        o.push_str(&line_plot(metric, &series, &ticks, (1.0 - 0.2, depth as f64 + 0.2), true));
    }
    o.push_str("</div>");

    let _ = write!(o, "<h2>Final figures per arm</h2><p>Mean over seeds at the end of each arm (uptake: along the probe), whiskers: 95% seed-level interval.</p><div class=\"plots\">");
    let arms: Vec<&ArmSummary> = s.arms.iter().collect();
    for metric in cat.headline.iter().filter(shown) {
        o.push_str(&bar_plot(metric, &arms, metric, cat.is_rate(metric)));
    }
    o.push_str("</div>");

    let intro = "along the fixed probe stage applied to each arm's final model";
    probe_section(
        &mut o,
        s,
        &cat,
        &legend,
        ("Alignment uptake", intro, "along the probe"),
        crate::summary::UPTAKE_PROBE,
    );
    let intro = "in the RLVF context along the transfer probe (the same values taught in the second context), \
                 applied to each arm's final model";
    probe_section(
        &mut o,
        s,
        &cat,
        &legend,
        ("Alignment transfer", intro, "along the transfer probe"),
        crate::summary::TRANSFER_PROBE,
    );

    let _ = write!(o, "<h2>Results table</h2><table><tr><th>metric</th>");
    for a in &s.arms {
        let _ = write!(o, "<th>{}</th>", esc(&a.arm));
    }
    o.push_str("</tr>");
    for m in s.reported(&cat) {
        let _ = write!(o, "<tr><td title=\"{}\">{}</td>", esc(&m.definition), esc(&m.name));
        for a in &s.arms {
            let e = a.final_estimate(&m.name);
            let _ = write!(o, "<td>{} <small>n={}</small></td>", fmt_estimate(e), e.map_or(0, |e| e.n));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    // The full text of the Markdown report (method, trajectories, comparisons, what was not measurable).
    let _ = write!(o, "<h2>Full report (as report.md)</h2><pre class=\"md\">{}</pre>", esc(&markdown(s, world)));
    // A self-check a headless browser can read back (`scripts/check-report-html.sh`): how many plots
    // have marks with a rendered, non-empty extent.
    o.push_str(CHECK_SCRIPT);
    o.push_str("</body></html>");
    o
}

const CHECK_SCRIPT: &str = "<script>(function(){var p=document.querySelectorAll('svg.plot'),ok=0;\
p.forEach(function(s){var m=s.querySelectorAll('circle,rect.bar'),d=false;\
m.forEach(function(e){var b=e.getBBox();if(b.width>0||b.height>0)d=true;});if(d)ok++;});\
document.body.setAttribute('data-check','plots='+p.length+' with-data='+ok);})();</script>";

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}\
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #ddd;background:#fff}\
.title{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#555}.axis{stroke:#333}.grid{stroke:#eee}\
.series{fill:none;stroke-width:2}.band{opacity:.15}.whisker{stroke:#000;stroke-width:1.5}\
.legend{margin:.5em 0}.key{margin-right:1em;font-size:13px}.key i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}\
pre.md{white-space:pre-wrap;font-size:12px;background:#f8f8f8;padding:1em}";

/// A probe's plots, one per rate its run recorded: (heading, caption after the rates, plot-title suffix).
fn probe_section(
    o: &mut String,
    s: &Summary,
    cat: &ordo_eval::catalogue::Catalogue,
    legend: &str,
    (heading, intro, along): (&str, &str, &str),
    (steps_of, curve_of): crate::summary::ProbeView,
) {
    let recorded: Vec<ProbeRate> =
        cat.probe.rates.iter().filter(|r| s.arms.iter().any(|a| !curve_of(a, r.metric).is_empty())).cloned().collect();
    if s.arms.iter().all(|a| steps_of(a).is_empty()) || recorded.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<h2>{heading}</h2><p>{} {intro}.</p><div class=\"legend\">{legend}</div><div class=\"plots\">",
        probe_caption(&recorded)
    );
    let max_step = s.arms.iter().flat_map(|a| steps_of(a).iter().copied()).max().unwrap_or(1) as f64;
    let ticks: Vec<(f64, String)> = s
        .arms
        .iter()
        .find(|a| !steps_of(a).is_empty())
        .map(|a| steps_of(a).iter().map(|x| (*x as f64, x.to_string())).collect())
        .unwrap_or_default();
    for rate in &recorded {
        let series = arm_series(s, |a| {
            steps_of(a).iter().zip(curve_of(a, rate.metric)).filter_map(|(st, e)| point(*st as f64, e)).collect()
        });
        let title = format!("{} {along}", rate.label);
        o.push_str(&line_plot(&title, &series, &ticks, (0.0, max_step), true));
    }
    o.push_str("</div>");
}
