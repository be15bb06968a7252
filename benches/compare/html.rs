//! `target/bench/latest.html`: the Markdown report as one self-contained page (inline SVG and
//! CSS; no scripts, fonts or images fetched from anywhere), with two charts above each case's
//! table: throughput per server (median bars, min–max whiskers over the rounds) and the
//! servers' latency percentile curves overlaid (each server's measured rounds merged into one
//! histogram).

use std::collections::HashMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use ringecho::loadgen::svg::{self, Bar, Curve};

use crate::report::{CaseResult, Meta, markdown};
use crate::spec::Server;

/// The page.
pub fn html(meta: &Meta, servers: &[Server], cases: &[CaseResult]) -> String {
    let md = markdown(meta, servers, cases);
    let charts: HashMap<String, String> = cases
        .iter()
        .map(|c| (format!("## {}", c.case.describe()), charts(c, meta.rounds)))
        .collect();
    let mut out =
        String::with_capacity(md.len() * 2 + charts.values().map(String::len).sum::<usize>());
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>ringecho: echo servers side by side</title>\n<style>\n\
         body{font-family:sans-serif;margin:1.5em auto;max-width:1600px;padding:0 1em;color:#222}\n\
         table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}\n\
         th,td{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}\n\
         td.r,th.r{text-align:right}code{background:#f3f3f3;padding:0 2px}\n\
         blockquote{border-left:4px solid #ccc;margin:1em 0;padding:0 1em;color:#444}\n\
         .charts{display:flex;flex-wrap:wrap;gap:12px}\n\
         .charts svg{border:1px solid #ddd;max-width:100%;height:auto}\n\
         </style>\n</head>\n<body>\n",
    );
    render_markdown(&md, &mut out, &charts);
    out.push_str("</body>\n</html>\n");
    out
}

/// The two charts of one case.
fn charts(c: &CaseResult, rounds: usize) -> String {
    let mut bars = Vec::new();
    let mut curves = Vec::new();
    for r in c.servers.iter().filter(|r| r.skipped.is_none()) {
        let stat = r.summary.stats.get("msgs_per_sec");
        bars.push(Bar {
            name: r.name.clone(),
            median: stat.map_or(0.0, |s| s.median),
            min: stat.map_or(0.0, |s| s.min),
            max: stat.map_or(0.0, |s| s.max),
        });
        let mut merged: Option<Histogram<u64>> = None;
        for run in r
            .runs
            .iter()
            .filter(|run| run.round.is_some() && run.discarded.is_none())
        {
            if let Some(h) = &run.latency {
                match &mut merged {
                    Some(m) => {
                        // Both from ringecho bench, same layout: adding cannot fail.
                        let _ = m.add(h);
                    }
                    None => merged = Some(h.clone()),
                }
            }
        }
        curves.push(match merged {
            Some(h) => Curve::of(r.name.clone(), &h),
            None => Curve {
                name: r.name.clone(),
                points: Vec::new(),
                max_us: 0.0,
            },
        });
    }
    let what = c.case.describe();
    let rounds_text = format!(
        "median and min–max over {rounds} round{}",
        if rounds == 1 { "" } else { "s" }
    );
    let latency_from = if c.case.rate.is_some() {
        "from each message's intended send time"
    } else {
        "from each send"
    };
    format!(
        "<div class=\"charts\">\n{}{}</div>\n",
        svg::bar_chart(
            &format!("Throughput: {what}"),
            &rounds_text,
            "msgs/s",
            &bars
        ),
        svg::latency_chart(
            &format!("Latency by percentile: {what}"),
            &format!("each server's measured rounds merged · {latency_from}"),
            &curves
        )
    )
}

/// Text with `&`, `<`, `>` escaped, then `code`, **bold** and *emphasis* marked up.
fn inline(text: &str) -> String {
    let escaped = svg::escape(text);
    let mut out = String::with_capacity(escaped.len() + 16);
    let mut code = false;
    let mut strong = false;
    let mut em = false;
    let mut chars = escaped.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            }
            '*' if !code && chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(if strong { "</strong>" } else { "<strong>" });
                strong = !strong;
            }
            '*' if !code => {
                out.push_str(if em { "</em>" } else { "<em>" });
                em = !em;
            }
            c => out.push(c),
        }
    }
    for (open, close) in [(code, "</code>"), (strong, "</strong>"), (em, "</em>")] {
        if open {
            out.push_str(close);
        }
    }
    out
}

