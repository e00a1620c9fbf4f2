//! What a comparison produced, and how it is written: `results.json` (all
//! of it), `results.csv` (one row per run), `results.md` (the tables and
//! the goals, as printed), three SVG plots against connections at
//! pipeline 1 — requests/s, p99 latency, server CPU µs per request — one
//! line per single-core server, and `requests_per_sec_vs_loops.svg`: the
//! multi-core points' requests/s against loops (epoll `--threads`, tokio
//! workers), a line per server family and point.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::load::LoadReport;

/// One point of the matrix for one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// Server name.
    pub server: String,
    /// Connections.
    pub connections: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// `ok`, `skipped` or `failed`.
    pub status: String,
    /// Why skipped or failed.
    pub reason: Option<String>,
    /// Server threads at the end of the run.
    pub threads: Option<u64>,
    /// Loops (epoll `--threads`) or tokio workers of a multi-core point.
    #[serde(default)]
    pub loops: Option<usize>,
    /// The load generator's figures (absent when skipped).
    pub report: Option<LoadReport>,
}

impl RunResult {
    /// A run not yet done.
    pub fn new(server: &str, connections: usize, pipeline: usize) -> Self {
        RunResult {
            server: server.into(),
            connections,
            pipeline,
            status: "ok".into(),
            reason: None,
            threads: None,
            loops: None,
            report: None,
        }
    }
    /// Marks it skipped.
    pub fn skip(&mut self, why: String) {
        self.status = "skipped".into();
        self.reason = Some(why);
    }
    /// Marks it failed.
    pub fn fail(&mut self, why: String) {
        self.status = "failed".into();
        self.reason = Some(why);
    }
    /// The figures, if the run measured anything: a run whose window got
    /// no answer (a load generator starved on a busy machine) has ratios of
    /// 0 or infinity, which are no measurement.
    fn ok(&self) -> Option<&LoadReport> {
        self.report.as_ref().filter(|r| self.status == "ok" && r.requests > 0)
    }
}

/// The idle-memory test of one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleResult {
    /// Server name.
    pub server: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections held (0 unless all were).
    pub held: usize,
    /// `ok`, `skipped` or `failed`.
    pub status: String,
    /// Why skipped or failed.
    pub reason: Option<String>,
    /// RSS after one connection came and went.
    pub rss_empty_kib: Option<u64>,
    /// RSS with all connections open and idle.
    pub rss_held_kib: Option<u64>,
    /// `(held - empty) / connections`, user-space bytes per idle connection.
    pub per_connection_bytes: Option<f64>,
    /// Server threads while holding them.
    pub threads: Option<u64>,
    /// Server CPU use while holding them, nothing being sent (100 = one core).
    pub idle_cpu_percent: Option<f64>,
}

impl IdleResult {
    /// A test not yet done.
    pub fn new(server: &str, connections: usize) -> Self {
        IdleResult {
            server: server.into(),
            connections,
            held: 0,
            status: "ok".into(),
            reason: None,
            rss_empty_kib: None,
            rss_held_kib: None,
            per_connection_bytes: None,
            threads: None,
            idle_cpu_percent: None,
        }
    }
    /// Marks it skipped.
    pub fn skip(&mut self, why: String) {
        self.status = "skipped".into();
        self.reason = Some(why);
    }
    /// Marks it failed.
    pub fn fail(&mut self, why: String) {
        self.status = "failed".into();
        self.reason = Some(why);
    }
}

/// One goal of issue 5, evaluated on this run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goal {
    /// What is compared.
    pub goal: String,
    /// The measured ratio (or value).
    pub measured: Option<f64>,
    /// The bound it must respect.
    pub bound: String,
    /// Met, missed, or not measurable in this run.
    pub verdict: String,
}

/// Everything one comparison produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Short mode?
    pub short: bool,
    /// Warm-up per run (ms).
    pub warmup_ms: u64,
    /// Measured time per run (ms).
    pub duration_ms: u64,
    /// Rounds over the matrix; each figure is the median of the rounds.
    pub rounds: usize,
    /// CPU the servers were pinned to.
    pub server_cpu: Option<usize>,
    /// CPU the load generator was pinned to.
    pub load_cpu: Option<usize>,
    /// The matrix.
    pub runs: Vec<RunResult>,
    /// The idle-memory test.
    pub idle: Vec<IdleResult>,
    /// Issue 5's goals.
    pub goals: Vec<Goal>,
}

