//! The performance report of `cargo xtask bench`: criterion's results and the
//! benchmarks' targets and sizes, as markdown with SVG plots.
//!
//! Every input may be missing (a filtered run reports what it measured):
//! - `target/criterion/**/new/{benchmark,estimates}.json`, criterion's own output,
//!   keyed by the ids inside, not by directory names (criterion sanitises those);
//! - `target/capsule-bench/targets.json`: comparisons between flavors and their targets;
//! - `target/capsule-bench/sizes.json`: encoded sizes against their baselines.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use xshell::{Shell, cmd};

/// Criterion's output, relative to the project root.
pub(crate) const CRITERION_DIR: &str = "target/criterion";
/// Where the benchmarks write `targets.json` and `sizes.json`.
pub(crate) const BENCH_DIR: &str = "target/capsule-bench";

/// Where a run's report goes, relative to the project root: a quick run is a
/// smoke test whose numbers must never replace the published ones in `docs/`.
pub(crate) fn out_dir(quick: bool) -> &'static str {
    if quick { "target/capsule-bench/report" } else { "docs" }
}

/// Criterion's `benchmark.json`: the id the result is keyed by.
#[derive(Debug, Deserialize)]
struct BenchmarkId {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
}

/// Criterion's `estimates.json` (nanoseconds); only the mean is reported.
#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
}

/// One statistic with its confidence interval.
#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

/// The 95% confidence interval.
#[derive(Debug, Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

/// Every result by (group, flavor, parameter); an absent flavor or parameter is "".
type Results = BTreeMap<(String, String, String), Estimate>;

fn estimate<'r>(results: &'r Results, group: &str, flavor: &str, param: &str) -> Option<&'r Estimate> {
    results.get(&(group.to_owned(), flavor.to_owned(), param.to_owned()))
}

fn mean(results: &Results, group: &str, flavor: &str, param: &str) -> Option<f64> {
    estimate(results, group, flavor, param).map(|e| e.point_estimate)
}

/// One entry of `targets.json`.
#[derive(Debug, Deserialize)]
struct Comparison {
    group: String,
    title: String,
    subject: String,
    baseline: Option<String>,
    target: Option<Target>,
    x_label: String,
    note: Option<String>,
}

impl Comparison {
    /// (parameter, subject mean, baseline mean) for every parameter measured for
    /// the subject and for the baseline, if there is one.
    fn measured<'r>(&self, results: &'r Results) -> Vec<(&'r str, f64, Option<f64>)> {
        params(results, &self.group)
            .into_iter()
            .filter_map(|param| {
                let subject = mean(results, &self.group, &self.subject, param)?;
                let baseline = match &self.baseline {
                    Some(b) => Some(mean(results, &self.group, b, param)?),
                    None => None,
                };
                Some((param, subject, baseline))
            })
            .collect()
    }

    fn label(&self) -> String {
        match &self.baseline {
            Some(baseline) => format!("{} / {baseline}", self.subject),
            None => self.subject.clone(),
        }
    }
}

/// A comparison's target, as written in JSON: `{"max_ratio": 1.05}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Target {
    /// subject / baseline ≤ this.
    MaxRatio(f64),
    /// baseline / subject ≥ this.
    MinSpeedup(f64),
    /// subject ≤ this many nanoseconds.
    MaxNs(f64),
}

impl Target {
    /// Whether the subject meets the target; `None` when it needs a baseline that is missing.
    fn met(self, subject: f64, baseline: Option<f64>) -> Option<bool> {
        Some(match self {
            Self::MaxRatio(max) => subject / baseline? <= max,
            Self::MinSpeedup(min) => baseline? / subject >= min,
            Self::MaxNs(max) => subject <= max,
        })
    }

    /// The measured value the target bounds, in the target's terms.
    fn measured(self, subject: f64, baseline: Option<f64>) -> String {
        match (self, baseline) {
            (Self::MaxRatio(_), Some(b)) => format!("{:.2}×", subject / b),
            (Self::MinSpeedup(_), Some(b)) => format!("{:.2}× faster", b / subject),
            (Self::MaxNs(_), _) => time(subject),
            (_, None) => "—".to_owned(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MaxRatio(max) => write!(f, "≤ {max:.2}×"),
            Self::MinSpeedup(min) => write!(f, "≥ {min:.2}× faster"),
            Self::MaxNs(max) => write!(f, "≤ {}", time(max)),
        }
    }
}

/// One entry of `sizes.json`.
#[derive(Debug, Deserialize)]
struct Size {
    table: String,
    series: String,
    x: u32,
    x_label: String,
    bytes: f64,
    baseline_bytes: Option<f64>,
    max_ratio: Option<f64>,
    note: Option<String>,
}

/// What the report found, for `cargo xtask bench` to print and judge.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) met: usize,
    pub(crate) missed: usize,
    /// Groups that `targets.json` lists but that have no result at all.
    pub(crate) unmeasured: Vec<String>,
}

