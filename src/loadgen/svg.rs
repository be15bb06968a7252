//! Charts as self-contained SVG text (no scripts, no fonts or images fetched): the latency
//! percentile curve that `ringecho bench --svg` and `ringecho report --svg` write, and the
//! throughput bars with min–max whiskers that `make bench` puts in `latest.html`.
//!
//! Written by hand rather than with a plotting crate: two chart shapes, a few hundred lines,
//! text left to the viewer's own fonts, and nothing for the server library to build.
//!
//! The latency chart is laid out as HdrHistogram's plotter lays out a percentile
//! distribution: x is the percentile on a log scale of 1/(1−p), so 50%, 90%, 99%, 99.9% and
//! 99.99% are evenly spaced and the tail gets the room; y is the latency in µs, from 0.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Width and height of every chart, in SVG user units (pixels at 100%).
pub const WIDTH: f64 = 760.0;
/// See [`WIDTH`].
pub const HEIGHT: f64 = 420.0;

const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 76.0;
const BOTTOM: f64 = 56.0;

/// Line colours, told apart also by people with the common colour-vision deficiencies
/// (Okabe and Ito's palette).
pub const PALETTE: &[&str] = &[
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// The percentiles marked on the x axis: 50% … 99.99%.
pub const PERCENTILE_TICKS: &[(f64, &str)] = &[
    (0.5, "50%"),
    (0.9, "90%"),
    (0.99, "99%"),
    (0.999, "99.9%"),
    (0.9999, "99.99%"),
];

/// One latency curve: (percentile as a fraction, latency µs) points in increasing
/// percentile order, and what to call it.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend text.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// The largest latency recorded, µs (beyond the axis; said in the legend).
    pub max_us: f64,
}

impl Curve {
    /// The percentile curve of `hist` (values in ns) from 50% to 99.99%, sampled evenly on the
    /// chart's x axis.
    pub fn of(name: impl Into<String>, hist: &Histogram<u64>) -> Curve {
        const STEPS: usize = 240;
        let (lo, hi) = (x_of(0.5), x_of(0.9999));
        let points = if hist.is_empty() {
            Vec::new()
        } else {
            (0..=STEPS)
                .map(|i| {
                    let x = lo + (hi - lo) * i as f64 / STEPS as f64;
                    let p = 1.0 - 10f64.powf(-x);
                    (p, hist.value_at_quantile(p) as f64 / 1000.0)
                })
                .collect()
        };
        Curve {
            name: name.into(),
            points,
            max_us: if hist.is_empty() {
                0.0
            } else {
                hist.max() as f64 / 1000.0
            },
        }
    }
}

/// One bar: a median and its min–max range.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Label under the bar.
    pub name: String,
    /// Bar height.
    pub median: f64,
    /// Whisker bottom.
    pub min: f64,
    /// Whisker top.
    pub max: f64,
}

/// log10(1/(1−p)): where percentile `p` sits on the x axis.
fn x_of(p: f64) -> f64 {
    -(1.0 - p).max(1e-12).log10()
}

/// `&`, `<`, `>` and quotes escaped for SVG text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis step giving about `n` ticks up to `max`: 1, 2 or 5 times a power of ten.
fn nice_step(max: f64, n: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

/// A tick label: `1.5`, `20`, `300k`, `1.2M`.
pub fn tick_label(v: f64) -> String {
    let (v, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if (v * 10.0).fract().abs() < 1e-6 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{s}{suffix}")
}

/// The opening of a chart: the `<svg>` element, a white background, title and subtitle.
fn open(out: &mut String, title: &str, subtitle: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>{t}</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{t}</text>\n",
        t = escape(title),
    );
    for (i, line) in wrap(subtitle, 110).iter().take(2).enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{}\" fill=\"#555555\">{}</text>",
            42 + 15 * i,
            escape(line)
        );
    }
}

/// Splits `text` at ` · ` separators into lines of at most about `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in text.split(" · ") {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 3 + part.chars().count() <= width => {
                l.push_str(" · ");
                l.push_str(part);
            }
            _ => lines.push(part.to_string()),
        }
    }
    lines
}