impl Results {
    /// Empty results of a comparison with these settings.
    pub fn new(short: bool, warmup: Duration, duration: Duration, server: Option<usize>, load: Option<usize>) -> Self {
        Results {
            short,
            warmup_ms: warmup.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            rounds: 1,
            server_cpu: server,
            load_cpu: load,
            runs: Vec::new(),
            idle: Vec::new(),
            goals: Vec::new(),
        }
    }

    fn point(&self, server: &str, connections: usize, pipeline: usize) -> Option<&LoadReport> {
        self.runs
            .iter()
            .find(|r| r.server == server && r.connections == connections && r.pipeline == pipeline)
            .and_then(RunResult::ok)
    }

    /// Computes issue 5's goals from the runs.
    pub fn evaluate_goals(&mut self) {
        let mut goals = Vec::new();
        let cpu = |r: &LoadReport| r.server_cpu_us_per_request;
        let mut ratio_goal = |goal: String, a: Option<f64>, b: Option<f64>, bound: f64, at_most: bool| {
            let measured = a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
            let verdict = match measured {
                None => "not measured".to_string(),
                Some(m) if (at_most && m <= bound) || (!at_most && m >= bound) => "met".to_string(),
                Some(m) => format!("missed by {:.0}%", ((m / bound) - 1.0).abs() * 100.0),
            };
            let bound = format!("{} {bound}", if at_most { "<=" } else { ">=" });
            goals.push(Goal { goal, measured, bound, verdict });
        };
        let at = |s: &str, c, p| self.point(s, c, p);
        ratio_goal(
            "epoll / floor server CPU per request, 16 conn x pipeline 16".into(),
            at("epoll", 16, 16).and_then(cpu),
            at("floor", 16, 16).and_then(cpu),
            1.25,
            true,
        );
        ratio_goal(
            "epoll / tokio-current server CPU per request, 16 conn x pipeline 16".into(),
            at("epoll", 16, 16).and_then(cpu),
            at("tokio-current", 16, 16).and_then(cpu),
            0.8,
            true,
        );
        ratio_goal(
            "epoll / floor requests/s, 16 conn x pipeline 16".into(),
            at("epoll", 16, 16).map(|r| r.requests_per_sec),
            at("floor", 16, 16).map(|r| r.requests_per_sec),
            0.9,
            false,
        );
        for c in [16, 1000] {
            ratio_goal(
                format!("epoll / floor server CPU per request, {c} conn x pipeline 1"),
                at("epoll", c, 1).and_then(cpu),
                at("floor", c, 1).and_then(cpu),
                1.15,
                true,
            );
        }
        ratio_goal(
            "epoll / tokio-current p99 latency, 1000 conn x pipeline 1".into(),
            at("epoll", 1000, 1).map(|r| r.p99_us),
            at("tokio-current", 1000, 1).map(|r| r.p99_us),
            1.0,
            true,
        );
        ratio_goal(
            "(for reference) epoll / tokio-multi p99 latency, 1000 conn x pipeline 1".into(),
            at("epoll", 1000, 1).map(|r| r.p99_us),
            at("tokio-multi", 1000, 1).map(|r| r.p99_us),
            1.0,
            true,
        );
        ratio_goal(
            "epoll --threads 2 / tokio-multi 2 workers requests/s, 1000 conn x pipeline 1 (unpinned)".into(),
            at("epoll-t2", 1000, 1).map(|r| r.requests_per_sec),
            at("tokio-multi-w2", 1000, 1).map(|r| r.requests_per_sec),
            1.3,
            false,
        );
        ratio_goal(
            "epoll --threads 2 / tokio-multi 2 workers p99 latency, 1000 conn x pipeline 1 (unpinned)".into(),
            at("epoll-t2", 1000, 1).map(|r| r.p99_us),
            at("tokio-multi-w2", 1000, 1).map(|r| r.p99_us),
            1.0,
            true,
        );
        ratio_goal(
            "epoll --threads 2 / --threads 1 server CPU per request, 16 conn x pipeline 16 (unpinned)".into(),
            at("epoll-t2", 16, 16).and_then(cpu),
            at("epoll-t1", 16, 16).and_then(cpu),
            1.1,
            true,
        );
        // Issue 12: the completion loop against the readiness loop and the floor.
        for c in [16, 1000] {
            for base in ["floor", "epoll"] {
                ratio_goal(
                    format!("uring / {base} server CPU per request, {c} conn x pipeline 1"),
                    at("uring", c, 1).and_then(cpu),
                    at(base, c, 1).and_then(cpu),
                    0.9,
                    true,
                );
            }
        }
        ratio_goal(
            "uring / epoll server CPU per request, 16 conn x pipeline 16".into(),
            at("uring", 16, 16).and_then(cpu),
            at("epoll", 16, 16).and_then(cpu),
            1.0,
            true,
        );
        ratio_goal(
            "uring / epoll p99 latency, 1000 conn x pipeline 1".into(),
            at("uring", 1000, 1).map(|r| r.p99_us),
            at("epoll", 1000, 1).map(|r| r.p99_us),
            1.0,
            true,
        );
        let idle = |s: &str| self.idle.iter().find(|i| i.server == s);
        for server in ["epoll", "uring"] {
            let bytes = idle(server).and_then(|i| i.per_connection_bytes);
            goals.push(Goal {
                goal: format!("{server} idle user-space memory per connection at 10,000 connections (bytes)"),
                measured: bytes,
                bound: "<= 1024".into(),
                verdict: match bytes {
                    None => "not measured".into(),
                    Some(b) if b <= 1024.0 => "met".into(),
                    Some(b) => format!("missed by {:.0}%", (b / 1024.0 - 1.0) * 100.0),
                },
            });
        }
        let threaded_idle = idle("threaded").map(|i| i.held);
        let threaded_run = self.point("threaded", 10_000, 1).map(|r| r.connections);
        let held = threaded_idle.into_iter().chain(threaded_run).max();
        goals.push(Goal {
            goal: "threaded holds 10,000 connections (idle test / 10,000-connection run)".into(),
            measured: held.map(|h| h as f64),
            bound: ">= 10000".into(),
            verdict: match held {
                None => "not measured".into(),
                Some(h) if h >= 10_000 => "met".into(),
                Some(h) => format!("missed: held {h}"),
            },
        });
        self.goals = goals;
    }
}

