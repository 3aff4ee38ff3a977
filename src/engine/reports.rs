//! Run reports on disk: one JSON file per run in `<data>/results/` (schema 1), reloaded at start
//! so the last runs of every test survive restarts; and the record of cleanups that shutdown gave
//! up on, reported at the next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, TestConfig};
use crate::logs::file::sanitize_file_stem;
use crate::protocol::{Alert, ProbeReport, REPORT_SCHEMA, RUN_HISTORY, Run, RunReport, Severity};

const ABANDONED_FILE: &str = "abandoned-cleanups.json";

/// What a report carries beyond the run and the probe.
#[derive(Debug, Default)]
pub(super) struct Extras {
    pub cost_usd: Option<f64>,
    pub energy: Option<crate::protocol::EnergyFigures>,
}

/// Writes the report of a finished run; its path.
pub(super) async fn write(
    data_dir: &Path,
    run: &Run,
    test: &TestConfig,
    wall_time: Duration,
    probe: Option<ProbeReport>,
    extras: Extras,
) -> std::io::Result<String> {
    let output_tokens = probe.as_ref().map_or(0, |p| p.extra.output_tokens);
    let cost_per_million = extras.cost_usd.filter(|_| output_tokens > 0).map(|c| c / output_tokens as f64 * 1e6);
    let dir = data_dir.join("results");
    let path = dir.join(format!("{}-{}.json", sanitize_file_stem(&test.name), sanitize_file_stem(&run.id)));
    let report = RunReport {
        schema: REPORT_SCHEMA,
        run: run.clone(),
        config: redacted(test),
        wall_time_s: wall_time.as_secs_f64(),
        probe,
        cost_usd: extras.cost_usd,
        cost_per_million_output_tokens_usd: cost_per_million,
        energy: extras.energy,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
    crate::util::create_private_dir(&dir)?;
    write_private(&path, json).await?;
    Ok(path.display().to_string())
}

/// Deletes the oldest report files of `test` beyond `keep` (names sort by time: the run id
/// starts with it); what it could not delete stays for the next time.
pub(super) fn prune(data_dir: &Path, test: &str, keep: usize) {
    let dir = data_dir.join("results");
    let prefix = format!("{}-", sanitize_file_stem(test));
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut mine: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.strip_prefix(&prefix).is_some_and(is_run_file_name))
        .collect();
    if mine.len() <= keep {
        return;
    }
    mine.sort_unstable();
    for name in &mine[..mine.len() - keep] {
        if let Err(e) = std::fs::remove_file(dir.join(name)) {
            tracing::warn!("removing the old report {name}: {e}");
        }
    }
}

/// `20261203T234542Z-327143.json`: a run id (its time first) and the extension — so the
/// reports of `smoke-2` are not taken for those of `smoke`.
fn is_run_file_name(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.len() > 16 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T' && rest.ends_with(".json")
}

/// Writes whole (a temporary file renamed into place), readable by the owner only.
async fn write_private(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || crate::util::write_private_atomic(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// The test's configuration for the report, secrets left out (`deploy.env` values, the values
/// of secret-looking arguments in commands).
fn redacted(test: &TestConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(test).unwrap_or_default();
    for at in ["/deploy/command", "/deploy/logs_command", "/cleanup_command"] {
        if let Some(command) = value.pointer_mut(at)
            && let Some(text) = command.as_str()
        {
            *command = serde_json::Value::String(crate::util::redact_command_line(text));
        }
    }
    if let Some(env) = value.pointer_mut("/deploy/env").and_then(|e| e.as_object_mut()) {
        for v in env.values_mut() {
            *v = serde_json::Value::String("***".into());
        }
    }
    value
}

/// The finished runs of the configured tests, from their reports: the newest [`RUN_HISTORY`]
/// per test. Files that are not schema-1 reports are left alone.
pub(super) fn load_history(results_dir: &Path, config: &Config) -> Vec<Run> {
    let Ok(entries) = std::fs::read_dir(results_dir) else { return Vec::new() };
    let mut runs: Vec<Run> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| read_report(&p))
        .filter(|r| config.tests.iter().any(|t| t.name == r.test))
        .collect();
    runs.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| b.id.cmp(&a.id)));
    let mut kept: Vec<Run> = Vec::new();
    for run in runs {
        if kept.iter().filter(|r| r.test == run.test).count() < RUN_HISTORY {
            kept.push(run);
        }
    }
    kept
}

fn read_report(path: &Path) -> Option<Run> {
    // A report is small; a huge file is not one of ours.
    if std::fs::metadata(path).ok()?.len() > 16 * 1024 * 1024 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let report: RunReport = serde_json::from_slice(&bytes).ok()?;
    (report.schema == REPORT_SCHEMA && report.run.verdict.is_some()).then_some(report.run)
}

/// A cleanup shutdown gave up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Abandoned {
    ts: DateTime<Utc>,
    run: String,
    test: String,
    why: String,
    /// What it was cleaning up (the session of a deployment run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
}