impl Outcome {
    fn verdict(&mut self, met: Option<bool>) -> &'static str {
        match met {
            Some(true) => {
                self.met += 1;
                "**met**"
            }
            Some(false) => {
                self.missed += 1;
                "**missed**"
            }
            None => "not run",
        }
    }
}

/// Writes `PERFORMANCE.md` and `performance/*.svg` into `out` from the results
/// under `root`, after `header` (see [`header`]).
pub(crate) fn write(root: &Path, out: &Path, header: &str) -> Result<Outcome> {
    let results = load_results(&root.join(CRITERION_DIR))?;
    let comparisons: Vec<Comparison> = read_optional(&root.join(BENCH_DIR).join("targets.json"))?;
    let sizes: Vec<Size> = read_optional(&root.join(BENCH_DIR).join("sizes.json"))?;
    let plots = out.join("performance");
    fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    // Plots of groups that are gone would linger beside the hand-written NOTES.md.
    for entry in fs::read_dir(&plots)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }

    let mut outcome = Outcome::default();
    let mut summary = String::new();
    table_head(&mut summary, &["group", "parameter", "subject", "baseline", "measured", "target", "result"])?;
    for c in &comparisons {
        let Some(target) = c.target else { continue };
        let measured = c.measured(&results);
        if measured.is_empty() {
            let baseline = c.baseline.as_deref().unwrap_or("—");
            let cells = [&c.group, "—", &c.subject, baseline, "—", &target.to_string(), "not run"];
            table_row(&mut summary, &cells)?;
        }
        for (param, subject, baseline) in measured {
            let verdict = outcome.verdict(target.met(subject, baseline));
            let baseline_cell =
                baseline.zip(c.baseline.as_ref()).map_or("—".to_owned(), |(b, n)| format!("{n}: {}", time(b)));
            let cells = [
                c.group.clone(),
                param_label(param).to_owned(),
                format!("{}: {}", c.subject, time(subject)),
                baseline_cell,
                target.measured(subject, baseline),
                target.to_string(),
                verdict.to_owned(),
            ];
            table_row(&mut summary, &cells)?;
        }
    }

    let mut sections = String::new();
    let named = comparisons.iter().map(|c| c.group.as_str());
    for group in unique(named.chain(results.keys().map(|(g, _, _)| g.as_str()))) {
        let ours: Vec<&Comparison> = comparisons.iter().filter(|c| c.group == group).collect();
        if !group_section(&mut sections, &plots, &results, group, &ours)? {
            outcome.unmeasured.push(group.to_owned());
        }
    }
    size_sections(&mut sections, &mut summary, &mut outcome, &plots, &sizes)?;

    let (met, missed) = (outcome.met, outcome.missed);
    let mut md = format!(
        "# Performance\n\n{header}\n\n## Summary\n\n{met} targets met, {missed} missed.\n\n{summary}\n{sections}"
    );
    let notes = root.join("docs/performance/NOTES.md");
    if notes.exists() {
        let text = fs::read_to_string(&notes).with_context(|| format!("reading {}", notes.display()))?;
        write!(md, "## Notes and profiles\n\n{text}")?;
    }
    let path = out.join("PERFORMANCE.md");
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(outcome)
}