fn median_of(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// The figure-by-figure median of several runs of one point (counts are
/// summed, `max_us` is the largest); `None` when there are none.
pub fn median(runs: &[LoadReport]) -> Option<LoadReport> {
    let first = runs.first()?;
    let m = |f: fn(&LoadReport) -> f64| median_of(runs.iter().map(f).collect()).unwrap_or(0.0);
    let mo = |f: fn(&LoadReport) -> Option<f64>| median_of(runs.iter().filter_map(f).collect());
    Some(LoadReport {
        connections: first.connections,
        pipeline: first.pipeline,
        requests: runs.iter().map(|r| r.requests).sum(),
        total_requests: runs.iter().map(|r| r.total_requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
        window_secs: runs.iter().map(|r| r.window_secs).sum(),
        requests_per_sec: m(|r| r.requests_per_sec),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        p999_us: m(|r| r.p999_us),
        max_us: runs.iter().map(|r| r.max_us).fold(0.0, f64::max),
        server_cpu_us_per_request: mo(|r| r.server_cpu_us_per_request),
        server_cpu_percent: mo(|r| r.server_cpu_percent),
        server_rss_kib: mo(|r| r.server_rss_kib.map(|k| k as f64)).map(|k| k as u64),
        load_cpu_percent: mo(|r| r.load_cpu_percent),
        source_addrs: runs.iter().map(|r| r.source_addrs).max().unwrap_or(1),
    })
}

/// One line for a single load run.
pub fn summary_line(r: &LoadReport) -> String {
    let mut s = format!(
        "connections={} pipeline={} requests={} errors={} req/s={:.0} p50={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
        r.connections, r.pipeline, r.requests, r.errors, r.requests_per_sec, r.p50_us, r.p99_us, r.p999_us, r.max_us
    );
    if let Some(c) = r.server_cpu_us_per_request {
        let _ = write!(s, " server_cpu={c:.2}us/req");
    }
    if let Some(p) = r.server_cpu_percent {
        let _ = write!(s, " server_cpu={p:.0}%");
    }
    if let Some(k) = r.server_rss_kib {
        let _ = write!(s, " server_rss={k}KiB");
    }
    if let Some(p) = r.load_cpu_percent {
        let _ = write!(s, " load_cpu={p:.0}%");
    }
    s
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown tables (matrix, idle memory, goals).
pub fn markdown(results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} mode: {} round(s) of {} ms warm-up + {} ms measured per point, medians over rounds; server on CPU {}, load on CPU {}\n",
        if results.short { "short" } else { "full" },
        results.rounds,
        results.warmup_ms,
        results.duration_ms,
        results.server_cpu.map_or("any".into(), |c| c.to_string()),
        results.load_cpu.map_or("any".into(), |c| c.to_string()),
    );
    if results.runs.iter().any(|r| r.loops.is_some()) {
        let _ = writeln!(
            s,
            "multi-core points (`epoll-tN`: `kvio serve --flavor epoll --threads N`; `tokio-multi-wN`: tokio's multi-thread runtime with N workers): server and load generator unpinned\n"
        );
    }
    let _ = writeln!(
        s,
        "| server | conns x pipeline | req/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/req | server CPU % | load CPU % | RSS KiB | status |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &results.runs {
        let status = match (&r.reason, r.status.as_str()) {
            (Some(why), st) => format!("{st}: {why}"),
            (None, st) => st.to_string(),
        };
        match &r.report {
            Some(p) if r.status == "ok" => {
                let _ = writeln!(
                    s,
                    "| {} | {}x{} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | ok |",
                    r.server,
                    r.connections,
                    r.pipeline,
                    p.requests_per_sec,
                    p.p50_us,
                    p.p99_us,
                    p.p999_us,
                    p.max_us,
                    opt(p.server_cpu_us_per_request, 2),
                    opt(p.server_cpu_percent, 0),
                    opt(p.load_cpu_percent, 0),
                    p.server_rss_kib.map_or("-".into(), |k| k.to_string()),
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| {} | {}x{} | - | - | - | - | - | - | - | - | - | {} |",
                    r.server,
                    r.connections,
                    r.pipeline,
                    status.replace('|', "/")
                );
            }
        }
    }
    if !results.idle.is_empty() {
        let _ = writeln!(
            s,
            "\n| server | idle connections held | RSS empty KiB | RSS held KiB | bytes / connection | threads | CPU % while idle | status |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
        for i in &results.idle {
            let status =
                i.reason.as_ref().map_or(i.status.clone(), |w| format!("{}: {}", i.status, w.replace('|', "/")));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                i.server,
                i.held,
                i.rss_empty_kib.map_or("-".into(), |k| k.to_string()),
                i.rss_held_kib.map_or("-".into(), |k| k.to_string()),
                opt(i.per_connection_bytes, 0),
                i.threads.map_or("-".into(), |t| t.to_string()),
                opt(i.idle_cpu_percent, 1),
                status
            );
        }
    }
    if !results.goals.is_empty() {
        let _ = writeln!(s, "\n| goal | measured | bound | verdict |");
        let _ = writeln!(s, "|---|---:|---|---|");
        for g in &results.goals {
            let _ = writeln!(s, "| {} | {} | {} | {} |", g.goal, opt(g.measured, 2), g.bound, g.verdict);
        }
    }
    s
}

/// One CSV row per run; no field holds a comma or quote except `reason`,
/// which is quoted.
pub fn csv(results: &Results) -> String {
    let mut s = String::from(
        "server,connections,pipeline,status,requests,errors,window_secs,requests_per_sec,p50_us,p99_us,p999_us,max_us,server_cpu_us_per_request,server_cpu_percent,load_cpu_percent,server_rss_kib,threads,loops,reason\n",
    );
    for r in &results.runs {
        let p = r.report.clone().unwrap_or_default();
        let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{:.3},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{},{},\"{}\"",
            r.server,
            r.connections,
            r.pipeline,
            r.status,
            p.requests,
            p.errors,
            p.window_secs,
            p.requests_per_sec,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            p.max_us,
            o(p.server_cpu_us_per_request),
            o(p.server_cpu_percent),
            o(p.load_cpu_percent),
            p.server_rss_kib.map_or(String::new(), |k| k.to_string()),
            r.threads.map_or(String::new(), |t| t.to_string()),
            r.loops.map_or(String::new(), |n| n.to_string()),
            r.reason.as_deref().unwrap_or("").replace('"', "'"),
        );
    }
    s
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(170, 0, 60),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
];

