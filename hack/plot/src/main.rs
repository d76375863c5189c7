//! Renders the demo timeline (hack/demo.sh → docs/demo/timeline.csv) as an
//! SVG chart: one panel per module with the simulated live sessions, what
//! the HPA wants, the replicas running, the ceiling and floor the operator
//! set, and when the tenant was capacity-limited or a ceiling ramped down.
//!
//!     tco-demo-plot <timeline.csv> <timeline.svg>

use std::{collections::BTreeMap, error::Error, fs};

use plotters::prelude::*;

/// One sample of one module (a CSV row).
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    phase: String,
    module: String,
    sessions_per_pod: f64,
    demand_replicas: f64,
    desired: Option<f64>,
    replicas: Option<f64>,
    ceiling: Option<f64>,
    floor: Option<f64>,
    limited: bool,
    ramping: bool,
}

fn parse(csv: &str) -> Result<Vec<Sample>, Box<dyn Error>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().ok_or("empty CSV")?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or_else(|| format!("no column {name:?} in the CSV"));
    let (t, phase, module, load, demand, desired, replicas, ceiling, floor, limited, ramping) = (
        col("t_s")?,
        col("phase")?,
        col("module")?,
        col("sessions_per_pod")?,
        col("demand_replicas")?,
        col("hpa_desired")?,
        col("replicas")?,
        col("ceiling")?,
        col("floor")?,
        col("capacity_limited")?,
        col("ramping_down")?,
    );
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |j: usize| f.get(j).and_then(|v| v.trim().parse::<f64>().ok());
        out.push(Sample {
            t: num(t).ok_or_else(|| format!("line {}: bad t_s", i + 2))?,
            phase: f.get(phase).unwrap_or(&"").to_string(),
            module: f.get(module).unwrap_or(&"").to_string(),
            sessions_per_pod: num(load).unwrap_or(0.0),
            demand_replicas: num(demand).unwrap_or(0.0),
            desired: num(desired),
            replicas: num(replicas),
            ceiling: num(ceiling),
            floor: num(floor),
            limited: f.get(limited).is_some_and(|v| v.trim() == "1"),
            ramping: f.get(ramping).is_some_and(|v| v.trim() == "1"),
        });
    }
    Ok(out)
}

/// Contiguous runs of `keep` as (from, to) times.
fn spans(samples: &[&Sample], keep: impl Fn(&Sample) -> bool) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut open: Option<f64> = None;
    for (i, s) in samples.iter().enumerate() {
        let next_t = samples.get(i + 1).map_or(s.t, |n| n.t);
        match (keep(s), open) {
            (true, None) => open = Some(s.t),
            (false, Some(from)) => {
                out.push((from, s.t));
                open = None;
            }
            _ => {}
        }
        if i + 1 == samples.len()
            && let Some(from) = open
        {
            out.push((from, next_t));
        }
    }
    out
}