/// Horizontal grid lines and labels (written by `fmt`) for a linear y axis from 0 to `top`;
/// returns the scale.
fn y_axis(
    out: &mut String,
    top: f64,
    step: f64,
    label: &str,
    fmt: fn(f64) -> String,
) -> impl Fn(f64) -> f64 + use<> {
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    let scale = move |v: f64| y0 - (y0 - y1) * (v / top).clamp(0.0, 1.0);
    let mut v = 0.0;
    while v <= top * (1.0 + 1e-9) {
        let y = scale(v);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt(v)
        );
        v += step;
    }
    let mid = (y0 + y1) / 2.0;
    let _ = writeln!(
        out,
        "<text transform=\"translate(16 {mid:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        escape(label)
    );
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{:.1}\" y2=\"{y0}\" stroke=\"#333333\"/>\
         <line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{LEFT}\" y2=\"{y1}\" stroke=\"#333333\"/>",
        WIDTH - RIGHT
    );
    scale
}

/// Latency percentile curves, overlaid: x the percentile (log scale of 1/(1−p), 50% to
/// 99.99%), y µs from 0. Curves without points are listed in the legend as "no data".
pub fn latency_chart(title: &str, subtitle: &str, curves: &[Curve]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    open(&mut out, title, subtitle);
    let top_value = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let step = nice_step(top_value, 6.0);
    let top = ((top_value / step).ceil() * step).max(step);
    let y = y_axis(&mut out, top, step, "latency (µs)", tick_label);
    let (lo, hi) = (x_of(0.5), x_of(0.9999));
    let x = |p: f64| LEFT + (WIDTH - LEFT - RIGHT) * (x_of(p) - lo) / (hi - lo);
    for &(p, label) in PERCENTILE_TICKS {
        let px = x(p);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0
    );
    for (i, c) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if !c.points.is_empty() {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|&(p, v)| format!("{:.1},{:.1}", x(p), y(v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let legend = if c.points.is_empty() {
            format!("{} (no data)", c.name)
        } else {
            format!("{} (max {} µs)", c.name, sig3(c.max_us))
        };
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" \
             stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT + 12.0,
            ly - 4.0,
            LEFT + 36.0,
            ly - 4.0,
            LEFT + 42.0,
            ly,
            escape(&legend)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Bars with min–max whiskers, one per entry, y from 0 in `unit`.
pub fn bar_chart(title: &str, subtitle: &str, unit: &str, bars: &[Bar]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    open(&mut out, title, subtitle);
    let top_value = bars.iter().map(|b| b.max.max(b.median)).fold(0.0, f64::max);
    let step = nice_step(top_value, 6.0);
    let top = ((top_value * 1.08 / step).ceil() * step).max(step);
    let y = y_axis(&mut out, top, step, unit, count_label);
    let slot = (WIDTH - LEFT - RIGHT) / bars.len().max(1) as f64;
    let width = (slot * 0.6).min(90.0);
    for (i, b) in bars.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let cx = LEFT + slot * (i as f64 + 0.5);
        let (top_y, base) = (y(b.median), y(0.0));
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{width:.1}\" height=\"{:.1}\" \
             fill=\"{color}\" fill-opacity=\"0.75\"/>",
            cx - width / 2.0,
            base - top_y
        );
        let (wlo, whi) = (y(b.min), y(b.max));
        let cap = width / 4.0;
        let _ = writeln!(
            out,
            "<path d=\"M{:.1} {wlo:.1}H{:.1}M{cx:.1} {wlo:.1}V{whi:.1}M{:.1} {whi:.1}H{:.1}\" \
             stroke=\"#222222\" stroke-width=\"1.5\" fill=\"none\"/>",
            cx - cap,
            cx + cap,
            cx - cap,
            cx + cap
        );
        let _ = writeln!(
            out,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
             <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            whi.min(top_y) - 6.0,
            tick_label_sig(b.median),
            HEIGHT - BOTTOM + 16.0,
            escape(&b.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A count on an axis, with k and M from a thousand: `5k`, `12.5k`, `1.5M`.
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", tick_label(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", tick_label(v / 1e3))
    } else {
        tick_label(v)
    }
}

/// A value label with three significant digits and a k/M suffix: `336k`, `1.25M`, `41.2`.
fn tick_label_sig(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", sig3(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", sig3(v / 1e3))
    } else {
        sig3(v)
    }
}

/// Three significant digits, or none after the point from 100 up: `7557`, `41.2`, `2.41`.
pub fn sig3(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::worker::new_hist;

    /// Every number in `points="..."`, as (x, y) pairs.
    fn polyline_points(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.match_indices("<polyline")
            .map(|(at, _)| {
                let rest = &svg[at..];
                let from = rest.find("points=\"").unwrap() + 8;
                let to = from + rest[from..].find('"').unwrap();
                rest[from..to]
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_curve_samples_the_histogram_from_50_to_99_99_percent() {
        let mut h = new_hist();
        for v in 1..=100_000u64 {
            h.record(v * 1000).unwrap(); // 1 µs .. 100 ms
        }
        let c = Curve::of("run", &h);
        let (p0, v0) = c.points[0];
        let (pn, vn) = *c.points.last().unwrap();
        assert!((p0 - 0.5).abs() < 1e-9 && (pn - 0.9999).abs() < 1e-9);
        assert!((v0 - 50_000.0).abs() / 50_000.0 < 0.01, "p50 {v0}");
        assert!((vn - 99_990.0).abs() / 99_990.0 < 0.01, "p99.99 {vn}");
        assert!(
            c.points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert!((c.max_us - 100_000.0).abs() < 100.0);
        assert!(Curve::of("empty", &new_hist()).points.is_empty());
    }

    #[test]
    fn latency_chart_places_percentiles_evenly_and_stays_inside() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let svg = latency_chart(
            "t <&>",
            "50 conns",
            &[Curve::of("a", &h), Curve::of("b", &new_hist())],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;&amp;&gt;") && !svg.contains("t <&>"));
        assert!(svg.contains("b (no data)"));
        for (_, label) in PERCENTILE_TICKS {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        // 50%, 90%, 99%, ... are one decade of 1/(1-p) apart: evenly spaced, except 50% -> 90%.
        let tick_x: Vec<f64> = PERCENTILE_TICKS
            .iter()
            .map(|(_, l)| {
                let end = svg
                    .find(&format!("text-anchor=\"middle\">{l}</text>"))
                    .unwrap();
                let start = svg[..end].rfind("<text x=\"").unwrap() + 9;
                svg[start..start + svg[start..].find('"').unwrap()]
                    .parse()
                    .unwrap()
            })
            .collect();
        let d = tick_x[2] - tick_x[1];
        assert!(((tick_x[3] - tick_x[2]) - d).abs() < 0.2);
        assert!(((tick_x[4] - tick_x[3]) - d).abs() < 0.2);
        assert!((tick_x[0] - LEFT).abs() < 0.2 && (tick_x[4] - (WIDTH - RIGHT)).abs() < 0.2);
        let lines = polyline_points(&svg);
        assert_eq!(lines.len(), 1, "the empty curve draws nothing");
        for &(x, y) in &lines[0] {
            assert!((LEFT - 0.1..=WIDTH - RIGHT + 0.1).contains(&x), "x {x}");
            assert!((TOP - 0.1..=HEIGHT - BOTTOM + 0.1).contains(&y), "y {y}");
        }
        // Higher latency is drawn higher up (smaller y).
        assert!(lines[0].first().unwrap().1 > lines[0].last().unwrap().1);
    }

    #[test]
    fn bars_have_whiskers_and_labels() {
        let svg = bar_chart(
            "throughput",
            "50x128x1",
            "msgs/s",
            &[
                Bar {
                    name: "uring".into(),
                    median: 300_000.0,
                    min: 290_000.0,
                    max: 310_000.0,
                },
                Bar {
                    name: "epoll".into(),
                    median: 250_000.0,
                    min: 240_000.0,
                    max: 260_000.0,
                },
            ],
        );
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert_eq!(svg.matches("<path d=").count(), 2);
        assert!(svg.contains(">300k</text>") && svg.contains(">250k</text>"));
        assert!(svg.contains(">uring</text>") && svg.contains(">epoll</text>"));
    }

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 6.0), 2.0);
        assert_eq!(nice_step(0.0, 6.0), 1.0);
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(300_000.0), "300k");
        assert_eq!(tick_label(1_500_000.0), "1.5M");
        assert_eq!(tick_label_sig(336_617.0), "337k");
        assert_eq!(tick_label_sig(41.23), "41.2");
        assert_eq!(sig3(7557.12), "7557");
        assert_eq!(count_label(5000.0), "5k");
        assert_eq!(count_label(2_500_000.0), "2.5M");
        assert_eq!(wrap("aaaa · bbbb · cccc", 11), ["aaaa · bbbb", "cccc"]);
    }
}
