//! `/metrics`: the state in Prometheus text format (names and labels documented in the README).

use std::fmt::Write;

use crate::protocol::{ModelState, State, VerdictOutcome};

/// The metric families, with their help text and type.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    samples: Vec<(Vec<(&'a str, String)>, f64)>,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, kind: &'a str, help: &'a str) -> Self {
        Self { name, help, kind, samples: Vec::new() }
    }

    fn add(&mut self, labels: Vec<(&'a str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let _ = write!(out, "{{{}}}", inner.join(","));
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "NaN".into() }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Renders the state as Prometheus text.
pub fn render(state: &State) -> String {
    let mut families = Vec::new();
    let mut up = Family::new("llmdeck_model_up", "gauge", "1 while the model's server process runs");
    let mut ready =
        Family::new("llmdeck_model_ready", "gauge", "1 while the model is ready (health and /v1/models pass)");
    let mut restarts =
        Family::new("llmdeck_model_restarts_total", "counter", "restarts after a crash, since llmdeck started");
    let mut ooms =
        Family::new("llmdeck_model_ooms_total", "counter", "CUDA out-of-memory crashes, since llmdeck started");
    let mut failed = Family::new("llmdeck_model_failed", "gauge", "1 when the model gave up restarting (failed)");
    for m in &state.models {
        let l = || vec![("model", m.id.clone())];
        up.add(l(), flag(m.pid.is_some() && m.state.is_active()));
        ready.add(l(), flag(m.state == ModelState::Ready));
        restarts.add(l(), f64::from(m.restarts));
        ooms.add(l(), f64::from(m.ooms));
        failed.add(l(), flag(m.state == ModelState::Failed));
    }
    families.extend([up, ready, restarts, ooms, failed]);

    let mut util = Family::new("llmdeck_gpu_utilization_ratio", "gauge", "GPU utilisation, 0 to 1");
    let mut mem_used = Family::new("llmdeck_gpu_memory_used_bytes", "gauge", "GPU memory in use");
    let mut mem_total = Family::new("llmdeck_gpu_memory_total_bytes", "gauge", "GPU memory in all");
    let mut power = Family::new("llmdeck_gpu_power_watts", "gauge", "power draw");
    let mut temp = Family::new("llmdeck_gpu_temperature_celsius", "gauge", "GPU temperature");
    let mut lost = Family::new("llmdeck_gpu_lost", "gauge", "1 when the GPU fell off the bus or stopped answering");
    for g in &state.gpus.gpus {
        let l = || vec![("gpu", g.index.to_string()), ("name", g.name.clone())];
        if let Some(v) = g.utilization_gpu_pct {
            util.add(l(), f64::from(v) / 100.0);
        }
        if let Some(v) = g.memory_used_bytes {
            mem_used.add(l(), v as f64);
        }
        if let Some(v) = g.memory_total_bytes {
            mem_total.add(l(), v as f64);
        }
        if let Some(v) = g.power_draw_w {
            power.add(l(), v);
        }
        if let Some(v) = g.temperature_c {
            temp.add(l(), f64::from(v));
        }
        lost.add(l(), flag(g.lost));
    }
    let mut stale =
        Family::new("llmdeck_gpu_readings_stale", "gauge", "1 while an NVML call hangs and readings are old");
    stale.add(Vec::new(), flag(state.gpus.stale.is_some()));
    let mut xids = Family::new("llmdeck_gpu_xid_events_total", "counter", "critical Xid driver events seen");
    xids.add(Vec::new(), state.gpus.xid_count as f64);
    families.extend([util, mem_used, mem_total, power, temp, lost, stale, xids]);

    let mut running = Family::new("llmdeck_test_running", "gauge", "1 while a run of the test is in progress");
    let mut verdict =
        Family::new("llmdeck_test_last_verdict", "gauge", "the last run's verdict (1 for the one it had)");
    let mut tokens =
        Family::new("llmdeck_test_last_output_tokens_per_second", "gauge", "the last run's output tokens/s");
    let mut ttft =
        Family::new("llmdeck_test_last_ttft_p50_seconds", "gauge", "the last run's median time to first token");
    let mut success =
        Family::new("llmdeck_test_last_success_ratio", "gauge", "the last run's successful requests, 0 to 1");
    for t in &state.tests {
        running.add(vec![("test", t.name.clone())], flag(t.current.is_some()));
        let Some(last) = t.last() else { continue };
        if let Some(v) = &last.verdict {
            for outcome in [VerdictOutcome::Pass, VerdictOutcome::Fail, VerdictOutcome::Cancelled] {
                let labels = vec![("test", t.name.clone()), ("verdict", outcome.name().to_owned())];
                verdict.add(labels, flag(v.outcome == outcome));
            }
        }
        if let Some(s) = &last.summary {
            tokens.add(vec![("test", t.name.clone())], s.output_tokens_per_s);
            if let Some(v) = s.ttft_p50_ms {
                ttft.add(vec![("test", t.name.clone())], v / 1000.0);
            }
            if s.requests > 0 {
                success.add(vec![("test", t.name.clone())], s.succeeded as f64 / s.requests as f64);
            }
        }
    }
    families.extend([running, verdict, tokens, ttft, success]);

    let shopper = &state.shopper;
    let mut active =
        Family::new("llmdeck_sessions_active", "gauge", "rented GPU sessions of this consumer still active");
    active.add(Vec::new(), shopper.active().count() as f64);
    let mut cost = Family::new(
        "llmdeck_sessions_cost_per_hour_dollars",
        "gauge",
        "what the active sessions cost together per hour",
    );
    cost.add(Vec::new(), shopper.dollars_per_hour());
    let mut orphaned = Family::new("llmdeck_sessions_orphaned", "gauge", "active sessions no live run owns");
    orphaned.add(Vec::new(), shopper.active().filter(|s| s.is_orphan()).count() as f64);
    let mut stuck =
        Family::new("llmdeck_sessions_stuck", "gauge", "destroyed sessions still stopping past stuck_after_s");
    stuck.add(Vec::new(), shopper.active().filter(|s| s.stuck_since.is_some()).count() as f64);
    let mut shopper_up = Family::new("llmdeck_shopper_up", "gauge", "1 when the shopper answered its health check");
    shopper_up.add(Vec::new(), flag(shopper.health == crate::protocol::ShopperHealth::Ok));
    families.extend([active, cost, orphaned, stuck, shopper_up]);

    let mut out = String::new();
    for f in families {
        f.write(&mut out);
    }
    out
}
