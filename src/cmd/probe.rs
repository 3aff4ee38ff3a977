//! `llmdeck probe`: smoke-test and benchmark an OpenAI-compatible endpoint from the shell.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::probe::{ApiKey, Endpoint, Outcome, ProbeError, ProbeOptions, Stop, Timeouts, prompts};
use crate::protocol::{Percentiles, ProbeProgress, ProbeReport};

/// Prompt files larger than this are refused.
const MAX_PROMPT_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Exit status: 0 every request succeeded, 1 some failed (or the endpoint \
    could not be reached), 2 usage error, 130 interrupted (the partial report is printed).")]
pub struct ProbeArgs {
    /// The server root, e.g. http://127.0.0.1:8001
    pub base_url: String,

    /// Model to request (default: the first one /v1/models lists)
    #[arg(long)]
    pub model: Option<String>,

    /// Number of requests to send [default: 20]
    #[arg(long, short = 'n', conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Send requests for this long instead (e.g. 30, 30s, 2m); requests in flight then finish
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,

    /// Requests in flight at once
    #[arg(long, short = 'c', default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Open loop: start this many requests per second (still capped by --concurrency)
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// max_tokens of each request
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,

    /// Stream answers (SSE) and measure time to first token (the default)
    #[arg(long, overrides_with = "no_stream")]
    pub stream: bool,

    /// Ask for whole answers instead of streams
    #[arg(long, overrides_with = "stream")]
    pub no_stream: bool,

    /// Which API to call
    #[arg(long, value_enum, default_value_t = Endpoint::Chat)]
    pub endpoint: Endpoint,

    /// JSONL prompts, one {"prompt": "...", "expected": "..."} per line (default: a built-in
    /// set of arithmetic and capital-city questions with expected answers)
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,

    /// Name of the environment variable holding the API key (sent as a bearer token)
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,

    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,

    /// Timeout for establishing a connection
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub timeout_connect: Duration,

    /// Timeout until the first token (streaming) or the response headers (non-streaming)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub timeout_first_token: Duration,

    /// Longest gap between two chunks once the answer has started
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub timeout_idle: Duration,

    /// Timeout for a whole request
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = positive_duration)]
    pub timeout_total: Duration,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = crate::util::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(d)
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive number of requests per second")),
    }
}

pub async fn run(args: ProbeArgs) -> color_eyre::Result<ExitCode> {
    let opts = match options(&args).await {
        Ok(opts) => opts,
        Err(message) => {
            say!("llmdeck probe: {message}");
            return Ok(exit::code(exit::USAGE));
        }
    };
    let cancel = CancellationToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = tokio::spawn({
        let cancel = cancel.clone();
        let interrupted = interrupted.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                cancel.cancel();
            }
        }
    });

    // Live progress only for a person watching; piped output gets nothing but the result.
    let live = std::io::stderr().is_terminal();
    let (progress_tx, painter) = if live {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(tokio::spawn(paint_progress(rx))))
    } else {
        (None, None)
    };
    let result = crate::probe::run(opts, cancel, progress_tx).await;
    if let Some(painter) = painter {
        let _ = painter.await;
    }
    on_ctrl_c.abort();
    let interrupted = interrupted.load(Ordering::SeqCst);

    let report = match result {
        Ok(report) => report,
        Err(ProbeError::Invalid(message)) => {
            say!("llmdeck probe: {message}");
            return Ok(exit::code(exit::USAGE));
        }
        Err(ProbeError::Cancelled) => {
            say!("llmdeck probe: interrupted before the first request");
            return Ok(exit::code(exit::CANCELLED));
        }
        Err(e) => {
            say!("llmdeck probe: {}", shown(&e.to_string()));
            return Ok(exit::code(exit::FAILED));
        }
    };
    let out = if args.json {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        format_table(&report, &args)
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not our failure.
    let _ = stdout.write_all(out.as_bytes()).and_then(|_| stdout.flush());
    if interrupted {
        say!("llmdeck probe: interrupted; the report covers the requests that finished");
        return Ok(exit::code(exit::CANCELLED));
    }
    Ok(exit::code(if report.all_succeeded() { exit::OK } else { exit::FAILED }))
}