/// One group's table and plot; false if the group has no result at all.
fn group_section(
    md: &mut String,
    plots: &Path,
    results: &Results,
    group: &str,
    comparisons: &[&Comparison],
) -> Result<bool> {
    let title = comparisons.first().map_or(group, |c| c.title.as_str());
    writeln!(md, "## {title} (`{group}`)\n")?;
    for note in unique(comparisons.iter().filter_map(|c| c.note.as_deref())) {
        writeln!(md, "{note}\n")?;
    }
    let params = params(results, group);
    if params.is_empty() {
        writeln!(md, "Not run.\n")?;
        return Ok(false);
    }
    // Flavors in the order the comparisons name them, then any others.
    let named = comparisons.iter().flat_map(|c| [Some(c.subject.as_str()), c.baseline.as_deref()]).flatten();
    let found = results.keys().filter(|(g, _, _)| g == group).map(|(_, f, _)| f.as_str());
    let mut flavors = unique(named.chain(found));
    flavors.retain(|f| params.iter().any(|p| mean(results, group, f, p).is_some()));
    let ratios: Vec<&&Comparison> =
        comparisons.iter().filter(|c| c.baseline.is_some() && !c.measured(results).is_empty()).collect();
    let x_label = comparisons.first().map_or("parameter", |c| c.x_label.as_str());
    let mut head = vec![x_label.to_owned()];
    head.extend(flavors.iter().map(|f| flavor_label(f).to_owned()));
    head.extend(ratios.iter().map(|c| c.label()));
    table_head(md, &head)?;
    let mut series: Vec<Series> = Vec::new();
    for param in &params {
        let mut row = vec![param_label(param).to_owned()];
        for flavor in &flavors {
            let estimate = estimate(results, group, flavor, param);
            row.push(estimate.map_or("—".to_owned(), time_ci));
            if let (Some(e), (prefix, Some(x))) = (estimate, split_param(param)) {
                let name = format!("{} {prefix}", flavor_label(flavor));
                Series::push(&mut series, name.trim_end(), (f64::from(x), e.point_estimate));
            }
        }
        for c in &ratios {
            let ratio = mean(results, group, &c.subject, param)
                .zip(c.baseline.as_deref().and_then(|b| mean(results, group, b, param)));
            row.push(ratio.map_or("—".to_owned(), |(s, b)| format!("{:.2}", s / b)));
        }
        table_row(md, &row)?;
    }
    writeln!(md)?;
    for c in comparisons.iter().filter(|c| c.measured(results).is_empty()) {
        writeln!(md, "Not run: {}.\n", c.label())?;
    }
    let file = format!("{}.svg", slug(group));
    if let Some(svg) = plot(group, x_label, "mean time", time, &series)? {
        fs::write(plots.join(&file), svg)?;
        writeln!(md, "![{group}: mean time against {x_label}](performance/{file})\n")?;
    }
    Ok(true)
}

/// One section per table of `sizes.json`, and its targets in the summary.
fn size_sections(
    md: &mut String,
    summary: &mut String,
    outcome: &mut Outcome,
    plots: &Path,
    sizes: &[Size],
) -> Result<()> {
    for table in unique(sizes.iter().map(|s| s.table.as_str())) {
        let mut rows: Vec<&Size> = sizes.iter().filter(|s| s.table == table).collect();
        rows.sort_by(|a, b| a.series.cmp(&b.series).then(a.x.cmp(&b.x)));
        writeln!(md, "## Size: {table}\n")?;
        for note in unique(rows.iter().filter_map(|s| s.note.as_deref())) {
            writeln!(md, "{note}\n")?;
        }
        let x_label = rows.first().map_or("x", |s| s.x_label.as_str());
        table_head(md, &[x_label, "series", "bytes", "baseline bytes", "ratio", "target", "result"])?;
        for s in &rows {
            let target = s.max_ratio.map(Target::MaxRatio);
            let ratio = s.baseline_bytes.map_or("—".to_owned(), |b| format!("{:.2}×", s.bytes / b));
            let verdict = target.map_or("", |t| outcome.verdict(t.met(s.bytes, s.baseline_bytes)));
            let baseline = s.baseline_bytes.map_or("—".to_owned(), |b| format!("{b:.0}"));
            let target = target.map_or("—".to_owned(), |t| t.to_string());
            let (x, bytes) = (s.x.to_string(), format!("{:.0}", s.bytes));
            table_row(md, &[&x, &s.series, &bytes, &baseline, &ratio, &target, verdict])?;
            if !verdict.is_empty() {
                let (table, param) = (format!("size: {table}"), format!("{} {x}", s.series));
                table_row(summary, &[&table, &param, &bytes, &baseline, &ratio, &target, verdict])?;
            }
        }
        // One color per series; its baseline dashed in the same color.
        let mut series: Vec<Series> = Vec::new();
        for (color, name) in unique(rows.iter().map(|s| s.series.as_str())).into_iter().enumerate() {
            let rows = rows.iter().filter(|s| s.series == name);
            let points = rows.clone().map(|s| (f64::from(s.x), s.bytes)).collect();
            series.push(Series { name: name.to_owned(), points, color, dashed: false });
            let points: Vec<_> = rows.filter_map(|s| Some((f64::from(s.x), s.baseline_bytes?))).collect();
            if !points.is_empty() {
                series.push(Series { name: format!("{name} baseline"), points, color, dashed: true });
            }
        }
        writeln!(md)?;
        let file = format!("size-{}.svg", slug(table));
        if let Some(svg) = plot(table, x_label, "bytes", bytes, &series)? {
            fs::write(plots.join(&file), svg)?;
            writeln!(md, "![{table}: bytes against {x_label}](performance/{file})\n")?;
        }
    }
    Ok(())
}

