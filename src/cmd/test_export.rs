//! A run report as JUnit XML (one testsuite per run, one testcase per step) and as Markdown.

use std::fmt::Write as _;

use crate::protocol::{RunReport, StepStatus, VerdictOutcome};

/// JUnit XML: failed steps carry their detail and the test's last log lines.
pub fn junit(report: &RunReport, last_lines: &[String]) -> String {
    let run = &report.run;
    let failures = run.steps.iter().filter(|s| s.status == StepStatus::Failed).count();
    let skipped = run.steps.iter().filter(|s| matches!(s.status, StepStatus::Skipped | StepStatus::Pending)).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
        xml(&run.test),
        run.steps.len(),
        report.wall_time_s,
        run.started.format("%Y-%m-%dT%H:%M:%S")
    );
    let _ = writeln!(out, "  <properties>");
    let _ = writeln!(out, "    <property name=\"run\" value=\"{}\"/>", xml(&run.id));
    let _ = writeln!(out, "    <property name=\"target\" value=\"{}\"/>", xml(&run.target));
    if let Some(cost) = report.cost_usd {
        let _ = writeln!(out, "    <property name=\"cost_usd\" value=\"{cost:.4}\"/>");
    }
    let _ = writeln!(out, "  </properties>");
    for step in &run.steps {
        let time = step.duration_ms.unwrap_or(0) as f64 / 1000.0;
        let _ =
            write!(out, "  <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"", xml(&run.test), xml(&step.name));
        match step.status {
            StepStatus::Failed => {
                let _ = writeln!(out, ">");
                let _ = writeln!(
                    out,
                    "    <failure message=\"{}\">{}</failure>",
                    xml(&step.detail),
                    xml(&format!("{}\n\nlast log lines:\n{}", step.detail, last_lines.join("\n")))
                );
                let _ = writeln!(out, "  </testcase>");
            }
            StepStatus::Skipped | StepStatus::Pending => {
                let _ = writeln!(out, ">\n    <skipped message=\"{}\"/>\n  </testcase>", xml(&step.detail));
            }
            _ => {
                let _ = writeln!(out, "/>");
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}

/// Markdown for a pull request comment or a ticket.
pub fn markdown(report: &RunReport) -> String {
    let run = &report.run;
    let verdict = match run.verdict.as_ref().map(|v| v.outcome) {
        Some(VerdictOutcome::Pass) => "✔ pass",
        Some(VerdictOutcome::Fail) => "✖ fail",
        Some(VerdictOutcome::Cancelled) => "◌ cancelled",
        None => "unfinished",
    };
    let mut out = format!("## {} — {verdict}\n\n", run.test);
    let _ = writeln!(out, "- run `{}`, target `{}`, wall time {:.1} s", run.id, run.target, report.wall_time_s);
    if let Some(offer) = &run.offer {
        let _ = writeln!(
            out,
            "- offer: {} {} {} GB, ${:.2}/h",
            offer.provider, offer.gpu_type, offer.vram_gb, offer.price_per_hour
        );
    }
    if let Some(cost) = report.cost_usd {
        let _ = writeln!(out, "- cost: ${cost:.4}");
    }
    for reason in run.verdict.iter().flat_map(|v| v.reasons.iter()) {
        let _ = writeln!(out, "- reason: {}", reason.replace('\n', " "));
    }
    if let Some(p) = &report.probe {
        let _ = writeln!(
            out,
            "- probe: {} requests, {:.1} req/s, {:.1} output tokens/s, latency p50 {}, TTFT p50 {}",
            p.requests,
            p.requests_per_s,
            p.output_tokens_per_s,
            p.latency_ms.p50.map_or("—".into(), crate::util::fmt_ms),
            p.ttft_ms.p50.map_or("—".into(), crate::util::fmt_ms),
        );
    }
    out.push_str("\n| step | status | time | detail |\n|---|---|---|---|\n");
    for step in &run.steps {
        let time = step.duration_ms.map_or("—".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        let detail = step.detail.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(out, "| {} | {} | {time} | {detail} |", step.name, step.status.name());
    }
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn escaped_text_has_no_markup(text in ".{0,64}") {
            let e = xml(&text);
            proptest::prop_assert!(!e.contains('<') && !e.contains('>') && !e.contains('"'));
        }
    }
}
