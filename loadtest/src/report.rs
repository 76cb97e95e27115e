//! Results of a run: the JSON document, the stdout table, and the latency percentile plot
//! (hand-written SVG, x = percentile on a log "nines" scale, y = latency), which can also
//! overlay several result files for side-by-side comparison.

use crate::config::Settings;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Percentiles of one histogram, in microseconds (histograms hold ns unless noted).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Pcts {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Pcts {
    /// `div` converts histogram units to microseconds.
    pub(crate) fn of(h: &Histogram<u64>, div: f64) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 / div;
        Pcts {
            count: h.len(),
            mean: h.mean() / div,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / div,
        }
    }
}

/// (nines, latency µs) points: nines = -log10(1 - q).
pub(crate) fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = 120;
    (0..=steps)
        .map(|i| {
            let n = max_nines * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-n);
            (n, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ServerStats {
    pub(crate) pid: u32,
    pub(crate) rss_before_connect_kb: u64,
    pub(crate) rss_after_connect_kb: u64,
    pub(crate) rss_peak_kb: u64,
    pub(crate) rss_final_kb: u64,
    /// (RSS after connect − RSS before) / connected clients.
    pub(crate) rss_per_conn_bytes: f64,
    pub(crate) cpu_pct_avg: f64,
    pub(crate) cpu_pct_peak: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    pub(crate) connected: u64,
    pub(crate) acked: u64,
    pub(crate) published_per_s: f64,
    pub(crate) received_per_s: f64,
    pub(crate) server_rss_kb: Option<u64>,
    pub(crate) server_cpu_pct: Option<f64>,
    pub(crate) self_cpu_pct: f64,
    /// Normal clients' latency of the events received during this second (µs), if any.
    #[serde(default)]
    pub(crate) p50_us: Option<u64>,
    #[serde(default)]
    pub(crate) p99_us: Option<u64>,
    #[serde(default)]
    pub(crate) max_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SlowStats {
    pub(crate) clients: u64,
    pub(crate) delivered_total: u64,
    pub(crate) delivered_window: u64,
    pub(crate) expected_window: u64,
    pub(crate) latency_us: Pcts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) name: String,
    pub(crate) url: String,
    /// Where the publishers connected (absent in files from before `--publish-url`).
    #[serde(default)]
    pub(crate) publish_url: String,
    pub(crate) settings: Option<Settings>,
    pub(crate) clients_connected: u64,
    pub(crate) clients_acked: u64,
    pub(crate) connect_failed: u64,
    pub(crate) connect_us: Pcts,
    pub(crate) all_connected_s: Option<f64>,
    pub(crate) all_acked_s: Option<f64>,
    pub(crate) connect_rate_per_s: f64,
    pub(crate) published_events: u64,
    pub(crate) published_ops: u64,
    pub(crate) publish_rate_per_s: f64,
    pub(crate) measured_s: f64,
    /// Start of the measured window, ns since the Unix epoch (lets outside samplers, e.g.
    /// of other processes' CPU, cut out the same window).
    #[serde(default)]
    pub(crate) window_start_unix_ns: u64,
    pub(crate) expected_window: u64,
    pub(crate) delivered_window: u64,
    pub(crate) expected_per_s: f64,
    pub(crate) delivered_per_s: f64,
    pub(crate) delivery_ratio: f64,
    pub(crate) expected_total: u64,
    pub(crate) delivered_total: u64,
    pub(crate) latency_us: Pcts,
    /// (nines, µs) points of the normal clients' latency distribution.
    pub(crate) latency_curve: Vec<(f64, f64)>,
    pub(crate) slow: SlowStats,
    pub(crate) gaps: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) unexpected: u64,
    pub(crate) conflated: u64,
    pub(crate) pings_received: u64,
    pub(crate) bytes_received: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) closes: BTreeMap<String, u64>,
    pub(crate) self_cpu_pct: f64,
    pub(crate) server: Option<ServerStats>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) failures: Vec<String>,
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn lat(p: &Pcts) -> String {
    format!(
        "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0} µs  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    )
}

/// The human-readable summary printed on stdout.
pub(crate) fn table(r: &Results) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<22} {v}");
    };
    row("run", format!("{} against {}", r.name, r.url));
    if !r.publish_url.is_empty() && r.publish_url != r.url {
        row("publishing to", r.publish_url.clone());
    }
    row(
        "clients",
        format!(
            "{} connected, {} subscribed, {} failed",
            r.clients_connected, r.clients_acked, r.connect_failed
        ),
    );
    row("connect time", lat(&r.connect_us));
    let opt = |v: Option<f64>| v.map_or_else(|| "never".into(), |v| format!("{v:.2} s"));
    row(
        "all connected / acked",
        format!(
            "{} / {}  ({} conn/s)",
            opt(r.all_connected_s),
            opt(r.all_acked_s),
            human(r.connect_rate_per_s)
        ),
    );
    row(
        "published",
        format!(
            "{} events in {} ops ({}/s)",
            r.published_events,
            r.published_ops,
            human(r.publish_rate_per_s)
        ),
    );
    row(
        "delivered (window)",
        format!(
            "{}/s of {}/s expected = {:.4}  ({} of {} over {:.1} s)",
            human(r.delivered_per_s),
            human(r.expected_per_s),
            r.delivery_ratio,
            r.delivered_window,
            r.expected_window,
            r.measured_s
        ),
    );
    row(
        "delivered (total)",
        format!("{} of {} expected", r.delivered_total, r.expected_total),
    );
    row("latency", lat(&r.latency_us));
    if r.slow.clients > 0 {
        row(
            "slow clients",
            format!(
                "{} received {} ({} of {} in window)",
                r.slow.clients,
                r.slow.delivered_total,
                r.slow.delivered_window,
                r.slow.expected_window
            ),
        );
        row("slow latency", lat(&r.slow.latency_us));
    }
    row(
        "order",
        format!(
            "gaps {} (missing {}), dups {}, out-of-order {}, unexpected {}, conflated {}",
            r.gaps, r.missing, r.duplicates, r.out_of_order, r.unexpected, r.conflated
        ),
    );
    row(
        "errors",
        if r.errors.is_empty() {
            "none".into()
        } else {
            format!("{:?}", r.errors)
        },
    );
    row(
        "closes",
        if r.closes.is_empty() {
            "none".into()
        } else {
            format!("{:?}", r.closes)
        },
    );
    row(
        "loadtest cpu",
        format!("{:.0}% of one core", r.self_cpu_pct),
    );
    if let Some(sv) = &r.server {
        row(
            "server rss",
            format!(
                "before {:.1} MB, after connect {:.1} MB, peak {:.1} MB, final {:.1} MB, {:.0} B/conn",
                sv.rss_before_connect_kb as f64 / 1024.0,
                sv.rss_after_connect_kb as f64 / 1024.0,
                sv.rss_peak_kb as f64 / 1024.0,
                sv.rss_final_kb as f64 / 1024.0,
                sv.rss_per_conn_bytes
            ),
        );
        row(
            "server cpu",
            format!(
                "avg {:.0}%, peak {:.0}% of one core",
                sv.cpu_pct_avg, sv.cpu_pct_peak
            ),
        );
    }
    s
}

