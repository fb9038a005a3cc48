//! Pictures of a run: one self-contained HTML page of SVG plots over simulated time
//! (`nefele-sim run --html FILE`), drawn from a [`Timeline`] with plotters' SVG
//! backend; and of a swarm (`nefele-sim swarm --html FILE`): its summary and its seeds. No script, no style sheet and nothing fetched: the page is the plots,
//! the run's summary lines and the list of faults.
//!
//! Plots: messages delivered per second by kind (the eight busiest kinds, the rest
//! summed) and dropped; agents up, with every fault marked; the federation's groups,
//! depth and top groups; placement's requests, placements and rejections per second;
//! reply latency p50 and p99; utilisation; violations so far.

use crate::swarm::{SeedOutcome, Summary};
use crate::timeline::{Sample, Timeline};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Why the page could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} plot: {message}")]
pub struct HtmlError {
    chart: String,
    message: String,
}

/// A named line: (simulated seconds, value) points.
type Series = (String, Vec<(f64, f64)>);

const WIDTH: u32 = 960;
const HEIGHT: u32 = 300;
/// Kinds of message plotted one by one; the others are summed as "other".
const KINDS_SHOWN: usize = 8;
/// Faults listed in the page's table at most.
const FAULTS_LISTED: usize = 500;

/// The page for a run titled `title`, with `summary` lines (the run's printed summary).
pub fn page(title: &str, summary: &[String], timeline: &Timeline) -> Result<String, HtmlError> {
    let samples = timeline.samples();
    let fault_times: Vec<f64> = timeline.faults().iter().map(|(t, _)| *t).collect();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: {WIDTH}px; margin: auto\">\n<h1>{t}</h1>\n<pre>",
        t = escape(title)
    );
    for line in summary {
        let _ = writeln!(html, "{}", escape(line));
    }
    html.push_str("</pre>\n");

    let charts: Vec<(&str, &str, Vec<Series>, bool)> = vec![
        (
            "Messages delivered per second, by kind",
            "messages/s",
            messages(samples),
            false,
        ),
        (
            "Agents up (faults marked in red)",
            "agents",
            vec![series("agents up", samples, |s| {
                Some(f64::from(s.live_agents))
            })],
            true,
        ),
        (
            "Federation (first instance, as of its last valid check)",
            "count",
            vec![
                series("groups", samples, |s| Some(s.groups as f64)),
                series("depth", samples, |s| Some(s.depth as f64)),
                series("top groups", samples, |s| Some(s.top_groups as f64)),
            ],
            true,
        ),
        ("Placement", "requests/s", placement(samples), false),
        (
            "Reply latency of the requests answered in each interval",
            "ms",
            vec![
                series("p50", samples, |s| s.latency_p50_ms),
                series("p99", samples, |s| s.latency_p99_ms),
            ],
            false,
        ),
        (
            "Utilisation of live hosts (committed over capacity)",
            "%",
            vec![
                series("cpu", samples, |s| s.cpu_utilization.map(|u| u * 100.0)),
                series("memory", samples, |s| {
                    s.memory_utilization.map(|u| u * 100.0)
                }),
            ],
            false,
        ),
        (
            "Invariant violations so far",
            "violations",
            vec![series("violations", samples, |s| Some(s.violations as f64))],
            true,
        ),
    ];
    for (name, unit, lines, marks) in charts {
        let marks = if marks { &fault_times[..] } else { &[] };
        let svg = chart(unit, &lines, marks).map_err(|message| HtmlError {
            chart: name.to_owned(),
            message,
        })?;
        let _ = write!(html, "<h2>{}</h2>\n{svg}\n", escape(name));
    }

    let faults = timeline.faults();
    let _ = write!(html, "<h2>Faults ({})</h2>\n<table>\n", faults.len());
    for (t, text) in faults.iter().take(FAULTS_LISTED) {
        let _ = writeln!(html, "<tr><td>{t:.3} s</td><td>{}</td></tr>", escape(text));
    }
    if faults.len() > FAULTS_LISTED {
        let _ = writeln!(
            html,
            "<tr><td>…</td><td>{} more</td></tr>",
            faults.len() - FAULTS_LISTED
        );
    }
    html.push_str("</table>\n</body></html>\n");
    Ok(html)
}

/// The page of a swarm: its summary table, and every seed as a point (agents against
/// simulated seconds), green if it passed and red if it failed.
pub fn swarm_page(summary: &Summary, outcomes: &[SeedOutcome]) -> Result<String, HtmlError> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>nefele-sim swarm</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: {WIDTH}px; margin: auto\">\n\
         <h1>nefele-sim swarm</h1>\n<pre>{}</pre>\n<h2>Seeds: agents and simulated time (red: failed)</h2>\n",
        escape(&summary.to_string())
    );
    let x_max = outcomes
        .iter()
        .map(|o| f64::from(o.config.nodes))
        .fold(1.0, f64::max)
        * 1.05;
    let y_max = outcomes
        .iter()
        .map(|o| o.config.duration.as_secs_f64())
        .fold(1.0, f64::max)
        * 1.05;
    let mut svg = String::new();
    let drawn: Result<(), String> = (|| {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT * 3 / 2)).into_drawing_area();
        let mut c = axes(&root, (x_max, "agents"), (y_max, "simulated s"))?;
        let (pass, fail) = (RGBColor(40, 160, 60), RGBColor(220, 40, 40));
        c.draw_series(outcomes.iter().map(|o| {
            let color = if o.failed() { fail } else { pass };
            let at = (f64::from(o.config.nodes), o.config.duration.as_secs_f64());
            Circle::new(at, if o.failed() { 5 } else { 3 }, color.filled())
        }))
        .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })();
    drawn.map_err(|message| HtmlError {
        chart: "seeds".to_owned(),
        message,
    })?;
    html.push_str(&svg);
    html.push_str("\n</body></html>\n");
    Ok(html)
}

