//! Tables (markdown, printed and saved) and the SVG chart.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::Measurement;
use crate::modes::Mode;
use crate::workloads::Unit;

/// The targets for FUSE mode / symlink mode (higher is better), and the best FUSE
/// peer's ratio to the native tree measured elsewhere (for reference).
pub const TARGETS: &[(&str, &str, f64, &str)] = &[
    ("stat", "cold", 0.5, "0.27 (mergerfs 2.33)"),
    ("stat", "warm", 0.9, "0.78 (fuse-overlayfs 1.10)"),
    ("readdir", "cold", 0.6, "0.49 (mergerfs)"),
    ("readdir", "warm", 0.8, "0.13 (fuse-overlayfs 1.10)"),
    ("small-read", "cold", 0.85, "0.74 (fuse-overlayfs 1.10)"),
    ("small-read", "warm", 0.5, "0.05 (fuse-overlayfs 2.0)"),
    ("seq-read", "cold", 0.9, "0.79 (fuse-overlayfs 2.0)"),
    ("seq-read", "warm", 0.95, "1.01 (fuse-overlayfs 2.0)"),
    ("rand-read", "warm", 0.95, "0.99 (fuse-overlayfs 2.0)"),
    ("exec", "warm", 0.95, "0.89 (fuse-overlayfs 2.0)"),
    (
        "create",
        "warm",
        0.15,
        "0.03 (mergerfs, fuse-overlayfs 2.0)",
    ),
    ("rename", "warm", 0.15, "0.03 (fuse-overlayfs 2.0)"),
];

pub fn fmt_val(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_nan() {
        "-".into()
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 0.01 {
        format!("{r:.2}")
    } else {
        format!("{r:.4}")
    }
}

pub fn header(summary: &str) -> String {
    format!("{summary}\n")
}

type Key = (String, String);

/// Rows in workload order: (workload, variant) -> mode -> measurement.
fn rows(results: &[Measurement]) -> Vec<(Key, BTreeMap<Mode, &Measurement>)> {
    let mut out: Vec<(Key, BTreeMap<Mode, &Measurement>)> = Vec::new();
    for m in results {
        let key = (m.workload.clone(), m.variant.clone());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, map)) => {
                map.insert(m.mode, m);
            }
            None => out.push((key, BTreeMap::from([(m.mode, m)]))),
        }
    }
    out
}

/// `mode` relative to `base`, oriented so that higher is better.
pub fn ratio(m: Option<&&Measurement>, base: Option<&&Measurement>) -> f64 {
    match (m.and_then(|m| m.value), base.and_then(|b| b.value)) {
        (Some(v), Some(b)) if v > 0.0 && b > 0.0 => {
            if m.is_some_and(|m| m.unit.higher_is_better()) {
                v / b
            } else {
                b / v
            }
        }
        _ => f64::NAN,
    }
}

fn row_title(m: &Measurement) -> String {
    match m.workload.as_str() {
        "mount" => format!(
            "mount-to-ready, {} litefile",
            if m.variant == "redhat" {
                "RedHat (42-entry)"
            } else {
                "2,000-entry"
            }
        ),
        _ => format!("{}, {}", m.title, m.variant),
    }
}