/// The report's opening lines: how, when, at which commit and on what machine it was measured.
pub(crate) fn header(sh: &Shell, quick: bool) -> String {
    let read = |c: xshell::Cmd<'_>| c.quiet().ignore_stderr().read().ok().filter(|s| !s.trim().is_empty());
    let unknown = || "unknown".to_owned();
    let format = "+%Y-%m-%d %H:%M UTC";
    let date = read(cmd!(sh, "date -u {format}")).unwrap_or_else(unknown);
    let dirty = if read(cmd!(sh, "git status --porcelain")).is_some() { "+dirty" } else { "" };
    let commit = read(cmd!(sh, "git rev-parse --short HEAD")).map_or_else(unknown, |c| format!("{c}{dirty}"));
    let proc = |file: &str, key: &str| {
        fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| Some(l.strip_prefix(key)?.split_once(':')?.1.trim().to_owned()))
    };
    let cpu = proc("/proc/cpuinfo", "model name").unwrap_or_else(unknown);
    let memory = proc("/proc/meminfo", "MemTotal")
        .and_then(|m| m.strip_suffix(" kB")?.trim().parse::<f64>().ok())
        .map_or_else(unknown, |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or_else(|_| unknown(), |n| n.to_string());
    let os = read(cmd!(sh, "uname -sr")).unwrap_or_else(unknown);
    let rustc = read(cmd!(sh, "rustc --version")).unwrap_or_else(unknown);
    let run = if quick { "`--quick`: a smoke test, not a measurement" } else { "full run" };
    format!(
        "Generated by `cargo xtask bench` ({run}) on {date} at commit `{commit}`; do not edit by hand \
         (explanations go in `docs/performance/NOTES.md`).\n\n\
         - Machine: {cpu}, {cores} logical cores, {memory} memory, {os}\n- Compiler: {rustc}"
    )
}

fn load_results(dir: &Path) -> Result<Results> {
    let mut results = Results::new();
    if !dir.exists() {
        return Ok(results);
    }
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.ends_with("new/benchmark.json") {
                // `base/` holds an earlier run's copy; `new/` is this run's.
                let id: BenchmarkId = read_json(&path)?;
                let estimates: Estimates = read_json(&path.with_file_name("estimates.json"))?;
                let key = (id.group_id, id.function_id.unwrap_or_default(), id.value_str.unwrap_or_default());
                results.insert(key, estimates.mean);
            }
        }
    }
    Ok(results)
}

/// The distinct items, in order of first appearance.
fn unique<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_optional<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if path.exists() { read_json(path) } else { Ok(Vec::new()) }
}

/// A group's parameters, ordered by series prefix and then numerically.
fn params<'r>(results: &'r Results, group: &str) -> Vec<&'r str> {
    let mut params: Vec<&str> = results.keys().filter(|(g, _, _)| g == group).map(|(_, _, p)| p.as_str()).collect();
    params.sort_by_key(|p| (split_param(p), *p));
    params.dedup();
    params
}

/// `sparse-32` → (`sparse`, 32); `512` → (``, 512): the plot's series prefix and x value.
fn split_param(param: &str) -> (&str, Option<u32>) {
    let head = param.trim_end_matches(|c: char| c.is_ascii_digit());
    let x = param.strip_prefix(head).and_then(|digits| digits.parse().ok());
    (if x.is_some() { head.trim_end_matches(['-', '_', ' ']) } else { head }, x)
}

fn param_label(param: &str) -> &str {
    if param.is_empty() { "—" } else { param }
}

fn flavor_label(flavor: &str) -> &str {
    if flavor.is_empty() { "mean" } else { flavor }
}

fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' }).collect()
}

fn table_head<S: AsRef<str>>(md: &mut String, cells: &[S]) -> fmt::Result {
    table_row(md, cells)?;
    table_row(md, &vec!["---"; cells.len()])
}