/// One value per sample, where it has one.
fn series(name: &str, samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Series {
    let points = samples
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t_s, v)))
        .collect();
    (name.to_owned(), points)
}

/// The time since the previous sample, in seconds (the first sample counts from 0).
fn intervals(samples: &[Sample]) -> impl Iterator<Item = (&Sample, f64)> {
    samples.iter().scan(0.0, |last, s| {
        let dt = (s.t_s - *last).max(1e-9);
        *last = s.t_s;
        Some((s, dt))
    })
}

/// Delivered messages per second of the busiest kinds, the rest, and drops.
fn messages(samples: &[Sample]) -> Vec<Series> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for s in samples {
        for (kind, n) in &s.delivered {
            *totals.entry(kind).or_default() += n;
        }
    }
    let mut busiest: Vec<(&str, u64)> = totals.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = busiest.iter().take(KINDS_SHOWN).map(|(k, _)| *k).collect();
    let mut out: Vec<Series> = shown
        .iter()
        .map(|kind| {
            let points = intervals(samples)
                .map(|(s, dt)| {
                    (
                        s.t_s,
                        s.delivered.get(kind).copied().unwrap_or(0) as f64 / dt,
                    )
                })
                .collect();
            ((*kind).to_owned(), points)
        })
        .collect();
    if busiest.len() > KINDS_SHOWN {
        let points = intervals(samples)
            .map(|(s, dt)| {
                let rest: u64 = s
                    .delivered
                    .iter()
                    .filter(|(k, _)| !shown.contains(k))
                    .map(|(_, n)| n)
                    .sum();
                (s.t_s, rest as f64 / dt)
            })
            .collect();
        out.push(("other".to_owned(), points));
    }
    let dropped = intervals(samples)
        .map(|(s, dt)| (s.t_s, s.dropped as f64 / dt))
        .collect();
    out.push(("dropped".to_owned(), dropped));
    out
}

/// Requests, placements and rejections per second.
fn placement(samples: &[Sample]) -> Vec<Series> {
    let rate = |name: &str, f: fn(&Sample) -> u64| {
        let mut previous = 0;
        let points = intervals(samples)
            .map(|(s, dt)| {
                let now = f(s);
                let per_s = now.saturating_sub(previous) as f64 / dt;
                previous = now;
                (s.t_s, per_s)
            })
            .collect();
        (name.to_owned(), points)
    };
    vec![
        rate("requested", |s| s.requests),
        rate("placed", |s| s.placed),
        rate("rejected", |s| s.rejected),
    ]
}

/// One line chart as an SVG element, with vertical marks at `marks` (seconds).
fn chart(unit: &str, lines: &[Series], marks: &[f64]) -> Result<String, String> {
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0f64, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut c = axes(&root, (x_max, "simulated s"), (y_max, unit))?;
        let mark = RGBColor(220, 40, 40).mix(0.25);
        c.draw_series(
            marks
                .iter()
                .map(|t| PathElement::new(vec![(*t, 0.0), (*t, y_max)], mark)),
        )
        .map_err(|e| e.to_string())?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A white chart filling `root`, from 0 to `x_max` and `y_max`, with its grid and
/// the axes' names drawn.
fn axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    (x_max, x_desc): (f64, &str),
    (y_max, y_desc): (f64, &str),
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut c = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::sim::Simulation;
    use crate::workload::WorkloadConfig;
    use std::time::Duration;

    #[test]
    fn a_run_s_page_has_every_plot_and_no_script() {
        let config = SimConfig {
            nodes: 60,
            duration: Duration::from_secs(8),
            workload: Some(WorkloadConfig {
                start: Duration::from_secs(2),
                rate_per_s: 20.0,
                ..WorkloadConfig::default()
            }),
            faults: vec![crate::scenario::parse_fault(
                r#"{ at = "3s", restart = { node = 7 }, duration = "1s" }"#,
            )
            .expect("a fault")],
            ..SimConfig::default()
        };
        let mut sim = Simulation::new(config).expect("valid");
        sim.record_timeline();
        sim.run(|_| {});
        let timeline = sim.timeline().expect("recorded");
        assert_eq!(timeline.samples().len(), 32);
        let html = page("test <run>", &["line & more".to_owned()], timeline).expect("drawn");
        assert_eq!(html.matches("<svg").count(), 7, "{html}");
        assert!(!html.contains("<script"));
        assert!(html.contains("test &lt;run&gt;") && html.contains("line &amp; more"));
        assert!(html.contains("restart n7"), "the fault list");
        assert!(html.contains("discovery."), "message kinds in the legend");
    }

    #[test]
    fn a_swarm_s_page_has_its_summary_and_a_point_per_seed() {
        let limits = crate::swarm::Limits {
            min_nodes: 10,
            max_nodes: 20,
            min_duration: Duration::from_secs(20),
            max_duration: Duration::from_secs(20),
            supervision: false,
            messaging: false,
        };
        let outcomes = crate::swarm::run_seeds(1..4, &limits, 1, &|_| {}, &|| true, &|_| {});
        let summary = Summary::of(&outcomes);
        let html = swarm_page(&summary, &outcomes).expect("drawn");
        assert!(html.contains("swarm: 3 seeds (1..=3)"), "{html}");
        assert_eq!(html.matches("<circle").count(), 3, "{html}");
        assert!(!html.contains("<script"));
    }
}