pub fn tables(results: &[Measurement], modes: &[Mode]) -> String {
    let rows = rows(results);
    let mut s = String::new();
    let head = |s: &mut String, first: &str| {
        s.push_str(&format!("| {first} |"));
        for m in modes {
            s.push_str(&format!(" {} |", m.name()));
        }
        s.push_str("\n|---|");
        for _ in modes {
            s.push_str("---:|");
        }
        s.push('\n');
    };

    s.push_str("### Results (rate, or ms where marked; warm = median of repetitions)\n\n");
    head(&mut s, "workload (unit)");
    let mut errors = Vec::new();
    for (_, map) in &rows {
        let any = map.values().next().copied();
        let Some(any) = any else { continue };
        s.push_str(&format!("| {} ({}) |", row_title(any), any.unit.label()));
        for mode in modes {
            match map.get(mode) {
                Some(m) => match (m.value, &m.error) {
                    (Some(v), _) => s.push_str(&format!(" {} |", fmt_val(v))),
                    (None, Some(e)) => {
                        errors.push(format!("{} on {}: {e}", row_title(m), mode.name()));
                        s.push_str(" fail* |")
                    }
                    _ => s.push_str(" - |"),
                },
                None => s.push_str(" - |"),
            }
        }
        s.push('\n');
    }
    if !errors.is_empty() {
        s.push_str("\n\\* failures:\n");
        for e in &errors {
            s.push_str(&format!("- {e}\n"));
        }
    }

    for (base, title) in [
        (
            Mode::Symlink,
            "Ratio to symlink mode (same run; higher is better; ms rows inverted)",
        ),
        (
            Mode::Native,
            "Ratio to the native tree (same run; higher is better; ms rows inverted)",
        ),
    ] {
        if !modes.contains(&base) {
            continue;
        }
        s.push_str(&format!("\n### {title}\n\n"));
        head(&mut s, "workload");
        for (_, map) in &rows {
            let Some(any) = map.values().next().copied() else {
                continue;
            };
            s.push_str(&format!("| {} |", row_title(any)));
            for mode in modes {
                s.push_str(&format!(
                    " {} |",
                    fmt_ratio(ratio(map.get(mode), map.get(&base)))
                ));
            }
            s.push('\n');
        }
    }

    // Targets.
    let find = |w: &str, v: &str, mode: Mode| -> Option<&Measurement> {
        results
            .iter()
            .find(|m| m.workload == w && m.variant == v && m.mode == mode)
    };
    if modes.contains(&Mode::Fuse) && modes.contains(&Mode::Symlink) {
        s.push_str("\n### FUSE mode against the issue's targets\n\n");
        s.push_str("| workload | FUSE / symlink | target | | FUSE / native | best FUSE peer / native, this run | issue's best peer / native |\n|---|---:|---:|---|---:|---:|---|\n");
        for (w, v, target, peer) in TARGETS {
            let f = find(w, v, Mode::Fuse);
            let r = ratio(f.as_ref(), find(w, v, Mode::Symlink).as_ref());
            let rn = ratio(f.as_ref(), find(w, v, Mode::Native).as_ref());
            let mut best = (f64::NAN, "");
            for p in [Mode::FuseOverlayfs, Mode::Mergerfs] {
                let x = ratio(find(w, v, p).as_ref(), find(w, v, Mode::Native).as_ref());
                if !x.is_nan() && (best.0.is_nan() || x > best.0) {
                    best = (x, p.name());
                }
            }
            let verdict = verdict(r, *target);
            let title = f.map(|m| m.title.clone()).unwrap_or_else(|| w.to_string());
            s.push_str(&format!(
                "| {title}, {v} | {} | ≥ {target} | {verdict} | {} | {} {} | {peer} |\n",
                fmt_ratio(r),
                fmt_ratio(rn),
                fmt_ratio(best.0),
                best.1
            ));
        }
        // Mount-to-ready flatness.
        for mode in [Mode::Fuse, Mode::Symlink] {
            let a = find("mount", "redhat", mode).and_then(|m| m.value);
            let b = find("mount", "2000", mode).and_then(|m| m.value);
            if let (Some(a), Some(b)) = (a, b) {
                let g = b / a;
                let verdict = if mode != Mode::Fuse {
                    "(baseline: grows)"
                } else if g <= 1.1 {
                    "met"
                } else {
                    "**missed**"
                };
                s.push_str(&format!(
                    "| mount-to-ready 2,000 / 42 entries, {} | {g:.2}x ({} ms / {} ms) | ≤ 1.1x | {verdict} | | | n/a |\n",
                    mode.name(),
                    fmt_val(b),
                    fmt_val(a)
                ));
            }
        }
        // The same targets for the diagnostic FUSE variants measured in this run.
        for alt in [
            Mode::FuseBase,
            Mode::FuseDev,
            Mode::FuseNoopen,
            Mode::FuseNopt,
        ] {
            if !modes.contains(&alt) {
                continue;
            }
            s.push_str(&format!(
                "\n#### {} against the same targets\n\n| workload | {} / symlink | target | |\n|---|---:|---:|---|\n",
                alt.name(),
                alt.name()
            ));
            for (w, v, target, _) in TARGETS {
                let f = find(w, v, alt);
                let r = ratio(f.as_ref(), find(w, v, Mode::Symlink).as_ref());
                let verdict = verdict(r, *target);
                let title = f.map(|m| m.title.clone()).unwrap_or_else(|| w.to_string());
                s.push_str(&format!(
                    "| {title}, {v} | {} | ≥ {target} | {verdict} |\n",
                    fmt_ratio(r)
                ));
            }
            s.push('\n');
        }
    }
    s
}

