//! `sharded-router bench --plot FILE.svg`: the ratio table and the latency
//! percentiles as plain SVG bar charts (written by hand: no plotting dependency).

use std::fmt::Write;

use sharded_router_workloads::Percentiles;

const LABEL_W: f64 = 470.0;
const CHART_W: f64 = 520.0;
const WIDTH: f64 = LABEL_W + CHART_W + 40.0;
const BAR_H: f64 = 11.0;
const COLORS: [&str; 5] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn header(svg: &mut String, height: f64, title: &str) {
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
}

fn legend(svg: &mut String, names: &[&str], y: f64) {
    let mut x = 10.0;
    for (k, name) in names.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            y - 9.0,
            COLORS[k % COLORS.len()],
            x + 16.0,
            y,
            escape(name)
        );
        x += 30.0 + 7.0 * name.len() as f64;
    }
}

fn vline(svg: &mut String, x: f64, top: f64, bottom: f64, label: &str, dashed: bool) {
    let dash = if dashed { " stroke-dasharray=\"4 3\"" } else { "" };
    let _ = writeln!(
        svg,
        "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#888\"{dash}/>\
         <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
        top - 4.0,
        escape(label)
    );
}

/// One horizontal bar (`None`: a gap with "n/a").
fn bar(svg: &mut String, y: f64, width: Option<f64>, color: &str, text: &str) {
    match width {
        Some(w) => {
            let _ = writeln!(
                svg,
                "<rect x=\"{LABEL_W}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR_H}\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{}</text>",
                w.max(0.5),
                LABEL_W + w.max(0.5) + 3.0,
                y + BAR_H - 2.0,
                escape(text)
            );
        }
        None => {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{:.1}\" font-size=\"9\" fill=\"#888\">n/a</text>",
                LABEL_W + 3.0,
                y + BAR_H - 2.0
            );
        }
    }
}

/// The ratio table: per case, one bar per ratio named in `names` (rates, e.g.
/// ours/hand-rolled: above 1 means the first is faster), on a linear scale with a
/// line at 1.
pub fn ratios(names: &[&str], cases: &[(String, Vec<Option<f64>>)]) -> String {
    let row_h = names.len() as f64 * BAR_H + 10.0;
    let top = 62.0;
    let height = top + row_h * cases.len() as f64 + 20.0;
    let max = cases.iter().flat_map(|(_, r)| r.iter().flatten().copied()).fold(1.2f64, f64::max).min(4.0);
    let scale = |v: f64| CHART_W * v.min(max) / max;
    let mut svg = String::new();
    header(&mut svg, height, "sharded-router bench: rate ratios from one run (medians of per-run ratios)");
    legend(&mut svg, names, 40.0);
    for (k, (label, values)) in cases.iter().enumerate() {
        let y = top + row_h * k as f64;
        let mid = y + names.len() as f64 * BAR_H / 2.0 + 4.0;
        let _ = writeln!(svg, "<text x=\"10\" y=\"{mid:.1}\">{}</text>", escape(label));
        for (j, v) in values.iter().take(names.len()).enumerate() {
            let text = v.map_or(String::new(), |v| format!("{v:.2}x"));
            bar(&mut svg, y + BAR_H * j as f64, v.map(scale), COLORS[j % COLORS.len()], &text);
        }
    }
    vline(&mut svg, LABEL_W + scale(1.0), top, height - 15.0, "1.0", true);
    vline(&mut svg, LABEL_W, top, height - 15.0, "0", false);
    svg.push_str("</svg>\n");
    svg
}

/// Latency percentiles: per case, per implementation, p50, p99 and p99.9 on a
/// logarithmic scale of microseconds.
pub fn latency(groups: &[(String, Vec<(&'static str, Percentiles)>)]) -> String {
    let names = ["p50", "p99", "p99.9"];
    let row_h = 3.0 * BAR_H + 6.0;
    let top = 62.0;
    let rows: usize = groups.iter().map(|(_, r)| r.len() + 1).sum();
    let height = top + row_h * rows as f64 + 20.0;
    let max_ns = groups.iter().flat_map(|(_, r)| r.iter().map(|(_, p)| p.p999)).max().unwrap_or(1).max(1);
    // From 1 µs to the decade above the largest p99.9.
    let decades = ((max_ns as f64 / 1e3).log10().ceil()).max(1.0);
    let scale = |ns: u64| CHART_W * ((ns as f64 / 1e3).max(1.0).log10() / decades);
    let mut svg = String::new();
    header(&mut svg, height, "sharded-router bench --latency: percentiles (log scale)");
    legend(&mut svg, &names, 40.0);
    let mut y = top;
    for (label, rows) in groups {
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            y + 14.0,
            escape(label)
        );
        y += row_h;
        for (name, p) in rows {
            let _ =
                writeln!(svg, "<text x=\"30\" y=\"{:.1}\">{}</text>", y + 1.5 * BAR_H + 4.0, escape(name));
            for (j, ns) in [p.p50, p.p99, p.p999].into_iter().enumerate() {
                let text = if ns >= 1_000_000 {
                    format!("{:.2} ms", ns as f64 / 1e6)
                } else {
                    format!("{:.1} µs", ns as f64 / 1e3)
                };
                bar(&mut svg, y + BAR_H * j as f64, Some(scale(ns)), COLORS[j], &text);
            }
            y += row_h;
        }
    }
    for d in 0..=decades as u32 {
        let us = 10f64.powi(d as i32);
        let label = if us >= 1000.0 { format!("{} ms", us / 1000.0) } else { format!("{us} µs") };
        vline(&mut svg, LABEL_W + CHART_W * d as f64 / decades, top, height - 15.0, &label, d > 0);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_and_escape_labels() {
        let names = ["x/y", "x/z", "w/y"];
        let svg = ratios(&names, &[("a <b> & c".to_owned(), vec![Some(1.5), None, Some(0.5)])]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("1.50x") && svg.contains("n/a"));
        assert!(names.iter().all(|n| svg.contains(&format!(">{n}</text>"))));
        assert_eq!(svg.matches("<rect x=\"470\"").count(), 2, "one bar per ratio that has a value");
        let p = Percentiles { count: 10, p50: 2_000, p99: 50_000, p999: 3_000_000, max: 4_000_000 };
        let svg = latency(&[("case".to_owned(), vec![("ours", p)])]);
        assert!(svg.contains("2.0 µs") && svg.contains("50.0 µs") && svg.contains("3.00 ms"));
        assert_eq!(svg.matches("<svg").count(), 1);
    }
}