fn abandoned_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ABANDONED_FILE)
}

/// Notes an abandoned cleanup for the next start.
pub(super) async fn record_abandoned(data_dir: &Path, run: &Run, why: &str) {
    let path = abandoned_path(data_dir);
    let mut all: Vec<Abandoned> =
        tokio::fs::read(&path).await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    all.push(Abandoned {
        ts: Utc::now(),
        run: run.id.clone(),
        test: run.test.clone(),
        why: why.to_owned(),
        session: run.session.as_ref().map(|s| s.id.clone()),
    });
    let written = match serde_json::to_vec_pretty(&all) {
        Ok(json) => match crate::util::create_private_dir(data_dir) {
            Ok(()) => write_private(&path, json).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(std::io::Error::other(e)),
    };
    if let Err(e) = written {
        tracing::error!("recording the abandoned cleanup of run {} in {}: {e}", run.id, path.display());
    }
}

/// Alerts for the cleanups earlier runs of llmdeck gave up on; the record is then removed.
pub(super) fn take_abandoned(data_dir: &Path) -> Vec<Alert> {
    let path = abandoned_path(data_dir);
    let Ok(bytes) = std::fs::read(&path) else { return Vec::new() };
    let all: Vec<Abandoned> = serde_json::from_slice(&bytes).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    all.into_iter()
        .map(|a| {
            let what = a.session.map(|s| format!(" (session {s})")).unwrap_or_default();
            Alert {
                ts: Utc::now(),
                severity: Severity::Warning,
                source: "engine".into(),
                message: format!(
                    "the cleanup of {} run {}{what} was abandoned at {}: {}; check that nothing it started is still running",
                    a.test,
                    a.run,
                    a.ts.format("%Y-%m-%d %H:%M:%S UTC"),
                    a.why
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Verdict, local_steps};

    fn config() -> Config {
        crate::config::load_str(
            "models:\n  - { id: m, command: x, port: 9001 }\ntests:\n  - { name: t, kind: local, model: m }\n",
            "test",
        )
        .expect("config")
    }

    fn finished_run(n: u32) -> Run {
        let started = DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).expect("time");
        let mut run = Run::new(
            format!("r{n:03}"),
            "t".into(),
            crate::config::TestKind::Local,
            started,
            "http://127.0.0.1:9001".into(),
            &[local_steps::WAIT_READY.into()],
        );
        run.verdict = Some(Verdict::pass());
        run
    }

    #[tokio::test]
    async fn reports_round_trip_and_history_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config();
        for n in 0..(RUN_HISTORY as u32 + 3) {
            write(dir.path(), &finished_run(n), &config.tests[0], Duration::from_secs(1), None, Extras::default())
                .await
                .expect("written");
        }
        std::fs::write(dir.path().join("results/old-format.json"), b"{\"requests\": 3}").expect("write");
        let history = load_history(&dir.path().join("results"), &config);
        assert_eq!(history.len(), RUN_HISTORY);
        assert_eq!(history[0].id, format!("r{:03}", RUN_HISTORY + 2), "newest first");
        use std::os::unix::fs::PermissionsExt;
        let any = std::fs::read_dir(dir.path().join("results")).expect("dir").flatten().next().expect("a file");
        assert_eq!(any.metadata().expect("meta").permissions().mode() & 0o077, 0, "private");
    }

    #[tokio::test]
    async fn abandoned_cleanups_are_reported_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        record_abandoned(dir.path(), &finished_run(1), "budget").await;
        let alerts = take_abandoned(dir.path());
        assert_eq!(alerts.len(), 1);
        assert!(
            alerts[0].message.contains("run r001") && alerts[0].message.contains("budget"),
            "{}",
            alerts[0].message
        );
        assert!(take_abandoned(dir.path()).is_empty());
    }

    #[test]
    fn old_reports_beyond_the_limit_are_deleted_and_other_tests_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let results = dir.path().join("results");
        std::fs::create_dir_all(&results).expect("results");
        for n in 0..5 {
            for test in ["smoke", "smoke-2"] {
                std::fs::write(results.join(format!("{test}-2026120{n}T000000Z-00000{n}.json")), "{}").expect("write");
            }
        }
        std::fs::write(results.join("smoke-notes.txt"), "mine").expect("write");
        prune(dir.path(), "smoke", 2);
        let mut left: Vec<String> = std::fs::read_dir(&results)
            .expect("list")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        left.sort();
        let smoke: Vec<&String> = left.iter().filter(|n| n.starts_with("smoke-2026")).collect();
        assert_eq!(smoke, ["smoke-20261203T000000Z-000003.json", "smoke-20261204T000000Z-000004.json"]);
        assert_eq!(left.iter().filter(|n| n.starts_with("smoke-2-")).count(), 5, "{left:?}");
        assert!(left.contains(&"smoke-notes.txt".to_owned()));
    }
}