/// Where each phase starts, in order of appearance.
fn phase_starts(samples: &[&Sample]) -> Vec<(f64, String)> {
    let mut out: Vec<(f64, String)> = Vec::new();
    for s in samples {
        if out.last().is_none_or(|(_, p)| *p != s.phase) {
            out.push((s.t, s.phase.clone()));
        }
    }
    out
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = match args.as_slice() {
        [_, i, o] => (i.clone(), o.clone()),
        _ => return Err("usage: tco-demo-plot <timeline.csv> <timeline.svg>".into()),
    };
    let samples = parse(&fs::read_to_string(&input)?)?;
    if samples.is_empty() {
        return Err(format!("{input}: no samples").into());
    }
    // Panels in order of first appearance, the video module first when present.
    let mut modules: Vec<String> = Vec::new();
    for s in &samples {
        if !modules.contains(&s.module) {
            modules.push(s.module.clone());
        }
    }
    modules.sort_by_key(|m| !m.contains("video"));
    let by_module: BTreeMap<&str, Vec<&Sample>> =
        modules.iter().map(|m| (m.as_str(), samples.iter().filter(|s| &s.module == m).collect())).collect();
    let t_max = samples.iter().map(|s| s.t).fold(0.0, f64::max).max(1.0);

    let panel_h = 430u32;
    let width = 1200u32;
    let header_h = 96u32;
    let root = SVGBackend::new(&output, (width, panel_h * modules.len() as u32 + header_h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(header_h);
    header.draw(&Text::new(
        "Tenant Capacity Operator demo: a compressed school day and holiday (tenant edu, namespace demo-edu)",
        (20, 12),
        ("sans-serif", 20).into_font().color(&BLACK),
    ))?;

    let ceiling_c = RGBColor(200, 30, 30);
    let floor_c = RGBColor(30, 90, 200);
    let desired_c = RGBColor(240, 140, 0);
    let replicas_c = RGBColor(20, 150, 60);
    let demand_c = RGBColor(90, 90, 90);
    let load_c = RGBColor(150, 60, 170);
    let limited_c = RGBColor(255, 210, 210);
    let ramping_c = RGBColor(205, 225, 250);

    // One legend for all panels, in rows of three under the title.
    let legend: [(&str, RGBColor, u32, bool); 8] = [
        ("Deployment replicas", replicas_c, 5, false),
        ("HPA desired replicas", desired_c, 2, false),
        ("demand: replicas needed at the sessions target", demand_c, 2, false),
        ("ceiling (HPA maxReplicas)", ceiling_c, 2, true),
        ("floor (HPA minReplicas)", floor_c, 2, true),
        ("load: live sessions per pod (right axis)", load_c, 1, true),
        ("CapacityLimited=True (shaded)", limited_c, 10, false),
        ("ceiling ramping down (shaded)", ramping_c, 10, false),
    ];
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    for (i, (label, color, width_px, dashed)) in legend.iter().enumerate() {
        let (x, y) = (30 + (i % 3) as i32 * 390, 46 + (i / 3) as i32 * 20);
        let style = color.stroke_width(*width_px);
        if *dashed {
            header.draw(&PathElement::new(vec![(x, y), (x + 10, y)], style))?;
            header.draw(&PathElement::new(vec![(x + 16, y), (x + 28, y)], style))?;
        } else {
            header.draw(&PathElement::new(vec![(x, y), (x + 28, y)], style))?;
        }
        header.draw(&Text::new(label.to_string(), (x + 36, y - 7), font.clone()))?;
    }
    let panels = body.split_evenly((modules.len(), 1));

    for (panel, module) in panels.iter().zip(&modules) {
        let rows = &by_module[module.as_str()];
        let y_top = rows
            .iter()
            .flat_map(|s| [s.ceiling, s.replicas, s.desired, Some(s.demand_replicas)])
            .flatten()
            .fold(1.0, f64::max);
        // Head room for the phase labels.
        let y_max = (y_top * 1.3).ceil();
        let load_max = rows.iter().map(|s| s.sessions_per_pod).fold(10.0, f64::max) * 1.3;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("module {module}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?
            .set_secondary_coord(0.0..t_max, 0.0..load_max);

        // Background: phases (alternating bands, labels staggered) and CapacityLimited spans.
        let starts = phase_starts(rows);
        for (i, (t0, _)) in starts.iter().enumerate() {
            let t1 = starts.get(i + 1).map_or(t_max, |(t, _)| *t);
            if i % 2 == 1 {
                chart.draw_series(std::iter::once(Rectangle::new([(*t0, 0.0), (t1, y_max)], RGBColor(242, 242, 242).filled())))?;
            }
        }
        for (a, b) in spans(rows, |s| s.limited) {
            chart.draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, y_top * 1.08)], limited_c.filled())))?;
        }
        for (a, b) in spans(rows, |s| s.ramping) {
            chart.draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, y_top * 1.08)], ramping_c.filled())))?;
        }
        chart
            .configure_mesh()
            .x_desc("time since the demo started (s)")
            .y_desc("replicas")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("live sessions per pod")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        for (i, (t0, name)) in starts.iter().enumerate() {
            let row = if i % 2 == 0 { 0.975 } else { 0.915 };
            chart.draw_series(std::iter::once(Text::new(
                name.replace('-', " "),
                (*t0 + t_max * 0.003, y_max * row),
                ("sans-serif", 12).into_font().color(&RGBColor(70, 70, 70)),
            )))?;
        }

        let series = |pick: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter().filter_map(|s| pick(s).map(|v| (s.t, v))).collect()
        };
        // Everything here changes in steps between samples: draw steps.
        let steps = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            let mut out = Vec::new();
            for (i, p) in pts.iter().enumerate() {
                if i > 0 {
                    out.push((p.0, pts[i - 1].1));
                }
                out.push(*p);
            }
            out
        };
        chart.draw_series(LineSeries::new(steps(series(|s| s.replicas)), replicas_c.mix(0.85).stroke_width(5)))?;
        // The HPA reports desiredReplicas 0 until its first computation: not a wish.
        chart.draw_series(LineSeries::new(steps(series(|s| s.desired.filter(|d| *d > 0.0))), desired_c.stroke_width(2)))?;
        chart.draw_series(LineSeries::new(steps(series(|s| Some(s.demand_replicas))), demand_c.stroke_width(2)))?;
        chart.draw_series(DashedLineSeries::new(steps(series(|s| s.ceiling)), 10, 6, ceiling_c.stroke_width(2)))?;
        chart.draw_series(DashedLineSeries::new(steps(series(|s| s.floor)), 10, 6, floor_c.stroke_width(2)))?;
        let load: Vec<(f64, f64)> = steps(rows.iter().map(|s| (s.t, s.sessions_per_pod)).collect());
        chart.draw_secondary_series(DashedLineSeries::new(load, 4, 3, load_c.stroke_width(1)))?;
    }
    root.present()?;
    eprintln!("wrote {output}: {} samples, modules {}", samples.len(), modules.join(", "));
    Ok(())
}