/// Writes `results` as JSON and its latency plot next to it (`NAME-latency.svg`).
pub(crate) fn write(results: &Results, out: &Path) -> Result<std::path::PathBuf> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("writing {}", out.display()))?;
    let stem = out.file_stem().map_or_else(
        || results.name.clone(),
        |s| s.to_string_lossy().into_owned(),
    );
    let svg = out.with_file_name(format!("{stem}-latency.svg"));
    std::fs::write(
        &svg,
        svg_plot(&[(results.name.clone(), results.latency_curve.clone())]),
    )
    .with_context(|| format!("writing {}", svg.display()))?;
    Ok(svg)
}

/// `loadtest plot a.json b.json --out x.svg`.
pub(crate) fn plot_files(inputs: &[std::path::PathBuf], out: &Path) -> Result<()> {
    let mut series = Vec::new();
    for p in inputs {
        let r: Results = serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?;
        let label = p
            .file_stem()
            .map_or(r.name.clone(), |s| s.to_string_lossy().into_owned());
        series.push((label, r.latency_curve));
    }
    std::fs::write(out, svg_plot(&series)).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn nice_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders latency-by-percentile curves; y in ms if the largest value exceeds 10 ms.
pub(crate) fn svg_plot(series: &[(String, Vec<(f64, f64)>)]) -> String {
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let (w, h, ml, mr, mt, mb) = (900.0, 520.0, 80.0, 30.0, 40.0, 60.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let ymax_us = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let (unit, div) = if ymax_us > 10_000.0 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let step = nice_step(ymax_us / div);
    let ytop = (ymax_us / div / step).ceil().max(1.0) * step;
    let x = |n: f64| ml + n / xmax * pw;
    let y = |v: f64| mt + ph - (v / div) / ytop * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Latency by percentile (publisher stamp → client receipt)</text>"#,
        w / 2.0
    );
    // Grid and axes.
    let mut n = 0.0;
    while n <= xmax + 1e-9 {
        let label = if n == 0.0 {
            "0%".to_string()
        } else {
            format!(
                "{:.*}%",
                (n as usize).saturating_sub(2),
                100.0 - 100.0 * 10f64.powf(-n)
            )
        };
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(n),
            mt,
            mt + ph,
            mt + ph + 18.0,
            label
        );
        n += 1.0;
    }
    let mut v = 0.0;
    while v <= ytop + 1e-9 {
        let yy = mt + ph - v / ytop * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 6.0,
            yy + 4.0,
            v
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        ml + pw / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">latency ({unit})</text>"#,
        mt + ph / 2.0
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let d: Vec<String> = pts
            .iter()
            .map(|&(n, us)| format!("{:.1},{:.1}", x(n), y(us)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            d.join(" ")
        );
        let ly = mt + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text>"#,
            ml + 12.0,
            ml + 36.0,
            ml + 42.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_all_series() {
        let mut h = crate::stats::new_hist();
        for v in 1..10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let c = curve(&h);
        assert!(c.last().unwrap().1 >= 9_000.0);
        let svg = svg_plot(&[("a".into(), c.clone()), ("b<".into(), c)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("b&lt;") && svg.contains("99.9%"));
    }
}