/// Turns the command line into options; errors are usage errors.
async fn options(args: &ProbeArgs) -> Result<ProbeOptions, String> {
    let mut opts = ProbeOptions::new(&args.base_url);
    opts.model = args.model.clone();
    opts.endpoint = args.endpoint;
    opts.stream = !args.no_stream;
    opts.max_tokens = args.max_tokens;
    opts.concurrency = args.concurrency;
    opts.rate = args.rate;
    opts.stop = match (args.requests, args.duration) {
        (_, Some(d)) => Stop::Duration(d),
        (Some(n), None) => Stop::Requests(n),
        (None, None) => Stop::Requests(u64::from(crate::config::ProbeConfig::default().requests)),
    };
    opts.timeouts = Timeouts {
        connect: args.timeout_connect,
        first_token: args.timeout_first_token,
        idle: args.timeout_idle,
        total: args.timeout_total,
    };
    if let Some(var) = &args.api_key_env {
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => opts.api_key = Some(ApiKey::new(key.trim())),
            _ => return Err(format!("--api-key-env: the environment variable {var} is not set")),
        }
    }
    if let Some(path) = &args.prompt_file {
        opts.prompts = read_prompt_file(path).await?;
    }
    crate::probe::normalise_base_url(&args.base_url).map_err(|e| e.to_string())?;
    Ok(opts)
}

async fn read_prompt_file(path: &std::path::Path) -> Result<Vec<prompts::Prompt>, String> {
    let shown = path.display();
    let meta = tokio::fs::metadata(path).await.map_err(|e| format!("--prompt-file {shown}: {e}"))?;
    if meta.len() > MAX_PROMPT_FILE_BYTES {
        return Err(format!("--prompt-file {shown}: larger than {} MiB", MAX_PROMPT_FILE_BYTES >> 20));
    }
    let text = tokio::fs::read_to_string(path).await.map_err(|e| format!("--prompt-file {shown}: {e}"))?;
    prompts::parse_jsonl(&text).map_err(|e| format!("--prompt-file {shown}: {e}"))
}

/// Redraws one status line on stderr until the run ends, then erases it.
async fn paint_progress(mut rx: mpsc::Receiver<ProbeProgress>) {
    let mut stderr = std::io::stderr();
    while let Some(p) = rx.recv().await {
        let _ = write!(stderr, "\r\x1b[2K{}", progress_line(&p));
        let _ = stderr.flush();
        if p.finished {
            break;
        }
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}

/// `12/20 done · 4 in flight · success 10, rate_limited 2 · TTFT p50 31.2 ms · 812 tok/s · 1.4 s`
pub fn progress_line(p: &ProbeProgress) -> String {
    let mut line = match p.planned {
        Some(n) => format!("{}/{n} done", p.done),
        None => format!("{} done", p.done),
    };
    let _ = write!(line, " · {} in flight", p.in_flight);
    let counts: Vec<String> = p.outcomes.iter().filter(|(_, n)| **n > 0).map(|(o, n)| format!("{o} {n}")).collect();
    if !counts.is_empty() {
        let _ = write!(line, " · {}", counts.join(", "));
    }
    if let Some(ttft) = p.ttft_p50_ms {
        let _ = write!(line, " · TTFT p50 {}", ms(ttft));
    }
    let _ = write!(line, " · {:.0} tok/s · {:.1} s", p.output_tokens_per_s, p.elapsed_ms as f64 / 1000.0);
    line
}

fn ms(v: f64) -> String {
    crate::util::fmt_ms(v)
}

/// The human report.
pub fn format_table(report: &ProbeReport, args: &ProbeArgs) -> String {
    let mut out = String::new();
    let mode = if args.no_stream { "non-streaming" } else { "streaming" };
    let endpoint = match args.endpoint {
        Endpoint::Chat => "chat",
        Endpoint::Completions => "completions",
    };
    let _ = writeln!(out, "target   {}", shown(&report.target));
    let _ = writeln!(out, "model    {} ({endpoint}, {mode})", shown(&report.model));
    let _ = writeln!(
        out,
        "requests {} in {:.2} s: {:.1} req/s, {:.1} output tok/s{}",
        report.requests,
        report.duration_s,
        report.requests_per_s,
        report.output_tokens_per_s,
        if report.extra.output_tokens_estimated { " (some token counts estimated)" } else { "" }
    );
    if let Some(rate) = report.expected_answer_rate {
        let _ = writeln!(
            out,
            "answers  {:.0}% as expected ({} of {} checked)",
            rate * 100.0,
            report.extra.answers_matched,
            report.extra.answers_checked
        );
    }
    if report.extra.cancelled {
        let _ = writeln!(out, "run      CANCELLED before its end (partial results)");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "outcome              count");
    for outcome in Outcome::ALL {
        let n = report.count(outcome);
        if n > 0 || outcome == Outcome::Success {
            let flag = if outcome == Outcome::Success { " " } else { "!" };
            let _ = writeln!(out, "{flag}{:<20}{n:>5}", outcome.name());
        }
    }
    let _ = writeln!(out);
    let _ =
        writeln!(out, "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}", "successful requests", "p50", "p90", "p95", "p99", "max");
    for (name, p) in [
        ("latency", &report.latency_ms),
        ("time to first token", &report.ttft_ms),
        ("inter-token latency", &report.itl_ms),
    ] {
        let _ = writeln!(out, "{}", percentile_row(name, p));
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "errors (first distinct messages per class)");
        for (outcome, messages) in &report.errors {
            for message in messages {
                let _ = writeln!(out, "  {outcome}: {}", shown(message));
            }
        }
    }
    out
}