/// The cells of a Markdown table row.
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// Renders the Markdown the report writes (headings, paragraphs, tables, lists, quotes),
/// putting `charts[heading line]` right after that heading.
fn render_markdown(md: &str, out: &mut String, charts: &HashMap<String, String>) {
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            i += 1;
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", inline(h));
            i += 1;
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", inline(h));
            if let Some(c) = charts.get(line) {
                out.push_str(c);
            }
            i += 1;
        } else if line.starts_with('|') {
            let start = i;
            while i < lines.len() && lines[i].starts_with('|') {
                i += 1;
            }
            table(&lines[start..i], out);
        } else if line.starts_with("- ") {
            out.push_str("<ul>\n");
            while i < lines.len() && (lines[i].starts_with("- ") || lines[i].starts_with("  - ")) {
                let item = lines[i].strip_prefix("- ").unwrap_or("");
                let _ = write!(out, "<li>{}", inline(item));
                i += 1;
                if i < lines.len() && lines[i].starts_with("  - ") {
                    out.push_str("<ul>");
                    while i < lines.len() && lines[i].starts_with("  - ") {
                        let _ = write!(out, "<li>{}</li>", inline(&lines[i][4..]));
                        i += 1;
                    }
                    out.push_str("</ul>");
                }
                out.push_str("</li>\n");
            }
            out.push_str("</ul>\n");
        } else if line.starts_with('>') {
            out.push_str("<blockquote>\n");
            let mut para: Vec<&str> = Vec::new();
            while i < lines.len() && lines[i].starts_with('>') {
                let text = lines[i].trim_start_matches('>').trim();
                if text.is_empty() {
                    if !para.is_empty() {
                        let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
                        para.clear();
                    }
                } else {
                    para.push(text);
                }
                i += 1;
            }
            if !para.is_empty() {
                let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
            }
            out.push_str("</blockquote>\n");
        } else {
            let mut para = Vec::new();
            while i < lines.len()
                && !lines[i].trim().is_empty()
                && !["#", "|", "- ", ">"]
                    .iter()
                    .any(|p| lines[i].starts_with(p))
            {
                para.push(lines[i]);
                i += 1;
            }
            let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
        }
    }
}

/// A Markdown table: header row, alignment row, body rows.
fn table(rows: &[&str], out: &mut String) {
    let Some(head) = rows.first() else { return };
    let right: Vec<bool> = rows
        .get(1)
        .map(|r| cells(r).iter().map(|c| c.ends_with(':')).collect())
        .unwrap_or_default();
    let class = |k: usize| {
        if right.get(k).copied().unwrap_or(false) {
            " class=\"r\""
        } else {
            ""
        }
    };
    out.push_str("<table>\n<tr>");
    for (k, c) in cells(head).iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", class(k), inline(c));
    }
    out.push_str("</tr>\n");
    for row in rows.iter().skip(2) {
        out.push_str("<tr>");
        for (k, c) in cells(row).iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(k), inline(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Checks of the Markdown subset (run by the self-check: `cargo test` runs this target
/// without the test harness).
pub fn self_check() -> Result<(), String> {
    let md = "# T\n\nA *b* **c** `d<e>`.\n\n## Case\n\n| s | n |\n|---|---:|\n| x | 1 |\n\n\
              - one `a`\n  - sub\n- two\n\n> q1\n>\n> q2\n";
    let mut charts = HashMap::new();
    charts.insert("## Case".to_string(), "<svg id=\"c\"></svg>".to_string());
    let mut out = String::new();
    render_markdown(md, &mut out, &charts);
    let want = [
        "<h1>T</h1>",
        "<p>A <em>b</em> <strong>c</strong> <code>d&lt;e&gt;</code>.</p>",
        "<h2>Case</h2>\n<svg id=\"c\"></svg>",
        "<tr><th>s</th><th class=\"r\">n</th></tr>",
        "<tr><td>x</td><td class=\"r\">1</td></tr>",
        "<li>one <code>a</code><ul><li>sub</li></ul></li>",
        "<li>two</li>",
        "<blockquote>\n<p>q1</p>\n<p>q2</p>\n</blockquote>",
    ];
    for w in want {
        if !out.contains(w) {
            return Err(format!("markdown to HTML: {w:?} missing from:\n{out}"));
        }
    }
    Ok(())
}
