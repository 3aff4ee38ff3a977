//! The one-screen summary `llmdeck config check` prints for a valid configuration.

use std::fmt::Write as _;
use std::path::Path;

use super::error::shown;
use super::paths::Paths;
use super::schema::{Config, GpuBackend, RestartPolicy, TestKind};

/// Rows per list, so the summary fits a 24-line terminal.
const MAX_ROWS: usize = 6;

/// A summary of `config` (read from `path`): models with ports and restart policy, tests, GPU
/// backend, log dir, shopper URL, daemon address.
pub fn summary(config: &Config, path: &Path) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut out, config, path);
    out
}

fn write_summary(out: &mut String, c: &Config, path: &Path) -> std::fmt::Result {
    writeln!(out, "{}: ok", path.display())?;

    writeln!(out, "models ({}):", c.models.len())?;
    let width = id_width(c.models.iter().map(|m| m.id.as_str()));
    for m in c.models.iter().take(MAX_ROWS) {
        let r = &m.restart;
        let restart = match r.policy {
            RestartPolicy::No => "restart no".to_owned(),
            p => format!("restart {} (max {})", p.name(), r.max_restarts),
        };
        let start = if m.autostart { "autostart" } else { "manual" };
        writeln!(
            out,
            "  {:width$}  port {:<5}  {restart:<26}  {start:<9}  {}",
            shown(&m.id),
            m.port,
            shown(&m.command),
        )?;
    }
    more(out, c.models.len())?;

    writeln!(out, "tests ({}):", c.tests.len())?;
    let width = id_width(c.tests.iter().map(|t| t.name.as_str()));
    for t in c.tests.iter().take(MAX_ROWS) {
        let detail = match t.kind {
            TestKind::Local => format!("local   model {}", shown(&t.model)),
            TestKind::Deploy => format!(
                "deploy  {}  max ${:.2}/h, {} h",
                shown(&t.model),
                t.max_price.unwrap_or(0.0),
                t.reservation_hours
            ),
        };
        writeln!(out, "  {:width$}  {detail}", shown(&t.name))?;
    }
    more(out, c.tests.len())?;

    let g = &c.gpu;
    let backend = match g.backend {
        GpuBackend::Auto => "auto (NVML if it loads)".to_owned(),
        GpuBackend::Nvml => "nvml".to_owned(),
        GpuBackend::Simulated => format!("simulated ({} GPUs)", g.simulated_count),
        GpuBackend::None => "none".to_owned(),
    };
    writeln!(out, "gpu:      {backend}, sample every {} ms, {} s of history", g.sample_ms, g.history_s)?;
    let log_dir = match Paths::resolve(c, Some(path)) {
        Ok(paths) => paths.log_dir.display().to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let l = &c.logs;
    writeln!(
        out,
        "logs:     {log_dir} ({} MiB x {} files; {} lines per source, at most {} MiB, in memory)",
        l.max_file_mb, l.keep_files, l.ring_lines, l.memory_mb
    )?;
    let consumer = match Paths::resolve(c, Some(path)) {
        Ok(paths) => match super::paths::consumer_id(c, &paths.data_dir) {
            Ok(id) if c.shopper.consumer_id.is_empty() => format!("{} (this installation's)", shown(&id)),
            Ok(id) => shown(&id).to_string(),
            Err(e) => format!("unknown ({e})"),
        },
        Err(e) => format!("unknown ({e})"),
    };
    writeln!(out, "shopper:  {} (consumer id {consumer})", shown(&c.shopper.url))?;
    writeln!(out, "daemon:   listens on {} (at most {} clients)", shown(&c.daemon.listen), c.daemon.max_clients)
}

fn more(out: &mut String, total: usize) -> std::fmt::Result {
    if total > MAX_ROWS {
        writeln!(out, "  ... and {} more", total - MAX_ROWS)?;
    }
    Ok(())
}

fn id_width<'a>(ids: impl Iterator<Item = &'a str>) -> usize {
    ids.map(|id| id.chars().count()).max().unwrap_or(0).min(24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn fits_one_screen_and_names_every_section() {
        let mut yaml = String::from("models:\n");
        for i in 0..10 {
            yaml.push_str(&format!("  - {{ id: m{i}, command: vllm, port: {} }}\n", 8000 + i));
        }
        let config = load_str(&yaml, "t.yaml").unwrap();
        let text = summary(&config, Path::new("/c/config.yaml"));
        assert!(text.lines().count() <= 22, "{text}");
        assert!(text.starts_with("/c/config.yaml: ok\nmodels (10):\n"), "{text}");
        assert!(text.contains("m0"), "{text}");
        assert!(text.contains("port 8000"), "{text}");
        assert!(text.contains("restart on-failure (max 5)"), "{text}");
        assert!(text.contains("... and 4 more"), "{text}");
        for section in ["gpu:", "logs:", "shopper:", "daemon:"] {
            assert!(text.contains(section), "{section} in {text}");
        }
    }
}
