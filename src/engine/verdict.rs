//! A probe report judged by a test's `pass:` thresholds.

use crate::config::PassConfig;
use crate::probe::Outcome;
use crate::protocol::{ProbeReport, Verdict};

pub(super) fn judge(report: &ProbeReport, pass: &PassConfig, cancelled: bool) -> Verdict {
    if cancelled {
        return Verdict::cancelled(format!("cancelled after {} requests", report.requests));
    }
    if report.requests == 0 {
        return Verdict::fail("no request finished");
    }
    let mut reasons = Vec::new();
    let failed = report.requests - report.count(Outcome::Success);
    let error_rate = failed as f64 / report.requests as f64;
    if error_rate > pass.max_error_rate {
        let classes: Vec<String> = report
            .outcomes
            .iter()
            .filter(|(o, n)| **o != Outcome::Success && **n > 0)
            .map(|(o, n)| format!("{n} {o}"))
            .collect();
        let allowed = if pass.max_error_rate > 0.0 {
            format!("; at most {:.1} % may fail", pass.max_error_rate * 100.0)
        } else {
            String::new()
        };
        reasons.push(format!("{failed} of {} requests failed ({}){allowed}", report.requests, classes.join(", ")));
    }
    if let Some(min) = pass.min_output_tokens_per_s
        && report.output_tokens_per_s < min
    {
        reasons.push(format!("{:.1} output tokens/s, below min_output_tokens_per_s {min}", report.output_tokens_per_s));
    }
    if let Some(max) = pass.max_ttft_p95_ms {
        match report.ttft_ms.p95 {
            Some(p95) if p95 > max => reasons.push(format!("TTFT p95 {p95:.0} ms, above max_ttft_p95_ms {max}")),
            None => reasons.push("no TTFT measured (max_ttft_p95_ms needs streaming requests)".into()),
            _ => {}
        }
    }
    if let Some(min) = pass.min_expected_answer_rate {
        match report.expected_answer_rate {
            Some(rate) if rate < min => reasons.push(format!(
                "{:.0} % of checked answers were right, below min_expected_answer_rate {:.0} %",
                rate * 100.0,
                min * 100.0
            )),
            None => reasons.push(
                "no answer could be checked (min_expected_answer_rate needs prompts with expected answers)".into(),
            ),
            _ => {}
        }
    }
    if reasons.is_empty() { Verdict::pass() } else { Verdict { reasons, ..Verdict::fail("") } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::VerdictOutcome;

    fn report(ok: u64, failed: u64) -> ProbeReport {
        let mut r: ProbeReport = serde_json::from_value(serde_json::json!({
            "target": "t", "model": "m", "requests": ok + failed, "duration_s": 1.0, "outcomes": {},
            "latency_ms": {}, "ttft_ms": {"p95": 120.0}, "itl_ms": {}, "requests_per_s": 1.0, "output_tokens_per_s": 50.0, "errors": {}
        }))
        .expect("report");
        r.outcomes.insert(Outcome::Success, ok);
        if failed > 0 {
            r.outcomes.insert(Outcome::ServerError, failed);
        }
        r
    }

    #[test]
    fn thresholds_decide() {
        let strict = PassConfig::default();
        assert_eq!(judge(&report(10, 0), &strict, false).outcome, VerdictOutcome::Pass);
        let v = judge(&report(9, 1), &strict, false);
        assert_eq!(v.outcome, VerdictOutcome::Fail);
        assert!(v.reasons[0].contains("1 of 10 requests failed (1 server_error)"), "{v:?}");
        let lenient = PassConfig { max_error_rate: 0.2, ..PassConfig::default() };
        assert_eq!(judge(&report(9, 1), &lenient, false).outcome, VerdictOutcome::Pass);
        let fast = PassConfig { min_output_tokens_per_s: Some(100.0), max_ttft_p95_ms: Some(100.0), ..strict };
        let v = judge(&report(10, 0), &fast, false);
        assert_eq!(v.reasons.len(), 2, "{v:?}");
        assert_eq!(judge(&report(10, 0), &PassConfig::default(), true).outcome, VerdictOutcome::Cancelled);
    }
}