/// A ratio against its target: met, missed, or not measured.
fn verdict(r: f64, target: f64) -> &'static str {
    if r.is_nan() {
        "n/a"
    } else if r >= target {
        "met"
    } else {
        "**missed**"
    }
}

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Native => RGBColor(120, 120, 120),
        Mode::Symlink => RGBColor(0, 0, 0),
        Mode::Fuse => RGBColor(214, 39, 40),
        Mode::FuseNopt => RGBColor(255, 152, 150),
        Mode::FuseNoopen => RGBColor(148, 103, 189),
        Mode::FuseDev => RGBColor(140, 86, 75),
        Mode::FuseBase => RGBColor(255, 127, 14),
        Mode::Overlayfs => RGBColor(31, 119, 180),
        Mode::FuseOverlayfs => RGBColor(44, 160, 44),
        Mode::Mergerfs => RGBColor(148, 103, 189),
    }
}

/// Horizontal grouped bars: each workload's ratio to symlink mode per mode (log scale;
/// 1 = as fast as symlink mode), with FUSE mode's target marked.
pub fn chart(
    results: &[Measurement],
    modes: &[Mode],
    path: &Path,
    tag: &str,
) -> Result<(), String> {
    let rows = rows(results);
    let shown: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Symlink)
        .collect();
    if rows.is_empty() || shown.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let row_h = 12 + 9 * shown.len() as u32;
    let height = 120 + row_h * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (lo, hi) = (1e-4f64, 300f64);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("statelite-bench ({tag}): throughput relative to symlink mode (log scale, higher is better)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..(n as f64 - 0.5))
        .map_err(|x| e(&x))?;
    let labels: Vec<String> = rows
        .iter()
        .map(|(_, map)| {
            map.values()
                .next()
                .map(|m| row_title(m))
                .unwrap_or_default()
        })
        .collect();
    let nrows = n;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y: &f64| {
            let i = y.round();
            if (y - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            // Top row first.
            let idx = nrows as i64 - 1 - i as i64;
            labels.get(idx as usize).cloned().unwrap_or_default()
        })
        .disable_y_mesh()
        .x_desc("mode / symlink mode (ms rows: symlink ms / mode ms)")
        .x_label_formatter(&|x: &f64| format!("{x}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|x| e(&x))?;
    let k = shown.len() as f64;
    let bar = 0.8 / k;
    for (j, mode) in shown.iter().enumerate() {
        let c = color(*mode);
        let mut bars = Vec::new();
        for (i, (_, map)) in rows.iter().enumerate() {
            let r = ratio(map.get(mode), map.get(&Mode::Symlink));
            if r.is_nan() {
                continue;
            }
            let y = (n - 1 - i) as f64;
            let top = y + 0.4 - bar * j as f64;
            bars.push(Rectangle::new(
                [(lo, top), (r.clamp(lo, hi), top - bar * 0.9)],
                c.filled(),
            ));
        }
        chart
            .draw_series(bars)
            .map_err(|x| e(&x))?
            .label(mode.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    // Parity line and FUSE targets.
    chart
        .draw_series(LineSeries::new(
            vec![(1.0, -0.5), (1.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        ))
        .map_err(|x| e(&x))?;
    let mut marks = Vec::new();
    for (i, ((w, v), _)) in rows.iter().enumerate() {
        if let Some((_, _, t, _)) = TARGETS.iter().find(|(tw, tv, _, _)| tw == w && tv == v) {
            let y = (n - 1 - i) as f64;
            marks.push(PathElement::new(
                vec![(*t, y - 0.45), (*t, y + 0.45)],
                RGBColor(214, 39, 40).stroke_width(3),
            ));
        }
    }
    chart
        .draw_series(marks)
        .map_err(|x| e(&x))?
        .label("FUSE target")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x + 6, y - 6), (x + 6, y + 6)],
                RGBColor(214, 39, 40).stroke_width(3),
            )
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    let _ = Unit::Ms;
    Ok(())
}