fn table_row<S: AsRef<str>>(md: &mut String, cells: &[S]) -> fmt::Result {
    cells.iter().try_for_each(|c| write!(md, "| {} ", c.as_ref()))?;
    writeln!(md, "|")
}

/// A value from 1 to 999 to three significant digits, without trailing zeros.
fn number(v: f64) -> String {
    let decimals = if v.abs() < 10.0 {
        2
    } else if v.abs() < 100.0 {
        1
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// A duration in nanoseconds, in the unit that keeps it from 1 to 999.
fn time(ns: f64) -> String {
    let units = [(1e9, "s"), (1e6, "ms"), (1e3, "µs")];
    let (scale, unit) = units.into_iter().find(|(scale, _)| ns >= *scale).unwrap_or((1.0, "ns"));
    format!("{} {unit}", number(ns / scale))
}

/// The mean ± half its 95% confidence interval, each in its own unit (so a
/// tight interval does not round to zero).
fn time_ci(e: &Estimate) -> String {
    let half = (e.confidence_interval.upper_bound - e.confidence_interval.lower_bound) / 2.0;
    format!("{} ± {}", time(e.point_estimate), time(half))
}

/// Decimal units, so that the log axis's ticks (1, 2, 5 per decade) read as round numbers.
fn bytes(b: f64) -> String {
    let (scale, unit) =
        [(1e9, "GB"), (1e6, "MB"), (1e3, "kB")].into_iter().find(|(scale, _)| b >= *scale).unwrap_or((1.0, "B"));
    format!("{} {unit}", number(b / scale))
}

/// One line of a plot.
#[derive(Debug)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: usize,
    dashed: bool,
}

impl Series {
    fn style(&self) -> ShapeStyle {
        COLORS.iter().cycle().nth(self.color).copied().unwrap_or(BLACK).stroke_width(2)
    }

    /// Adds a point to the series `name`, creating it (with the next color) if new.
    fn push(series: &mut Vec<Series>, name: &str, point: (f64, f64)) {
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => {
                let color = series.len();
                series.push(Series { name: name.to_owned(), points: vec![point], color, dashed: false });
            }
        }
    }
}

const LEGEND_COLUMNS: usize = 3;

/// Colors told apart with color blindness too (Okabe and Ito), in order of use.
const COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// A log scale has no place for zero (nor for infinities).
fn plottable(&(x, y): &(f64, f64)) -> bool {
    x.is_finite() && y.is_finite() && y > 0.0
}

/// An SVG plot of `series` with a log-scale y axis (and log-scale x axis when x spans
/// more than a factor 8); `None` if there is nothing to plot.
fn plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_format: fn(f64) -> String,
    series: &[Series],
) -> Result<Option<String>> {
    let mut xs: Vec<f64> = series.iter().flat_map(|s| &s.points).filter(|p| plottable(p)).map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let ys = series.iter().flat_map(|s| &s.points).filter(|p| plottable(p)).map(|p| p.1);
    let (Some(&x0), Some(&x1), Some(y0), Some(y1)) =
        (xs.first(), xs.last(), ys.clone().reduce(f64::min), ys.reduce(f64::max))
    else {
        return Ok(None);
    };
    // Headroom, so that markers at the extremes are not cut in half.
    let (y0, y1) = (y0 / 1.5, y1 * 1.5);
    let y = (y0..y1).log_scale().with_key_points(log_ticks(y0, y1));
    let axes = Axes { x_label, y_label, y_format, x_labels: xs.len().clamp(2, 12) };
    let mut svg = String::new();
    {
        // The legend goes below the chart, where it cannot hide a point.
        let legend_height = 20 * u32::try_from(series.chunks(LEGEND_COLUMNS).len())? + 8;
        let root = SVGBackend::with_string(&mut svg, (760, 420 + legend_height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, legend) = root.split_vertically(420);
        let mut chart = ChartBuilder::on(&upper);
        chart.caption(title, ("sans-serif", 22)).margin(12).x_label_area_size(50).y_label_area_size(90);
        if x0 > 0.0 && x1 / x0 > 8.0 {
            // Ticks at the measured x values (the parameters were chosen), at most a dozen.
            let ticks = xs.iter().copied().step_by(xs.len().div_ceil(12)).collect();
            let x = (x0 / 1.25..x1 * 1.25).log_scale().with_key_points(ticks);
            axes.draw(chart.build_cartesian_2d(x, y)?, series)?;
        } else {
            let pad = ((x1 - x0) / 20.0).max(0.5);
            axes.draw(chart.build_cartesian_2d(x0 - pad..x1 + pad, y)?, series)?;
        }
        for (row, line) in (0..).zip(series.chunks(LEGEND_COLUMNS)) {
            for (column, s) in (0..).zip(line) {
                let (x, y) = (92 + 220 * column, 4 + 20 * row);
                let (sample, style) = ([(x, y + 8), (x + 24, y + 8)], s.style());
                if s.dashed {
                    legend.draw(&DashedPathElement::new(sample, 6, 4, style))?;
                } else {
                    legend.draw(&PathElement::new(sample, style))?;
                }
                legend.draw(&Text::new(s.name.as_str(), (x + 32, y), ("sans-serif", 16)))?;
            }
        }
        root.present()?;
    }
    Ok(Some(svg))
}

/// Ticks for a log axis over `lo..hi`: 1, 2 and 5 in each decade; every digit if
/// that leaves fewer than three; only powers of ten if it makes more than a dozen.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let ticks = |mantissas: &[f64]| {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(lo.log10().floor());
        while decade <= hi {
            ticks.extend(mantissas.iter().map(|m| m * decade).filter(|t| (lo..=hi).contains(t)));
            decade *= 10.0;
        }
        ticks
    };
    let ticks125 = ticks(&[1.0, 2.0, 5.0]);
    match ticks125.len() {
        0..3 => ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
        13.. => ticks(&[1.0]),
        _ => ticks125,
    }
}