/// One SVG: `metric` of every server's pipeline-1 runs against connections
/// (log x; log y when `log_y`).
fn plot(
    results: &Results,
    path: &Path,
    title: &str,
    metric: fn(&LoadReport) -> Option<f64>,
    log_y: bool,
) -> Result<(), String> {
    let mut servers: Vec<&str> = Vec::new();
    for r in results.runs.iter().filter(|r| r.loops.is_none()) {
        if !servers.contains(&r.server.as_str()) {
            servers.push(&r.server);
        }
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = servers
        .iter()
        .map(|&s| {
            let pts = results
                .runs
                .iter()
                .filter(|r| r.server == s && r.pipeline == 1 && r.loops.is_none())
                .filter_map(|r| Some((r.connections as f64, metric(r.ok()?)?)))
                .filter(|(_, y)| *y > 0.0)
                .collect();
            (s, pts)
        })
        .collect();
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (lo, hi) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if hi <= 0.0 {
        return Ok(());
    }
    let xmax =
        results.runs.iter().filter(|r| r.loops.is_none()).map(|r| r.connections).max().unwrap_or(1).max(2) as f64;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(36).y_label_area_size(64);
    let x = (0.8..xmax * 1.25).log_scale();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("connections (pipeline 1)")
                .y_desc(title)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") })
                .draw()
                .map_err(e)?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(e)?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(e)?;
        }};
    }
    if log_y {
        draw!(builder.build_cartesian_2d(x, (lo * 0.7..hi * 1.5).log_scale()).map_err(e)?);
    } else {
        draw!(builder.build_cartesian_2d(x, 0.0..hi * 1.15).map_err(e)?);
    }
    root.present().map_err(|e| e.to_string())
}