/// Text the server sent, fit for the operator's terminal: no escape sequence (a title, a
/// clipboard write) or control character gets through.
fn shown(text: &str) -> String {
    crate::util::clean_excerpt(text, 1000)
}

fn percentile_row(name: &str, p: &Percentiles) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), ms);
    format!("{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}", cell(p.p50), cell(p.p90), cell(p.p95), cell(p.p99), cell(p.max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ProbeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ProbeArgs, clap::Error> {
        let mut full = vec!["probe"];
        full.extend_from_slice(argv);
        Wrapper::try_parse_from(full).map(|w| w.args)
    }

    #[tokio::test]
    async fn defaults_are_a_small_streaming_smoke_run() {
        let args = parse(&["http://127.0.0.1:1"]).unwrap();
        let opts = options(&args).await.unwrap();
        assert!(opts.stream);
        assert_eq!(opts.stop, Stop::Requests(20));
        assert_eq!(opts.concurrency, 4);
        assert_eq!(opts.timeouts.first_token, Duration::from_secs(60));
        assert!(opts.prompts.is_empty());
    }

    #[tokio::test]
    async fn flags_map_to_options() {
        let args = parse(&[
            "http://h:1/v1",
            "--duration",
            "2m",
            "-c",
            "32",
            "--rate",
            "7.5",
            "--no-stream",
            "--endpoint",
            "completions",
            "--timeout-idle",
            "500ms",
        ])
        .unwrap();
        let opts = options(&args).await.unwrap();
        assert_eq!(opts.stop, Stop::Duration(Duration::from_secs(120)));
        assert_eq!(opts.concurrency, 32);
        assert_eq!(opts.rate, Some(7.5));
        assert!(!opts.stream);
        assert_eq!(opts.endpoint, Endpoint::Completions);
        assert_eq!(opts.timeouts.idle, Duration::from_millis(500));
    }

    #[test]
    fn usage_errors_are_rejected_by_the_parser() {
        for bad in [
            vec!["http://h:1", "--requests", "0"],
            vec!["http://h:1", "--requests", "3", "--duration", "5"],
            vec!["http://h:1", "--concurrency", "0"],
            vec!["http://h:1", "--rate", "-1"],
            vec!["http://h:1", "--timeout-total", "0"],
            vec!["http://h:1", "--timeout-idle", "soon"],
            vec!["http://h:1", "--endpoint", "embeddings"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_key_variable_is_a_usage_error() {
        let args = parse(&["http://h:1", "--api-key-env", "LLMDECK_TEST_SURELY_UNSET_VARIABLE"]).unwrap();
        let err = options(&args).await.unwrap_err();
        assert!(err.contains("LLMDECK_TEST_SURELY_UNSET_VARIABLE"), "{err}");
    }

    #[test]
    fn progress_line_is_compact() {
        let mut p = ProbeProgress {
            elapsed_ms: 1400,
            done: 12,
            planned: Some(20),
            in_flight: 4,
            ttft_p50_ms: Some(31.24),
            output_tokens_per_s: 812.4,
            ..ProbeProgress::default()
        };
        p.outcomes.insert(Outcome::Success, 10);
        p.outcomes.insert(Outcome::RateLimited, 2);
        assert_eq!(
            progress_line(&p),
            "12/20 done · 4 in flight · success 10, rate_limited 2 · TTFT p50 31.2 ms · 812 tok/s · 1.4 s"
        );
    }
}