/// What a plot's axes say.
#[derive(Debug)]
struct Axes<'a> {
    x_label: &'a str,
    y_label: &'a str,
    y_format: fn(f64) -> String,
    /// At most this many x ticks on a linear axis (a log one has its own).
    x_labels: usize,
}

impl Axes<'_> {
    /// Draws the mesh and the series with their markers; generic over
    /// the x axis, which is linear or logarithmic.
    fn draw<'a, X>(
        &self,
        mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, WithKeyPoints<LogCoord<f64>>>>,
        series: &[Series],
    ) -> Result<()>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .x_labels(self.x_labels)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(TRANSPARENT)
            .y_desc(self.y_label)
            .x_label_formatter(&|x| number(*x))
            .y_label_formatter(&|y| (self.y_format)(*y))
            .draw()?;
        for s in series {
            let (style, points) = (s.style(), s.points.iter().copied().filter(plottable));
            if s.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?;
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style))?;
            }
            chart.draw_series(points.map(|p| Circle::new(p, 3, style.filled())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes one criterion result as criterion lays it out: `<dir>/{new,base}/…`.
    fn result(root: &Path, dir: &str, id: (&str, Option<&str>, Option<&str>), ns: f64) {
        for (run, mean) in [("new", ns), ("base", ns * 100.0)] {
            let at = root.join(CRITERION_DIR).join(dir).join(run);
            fs::create_dir_all(&at).unwrap();
            let (group_id, function_id, value_str) = id;
            let benchmark = serde_json::json!({
                "group_id": group_id, "function_id": function_id, "value_str": value_str,
                "throughput": null, "full_id": dir, "directory_name": dir, "title": dir,
            });
            let interval = serde_json::json!({
                "confidence_level": 0.95, "lower_bound": mean * 0.99, "upper_bound": mean * 1.01,
            });
            let estimate =
                serde_json::json!({"confidence_interval": interval, "point_estimate": mean, "standard_error": 1.0});
            let estimates = serde_json::json!({
                "mean": estimate, "median": estimate, "median_abs_dev": estimate, "slope": null, "std_dev": estimate,
            });
            fs::write(at.join("benchmark.json"), benchmark.to_string()).unwrap();
            fs::write(at.join("estimates.json"), estimates.to_string()).unwrap();
        }
    }

    #[test]
    fn report_from_synthetic_results() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let results = [
            ("overhead.rotate_amk", Some("ours"), Some("sparse-32"), 1020.0),
            ("overhead.rotate_amk", Some("ours"), Some("sparse-512"), 1100.0),
            ("overhead.rotate_amk", Some("ours"), Some("full-32"), 5000.0),
            ("overhead.rotate_amk", Some("same-bytes"), Some("sparse-32"), 1000.0),
            ("overhead.rotate_amk", Some("same-bytes"), Some("sparse-512"), 1000.0),
            ("overhead.rotate_amk", Some("same-bytes"), Some("full-32"), 5000.0),
            ("overhead.rotate_amk", Some("basic"), Some("sparse-32"), 900.0),
            ("catchup.reconcile", Some("ours"), Some("k-100"), 1000.0),
            ("catchup.reconcile", Some("raw"), Some("k-100"), 2000.0),
            ("catchup.reconcile", Some("ours"), Some("k-1000"), 1000.0),
            ("catchup.reconcile", Some("raw"), Some("k-1000"), 1200.0),
            ("identity.certificate_cold", Some("ours"), None, 1500.0),
            ("extra.untargeted", None, Some("8"), 3_000_000.0),
        ];
        for (i, (group, flavor, param, ns)) in results.into_iter().enumerate() {
            // Directory names unlike the ids: the report must key on the ids inside.
            result(root, &format!("{i}/nested"), (group, flavor, param), ns);
        }
        let comparison = |group: &str, subject: &str, baseline: Option<&str>, target: serde_json::Value| {
            serde_json::json!({
                "group": group, "title": format!("title of {group}"), "subject": subject, "baseline": baseline,
                "target": target, "x_label": "devices", "note": "a note",
            })
        };
        let targets = serde_json::json!([
            comparison("overhead.rotate_amk", "ours", Some("same-bytes"), serde_json::json!({"max_ratio": 1.05})),
            comparison("overhead.rotate_amk", "ours", Some("basic"), serde_json::Value::Null),
            comparison("overhead.rotate_amk", "ours", Some("memory"), serde_json::json!({"max_ratio": 2.0})),
            comparison("catchup.reconcile", "ours", Some("raw"), serde_json::json!({"min_speedup": 1.3})),
            comparison("identity.certificate_cold", "ours", None, serde_json::json!({"max_ns": 2000.0})),
            comparison("missing.group", "ours", Some("same-bytes"), serde_json::json!({"max_ratio": 1.1})),
        ]);
        let size = |series: &str, x: u32, bytes: u32, baseline: Option<u32>, max_ratio: Option<f64>| {
            serde_json::json!({
                "table": "Welcome with full history", "series": series, "x": x, "x_label": "AMK versions",
                "bytes": bytes, "baseline_bytes": baseline, "max_ratio": max_ratio,
            })
        };
        let sizes = serde_json::json!([
            size("welcome", 1, 1000, Some(1000), Some(1.1)),
            size("welcome", 100, 12345, Some(11000), Some(1.1)),
            size("compact", 1, 500, None, None),
        ]);
        fs::create_dir_all(root.join(BENCH_DIR)).unwrap();
        fs::write(root.join(BENCH_DIR).join("targets.json"), targets.to_string()).unwrap();
        fs::write(root.join(BENCH_DIR).join("sizes.json"), sizes.to_string()).unwrap();
        fs::create_dir_all(root.join("docs/performance")).unwrap();
        fs::write(root.join("docs/performance/NOTES.md"), "Why sparse-512 misses: profiled.\n").unwrap();
        let out = root.join(out_dir(true));
        fs::create_dir_all(out.join("performance")).unwrap();
        fs::write(out.join("performance/stale.svg"), "").unwrap();

        let outcome = write(root, &out, "HEADER").unwrap();

        assert_eq!((outcome.met, outcome.missed), (5, 3), "{outcome:?}");
        assert_eq!(outcome.unmeasured, ["missing.group"]);
        assert!(!root.join("docs/PERFORMANCE.md").exists(), "a quick run wrote to docs/");
        let md = fs::read_to_string(out.join("PERFORMANCE.md")).unwrap();
        for line in [
            "HEADER",
            "5 targets met, 3 missed.",
            "| overhead.rotate_amk | sparse-32 | ours: 1.02 µs | same-bytes: 1 µs | 1.02× | ≤ 1.05× | **met** |",
            "| overhead.rotate_amk | sparse-512 | ours: 1.1 µs | same-bytes: 1 µs | 1.10× | ≤ 1.05× | **missed** |",
            "| overhead.rotate_amk | — | ours | memory | — | ≤ 2.00× | not run |",
            "| catchup.reconcile | k-100 | ours: 1 µs | raw: 2 µs | 2.00× faster | ≥ 1.30× faster | **met** |",
            "| catchup.reconcile | k-1000 | ours: 1 µs | raw: 1.2 µs | 1.20× faster | ≥ 1.30× faster | **missed** |",
            "| identity.certificate_cold | — | ours: 1.5 µs | — | 1.5 µs | ≤ 2 µs | **met** |",
            "| missing.group | — | ours | same-bytes | — | ≤ 1.10× | not run |",
            "| size: Welcome with full history | welcome 100 | 12345 | 11000 | 1.12× | ≤ 1.10× | **missed** |",
            "## title of overhead.rotate_amk (`overhead.rotate_amk`)",
            "| devices | ours | same-bytes | basic | ours / same-bytes | ours / basic |",
            "| full-32 | 5 µs ± 50 ns | 5 µs ± 50 ns | — | 1.00 | — |",
            "| sparse-32 | 1.02 µs ± 10.2 ns | 1 µs ± 10 ns | 900 ns ± 9 ns | 1.02 | 1.13 |",
            "Not run: ours / memory.",
            "![overhead.rotate_amk: mean time against devices](performance/overhead.rotate_amk.svg)",
            "| 8 | 3 ms ± 30 µs |",
            "| 1 | compact | 500 | — | — | — |  |",
            "## Notes and profiles",
            "Why sparse-512 misses: profiled.",
        ] {
            assert!(md.lines().any(|l| l == line), "no line {line:?} in:\n{md}");
        }
        let section = |title: &str| md.split(title).nth(1).unwrap().split("\n## ").next().unwrap().to_owned();
        assert!(section("(`missing.group`)").contains("Not run."));
        // No parameter has a number: a table but nothing to plot.
        assert!(!section("(`identity.certificate_cold`)").contains("!["));

        let plots = out.join("performance");
        assert!(!plots.join("stale.svg").exists());
        assert!(!plots.join("identity.certificate_cold.svg").exists());
        for (file, series, labels) in [
            (
                "overhead.rotate_amk.svg",
                &["ours full", "ours sparse", "same-bytes full", "same-bytes sparse", "basic sparse"][..],
                &["devices", "mean time", "overhead.rotate_amk"][..],
            ),
            ("catchup.reconcile.svg", &["ours k", "raw k"], &["devices", "mean time"]),
            ("extra.untargeted.svg", &["mean"], &["parameter"]),
            (
                "size-Welcome-with-full-history.svg",
                &["welcome", "welcome baseline", "compact"],
                &["AMK versions", "bytes"],
            ),
        ] {
            let svg = fs::read_to_string(plots.join(file)).unwrap();
            // A line per series and its sample in the legend (the mesh is drawn thinner).
            let lines = svg.matches(r#"stroke-width="2" points="#).count();
            assert!(lines >= 2 * series.len(), "{file}: {lines} lines for {series:?}");
            for text in series.iter().chain(labels) {
                assert!(svg.contains(&format!(">\n{text}\n</text>")), "{file} lacks the text {text:?}");
            }
        }
    }

    #[test]
    fn targets_decide_met_and_missed() {
        use Target::*;
        let cases = [
            (MaxRatio(1.05), 104.0, Some(100.0), Some(true)),
            (MaxRatio(1.05), 106.0, Some(100.0), Some(false)),
            (MaxRatio(1.05), 100.0, None, None),
            (MinSpeedup(1.3), 100.0, Some(131.0), Some(true)),
            (MinSpeedup(1.3), 100.0, Some(129.0), Some(false)),
            (MinSpeedup(1.3), 100.0, None, None),
            (MaxNs(2000.0), 2000.0, None, Some(true)),
            (MaxNs(2000.0), 2001.0, Some(1.0), Some(false)),
        ];
        for (target, subject, baseline, met) in cases {
            assert_eq!(target.met(subject, baseline), met, "{target:?} {subject} {baseline:?}");
        }
    }

    #[test]
    fn parameters_and_units() {
        for (param, split) in [
            ("sparse-32", ("sparse", Some(32))),
            ("512", ("", Some(512))),
            ("k-100", ("k", Some(100))),
            ("x_7", ("x", Some(7))),
            ("cold", ("cold", None)),
            ("", ("", None)),
        ] {
            assert_eq!(split_param(param), split, "{param}");
        }
        for (ns, text) in
            [(950.0, "950 ns"), (1500.0, "1.5 µs"), (12_340.0, "12.3 µs"), (2e6, "2 ms"), (3.25e9, "3.25 s")]
        {
            assert_eq!(time(ns), text);
        }
    }
}