/// Requests/s of the multi-core points against loops: a line per server
/// family (`epoll-t`, `tokio-multi-w`) and point. Nothing when there are none.
fn plot_loops(results: &Results, path: &Path) -> Result<(), String> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results.runs.iter().filter(|r| r.loops.is_some()) {
        let (Some(n), Some(report)) = (r.loops, r.ok()) else { continue };
        let family = r.server.trim_end_matches(|c: char| c.is_ascii_digit());
        let label = format!("{family}N {}x{}", r.connections, r.pipeline);
        let point = (n as f64, report.requests_per_sec);
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, pts)) => pts.push(point),
            None => series.push((label, vec![point])),
        }
    }
    for (_, pts) in &mut series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(0.0, f64::max);
    if ymax <= 0.0 {
        return Ok(());
    }
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("requests/s against loops (unpinned)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0.5..xmax + 0.5, 0.0..ymax * 1.15)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("loops (epoll --threads) / tokio workers")
        .y_desc("requests/s")
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(|e| e.to_string())
}

/// Writes every output file under `dir`; returns the Markdown tables.
pub fn write_all(results: &Results, dir: &Path) -> Result<String, String> {
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    write("results.json", &json)?;
    write("results.csv", &csv(results))?;
    let md = markdown(results);
    write("results.md", &md)?;
    plot(results, &dir.join("requests_per_sec.svg"), "requests/s", |r| Some(r.requests_per_sec), false)?;
    plot(results, &dir.join("p99_latency_us.svg"), "p99 latency (µs)", |r| Some(r.p99_us), true)?;
    plot(
        results,
        &dir.join("server_cpu_us_per_request.svg"),
        "server CPU µs / request",
        |r| r.server_cpu_us_per_request,
        false,
    )?;
    plot_loops(results, &dir.join("requests_per_sec_vs_loops.svg"))?;
    Ok(md)
}

#[cfg(test)]
mod test {
    use super::*;

    fn run(server: &str, connections: usize, pipeline: usize, cpu: f64, rps: f64, p99: f64) -> RunResult {
        let mut r = RunResult::new(server, connections, pipeline);
        r.report = Some(LoadReport {
            connections,
            pipeline,
            requests: 1000,
            requests_per_sec: rps,
            p99_us: p99,
            server_cpu_us_per_request: Some(cpu),
            ..LoadReport::default()
        });
        r
    }

    #[test]
    fn goals_are_ratios_of_the_same_run() {
        let mut res = Results::new(true, Duration::ZERO, Duration::ZERO, None, None);
        res.runs = vec![
            run("floor", 16, 16, 1.0, 100.0, 10.0),
            run("epoll", 16, 16, 1.2, 95.0, 10.0),
            run("tokio-current", 16, 16, 1.6, 80.0, 10.0),
            run("floor", 16, 1, 5.0, 100.0, 10.0),
            run("epoll", 16, 1, 6.0, 100.0, 10.0),
            run("epoll", 1000, 1, 6.0, 100.0, 50.0),
            run("tokio-current", 1000, 1, 6.0, 100.0, 40.0),
        ];
        let mut failed = run("floor", 1000, 1, 1.0, 1.0, 1.0);
        failed.fail("down".into());
        res.runs.push(failed);
        res.evaluate_goals();
        let verdict = |i: usize| (res.goals[i].measured, res.goals[i].verdict.as_str());
        assert_eq!(verdict(0).1, "met", "1.2 <= 1.25");
        assert_eq!(verdict(1).1, "met", "1.2 / 1.6 = 0.75 <= 0.8");
        assert_eq!(verdict(2).1, "met", "0.95 >= 0.9");
        assert_eq!(verdict(3).1, "missed by 4%", "6/5 = 1.2 vs 1.15");
        assert_eq!(verdict(4), (None, "not measured"), "a failed run is not a measurement");
        assert_eq!(verdict(5).1, "missed by 25%", "p99 50 vs 40");
        assert!(markdown(&res).contains("| epoll | 16x16 | 95 |"));
        res.runs.push(run("uring", 16, 1, 4.7, 100.0, 10.0));
        res.runs.push(run("uring", 16, 16, 1.3, 90.0, 10.0));
        res.evaluate_goals();
        fn named<'a>(res: &'a Results, name: &str) -> &'a str {
            let goal = res.goals.iter().find(|g| g.goal == name).unwrap_or_else(|| panic!("no goal {name:?}"));
            goal.verdict.as_str()
        }
        assert_eq!(
            named(&res, "uring / floor server CPU per request, 16 conn x pipeline 1"),
            "missed by 4%",
            "4.7/5 vs 0.9"
        );
        assert_eq!(named(&res, "uring / epoll server CPU per request, 16 conn x pipeline 1"), "met", "4.7/6 = 0.78");
        assert_eq!(
            named(&res, "uring / epoll server CPU per request, 16 conn x pipeline 16"),
            "missed by 8%",
            "1.3/1.2"
        );
        assert_eq!(named(&res, "uring / epoll p99 latency, 1000 conn x pipeline 1"), "not measured");
        let mut starved = run("uring", 1000, 1, 0.0, 0.0, 0.0);
        starved.report.as_mut().unwrap().requests = 0;
        res.runs.push(starved);
        res.evaluate_goals();
        assert_eq!(
            named(&res, "uring / floor server CPU per request, 1000 conn x pipeline 1"),
            "not measured",
            "no answer"
        );
        assert_eq!(csv(&res).lines().count(), 1 + res.runs.len());
        let reports: Vec<LoadReport> = [3.0, 1.0, 2.0]
            .iter()
            .map(|&x| LoadReport { requests: 10, requests_per_sec: x, max_us: x, ..LoadReport::default() })
            .collect();
        let m = median(&reports).unwrap();
        assert_eq!((m.requests, m.requests_per_sec, m.max_us, m.server_cpu_us_per_request), (30, 2.0, 3.0, None));
    }

    #[test]
    fn multicore_goals_compare_two_loops_with_two_workers_and_one_loop() {
        let mut res = Results::new(true, Duration::ZERO, Duration::ZERO, None, None);
        let multi = |server: &str, loops, c, p, cpu, rps, p99| {
            let mut r = run(server, c, p, cpu, rps, p99);
            r.loops = Some(loops);
            r
        };
        res.runs = vec![
            multi("epoll-t1", 1, 16, 16, 0.50, 100.0, 1.0),
            multi("epoll-t2", 2, 16, 16, 0.54, 190.0, 1.0),
            multi("epoll-t2", 2, 1000, 1, 6.0, 140.0, 30.0),
            multi("tokio-multi-w2", 2, 1000, 1, 7.0, 100.0, 40.0),
        ];
        res.evaluate_goals();
        let goal = |name: &str| res.goals.iter().find(|g| g.goal.starts_with(name)).unwrap();
        let rps = goal("epoll --threads 2 / tokio-multi 2 workers requests/s");
        assert_eq!((rps.measured, rps.verdict.as_str()), (Some(1.4), "met"));
        assert_eq!(goal("epoll --threads 2 / tokio-multi 2 workers p99").verdict, "met", "30 / 40");
        let cpu = goal("epoll --threads 2 / --threads 1 server CPU");
        assert!((cpu.measured.unwrap() - 1.08).abs() < 1e-9 && cpu.verdict == "met", "{cpu:?}");
        assert!(markdown(&res).contains("unpinned"));
        assert!(csv(&res).lines().nth(1).unwrap().contains(",1,\"\""), "the loops column");
        let dir = std::env::temp_dir().join(format!("kvio-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        plot_loops(&res, &dir.join("loops.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("loops.svg")).unwrap();
        assert!(svg.contains("epoll-tN 16x16") && svg.contains("tokio-multi-wN 1000x1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
