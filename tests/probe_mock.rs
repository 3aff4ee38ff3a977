//! The probe against real servers on 127.0.0.1: `llmdeck mock-llm` (through the binary) with
//! each of its fault modes, a few tiny in-test servers for what the mock never does, and the
//! `llmdeck probe` command itself. Every wait is bounded.

use std::process::Stdio;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use llmdeck::probe::{
    self, Endpoint, Outcome, ProbeError, ProbeOptions, ProbeProgress, ProbeReport, Prompt, Stop, Timeouts,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_llmdeck");
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for any probe run in these tests (they take well under a second each).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const READY_MARKER: &str = "Uvicorn running on http://";
const MODEL: &str = "mock-model";
/// Not a smoke prompt: the mock answers with filler of `max_tokens` tokens.
const STORY: &str = "Tell me a long story about GPUs.";

/// A running `llmdeck mock-llm`, killed when dropped.
struct Mock {
    _child: Child,
    base: String,
    http: reqwest::Client,
}

impl Mock {
    async fn start(args: &[&str]) -> Result<Mock> {
        Self::start_with_env(args, &[]).await
    }

    async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Mock> {
        let mut child = Command::new(BIN)
            .arg("mock-llm")
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .wrap_err("spawning llmdeck mock-llm")?;
        let stdout = child.stdout.take().ok_or_else(|| eyre!("no stdout pipe"))?;
        let stderr = child.stderr.take().ok_or_else(|| eyre!("no stderr pipe"))?;
        // Kept (bounded) for a failure report, and drained so the server never blocks on it.
        let stderr_tail = tokio::spawn(async move {
            let mut tail: Vec<String> = Vec::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tail.len() == 40 {
                    tail.remove(0);
                }
                tail.push(line);
            }
            tail.join("\n")
        });
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(at) = line.find(READY_MARKER) {
                    let rest = &line[at + READY_MARKER.len()..];
                    let authority = rest.split_whitespace().next().unwrap_or_default();
                    return Ok(format!("http://{authority}"));
                }
            }
            bail!("mock-llm's stdout closed before it was ready")
        })
        .await;
        let base = match ready {
            Ok(Ok(base)) => base,
            Ok(Err(e)) => bail!("{e}\n{}", what_happened(child, stderr_tail).await),
            Err(_) => bail!(
                "mock-llm did not print its readiness line within {READY_TIMEOUT:?}\n{}",
                what_happened(child, stderr_tail).await
            ),
        };
        // Keep the pipe drained so the server never blocks on its own logging.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Mock { _child: child, base, http: reqwest::Client::new() })
    }

    async fn stats(&self) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}/mock/stats", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .wrap_err("GET /mock/stats")?;
        response.json().await.wrap_err("parsing /mock/stats")
    }

    /// Polls `/mock/stats` (the mock's readiness signal for its counters) until `check` holds.
    async fn wait_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats().await?;
            if check(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("mock-llm never reached: {what}; last stats {stats}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How a mock that never got ready ended: its exit status and the tail of its stderr.
async fn what_happened(mut child: Child, stderr_tail: tokio::task::JoinHandle<String>) -> String {
    let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) => format!("it exited: {status}"),
        _ => {
            let _ = child.kill().await;
            "it was still running (now killed)".to_owned()
        }
    };
    let stderr = tokio::time::timeout(Duration::from_secs(2), stderr_tail).await;
    let stderr = stderr.ok().and_then(Result::ok).unwrap_or_else(|| "(unreadable)".into());
    format!("{status}\n--- stderr (last 40 lines):\n{stderr}")
}

fn count(stats: &Value, endpoint: &str, status: &str) -> u64 {
    stats["by_endpoint"][endpoint][status].as_u64().unwrap_or(0)
}

/// Options for `n` requests against `base`, model named (so no /v1/models round trip).
fn options(base: &str, n: u64, stream: bool) -> ProbeOptions {
    let mut opts = ProbeOptions::new(base);
    opts.model = Some(MODEL.into());
    opts.stop = Stop::Requests(n);
    opts.stream = stream;
    opts.concurrency = 4;
    opts.max_tokens = 16;
    opts.timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_token: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        total: Duration::from_secs(20),
    };
    opts
}

fn story(opts: &mut ProbeOptions) {
    opts.prompts = vec![Prompt::new(STORY, None)];
}

async fn run(opts: ProbeOptions) -> Result<ProbeReport> {
    run_with(opts, CancellationToken::new(), None).await
}

async fn run_with(
    opts: ProbeOptions,
    cancel: CancellationToken,
    progress: Option<mpsc::Sender<ProbeProgress>>,
) -> Result<ProbeReport> {
    tokio::time::timeout(RUN_TIMEOUT, probe::run(opts, cancel, progress))
        .await
        .wrap_err("the probe run did not finish in time")?
        .wrap_err("the probe run failed")
}

/// Every request of the report ended in `outcome`.
fn assert_all(report: &ProbeReport, outcome: Outcome, n: u64) {
    assert_eq!(report.requests, n, "{report:#?}");
    assert_eq!(report.count(outcome), n, "{report:#?}");
}

#[tokio::test]
async fn smoke_prompts_succeed_with_expected_answers_on_every_endpoint() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    for endpoint in [Endpoint::Chat, Endpoint::Completions] {
        for stream in [true, false] {
            let mut opts = options(&mock.base, 12, stream);
            opts.model = None; // the first model of /v1/models
            opts.endpoint = endpoint;
            let report = run(opts).await?;
            let case = format!("{endpoint:?} stream={stream}");
            assert_eq!(report.model, MODEL, "{case}");
            assert_eq!(report.target, mock.base, "{case}");
            assert_all(&report, Outcome::Success, 12);
            assert!(report.all_succeeded(), "{case}");
            assert_eq!(report.expected_answer_rate, Some(1.0), "{case}");
            // The mock reports usage: counts are exact, not estimated.
            assert!(!report.extra.output_tokens_estimated, "{case}");
            assert!(report.output_tokens_per_s > 0.0, "{case}");
            assert!(report.latency_ms.p50.is_some(), "{case}");
            assert_eq!(report.ttft_ms.p50.is_some(), stream, "{case}");
            assert!(report.errors.is_empty(), "{case}: {:?}", report.errors);
        }
    }
    let stats = mock.stats().await?;
    assert_eq!(count(&stats, "/v1/chat/completions", "200"), 24);
    assert_eq!(count(&stats, "/v1/completions", "200"), 24);
    Ok(())
}

#[tokio::test]
async fn error_mixes_are_counted_exactly() -> Result<()> {
    let mock = Mock::start(&["--error-rate", "0.5", "--seed", "7"]).await?;
    for stream in [false, true] {
        let before = mock.stats().await?;
        let mut opts = options(&mock.base, 90, stream);
        opts.concurrency = 8;
        let report = run(opts).await?;
        let after = mock.stats().await?;
        let served = |status: &str| {
            count(&after, "/v1/chat/completions", status) - count(&before, "/v1/chat/completions", status)
        };
        assert_eq!(report.requests, 90);
        assert_eq!(report.count(Outcome::Success), served("200"));
        assert_eq!(report.count(Outcome::RateLimited), served("429"));
        assert_eq!(report.count(Outcome::ServerError), served("500") + served("503"));
        assert!(served("429") > 0 && served("500") > 0 && served("503") > 0);
        let other: u64 = Outcome::ALL
            .iter()
            .filter(|o| ![Outcome::Success, Outcome::RateLimited, Outcome::ServerError].contains(o))
            .map(|o| report.count(*o))
            .sum();
        assert_eq!(other, 0, "{report:#?}");
        let limited = &report.errors[&Outcome::RateLimited];
        assert!(limited[0].starts_with("HTTP 429: Rate limit"), "{limited:?}");
        let server = &report.errors[&Outcome::ServerError];
        assert!(server.iter().any(|m| m.starts_with("HTTP 500")), "{server:?}");
        assert!(server.iter().any(|m| m.starts_with("HTTP 503")), "{server:?}");
        assert!(!report.all_succeeded());
    }
    Ok(())
}

#[tokio::test]
async fn overload_statuses_after_a_stall_are_server_errors() -> Result<()> {
    // 529 (capacity) and a 504 that arrives after a delay: server errors, not timeouts.
    let mock = Mock::start(&["--error-rate", "1", "--error-mix", "504:1,529:1", "--latency-ms", "150"]).await?;
    let report = run(options(&mock.base, 8, true)).await?;
    assert_all(&report, Outcome::ServerError, 8);
    Ok(())
}

#[tokio::test]
async fn a_hung_server_is_a_first_token_timeout_or_a_total_timeout() -> Result<()> {
    let mock = Mock::start(&["--hang-after", "0"]).await?;
    mock.wait_stats("hung", |s| s["hung"] == true).await?;
    for stream in [true, false] {
        let mut opts = options(&mock.base, 4, stream);
        opts.timeouts.first_token = Duration::from_millis(300);
        let report = run(opts).await?;
        assert_all(&report, Outcome::TimeoutFirstToken, 4);
        // Each request waited its full 300 ms.
        assert!(report.duration_s >= 0.3, "{}", report.duration_s);
    }
    // When the total timeout is the shorter one, it is the one reported.
    let mut opts = options(&mock.base, 2, true);
    opts.timeouts.first_token = Duration::from_secs(10);
    opts.timeouts.total = Duration::from_millis(200);
    assert_all(&run(opts).await?, Outcome::TimeoutTotal, 2);
    Ok(())
}

#[tokio::test]
async fn a_stream_that_stalls_mid_answer_is_an_idle_timeout() -> Result<()> {
    let mock = Mock::start(&["--stream-stall-after-tokens", "3"]).await?;
    let mut opts = options(&mock.base, 4, true);
    story(&mut opts);
    opts.timeouts.idle = Duration::from_millis(300);
    let report = run(opts).await?;
    assert_all(&report, Outcome::TimeoutIdle, 4);
    assert!(report.errors[&Outcome::TimeoutIdle][0].contains("timeout_idle"));

    // Non-streaming, the same stall means no answer at all.
    let mut opts = options(&mock.base, 2, false);
    story(&mut opts);
    opts.timeouts.first_token = Duration::from_millis(300);
    assert_all(&run(opts).await?, Outcome::TimeoutFirstToken, 2);
    Ok(())
}

/// Real servers (llama.cpp's Python server) answer a request that arrives while another runs
/// with nothing: the role chunk then `[DONE]`, or empty content. That is not a success.
#[tokio::test]
async fn answers_cut_off_under_load_are_incomplete_not_successes() -> Result<()> {
    let mock = Mock::start(&["--cut-off-when-busy", "--latency-ms", "200"]).await?;
    for stream in [true, false] {
        let opts = options(&mock.base, 8, stream);
        assert_eq!(opts.concurrency, 4);
        let report = run(opts).await?;
        let (ok, cut) = (report.count(Outcome::Success), report.count(Outcome::Incomplete));
        assert!(cut >= 1, "with four in flight some answers are cut off: {report:#?}");
        assert_eq!(ok + cut, 8, "{report:#?}");
        assert!(!report.all_succeeded());
    }
    // One at a time, nothing is cut off.
    let mut opts = options(&mock.base, 4, true);
    opts.concurrency = 1;
    assert_all(&run(opts).await?, Outcome::Success, 4);
    Ok(())
}

#[tokio::test]
async fn a_connection_cut_mid_answer_is_a_connection_error() -> Result<()> {
    let mock = Mock::start(&["--drop-after-tokens", "3"]).await?;
    for stream in [true, false] {
        let mut opts = options(&mock.base, 4, stream);
        story(&mut opts);
        let report = run(opts).await?;
        assert_all(&report, Outcome::ConnectionError, 4);
    }
    Ok(())
}

#[tokio::test]
async fn a_server_crash_mid_stream_is_a_connection_error() -> Result<()> {
    // 100 tokens at 40/s take 2.5 s; the process exits 1.5 s after it started, while the
    // streams are running.
    let mock = Mock::start(&["--crash-after", "1500ms", "--tokens-per-s", "40"]).await?;
    let mut opts = options(&mock.base, 4, true);
    story(&mut opts);
    opts.max_tokens = 100;
    let report = run(opts).await?;
    assert_all(&report, Outcome::ConnectionError, 4);
    // The streams had started: the partial figures were measured.
    assert!(report.errors[&Outcome::ConnectionError][0].contains("stream broke"));
    drop(mock);
    Ok(())
}

#[tokio::test]
async fn broken_bodies_are_malformed() -> Result<()> {
    let mock = Mock::start(&["--malformed-rate", "1"]).await?;
    for stream in [true, false] {
        let report = run(options(&mock.base, 4, stream)).await?;
        assert_all(&report, Outcome::Malformed, 4);
    }
    Ok(())
}

#[tokio::test]
async fn streaming_ttft_is_below_total_latency() -> Result<()> {
    let mock = Mock::start(&["--latency-ms", "60", "--tokens-per-s", "200"]).await?;
    let mut opts = options(&mock.base, 8, true);
    story(&mut opts);
    opts.max_tokens = 20;
    let report = run(opts).await?;
    assert_all(&report, Outcome::Success, 8);
    let ttft = report.ttft_ms;
    let latency = report.latency_ms;
    let itl = report.itl_ms;
    let (Some(ttft_p50), Some(ttft_max), Some(latency_p50), Some(latency_max), Some(itl_max)) =
        (ttft.p50, ttft.max, latency.p50, latency.max, itl.max)
    else {
        bail!("missing percentiles: {report:#?}");
    };
    assert!(ttft_p50 >= 60.0, "TTFT includes the server's 60 ms latency: {ttft:?}");
    // Every request's first token came before its end, so each order statistic of TTFT is
    // below the same order statistic of latency.
    assert!(ttft_p50 < latency_p50, "ttft {ttft:?} latency {latency:?}");
    assert!(ttft_max < latency_max, "ttft {ttft:?} latency {latency:?}");
    // 19 gaps after the first token, paced 5 ms apart by the server: at least one is >= 4.5 ms.
    assert!(itl_max >= 4.5, "{itl:?}");
    assert!(!report.extra.output_tokens_estimated);
    assert_eq!(report.extra.output_tokens, 8 * 20);
    Ok(())
}

/// `--stamp-chunks`: the report splits what the client adds from what the server did. The
/// server's 60 ms latency is in the measured TTFT but not in its error; without stamps there is
/// no such figure at all.
#[tokio::test]
async fn stamped_chunks_measure_the_delay_the_client_adds() -> Result<()> {
    let mock = Mock::start(&["--latency-ms", "60", "--tokens-per-s", "200", "--stamp-chunks"]).await?;
    let mut opts = options(&mock.base, 8, true);
    story(&mut opts);
    opts.max_tokens = 20;
    let report = run(opts.clone()).await?;
    assert_all(&report, Outcome::Success, 8);
    let Some(delay) = &report.client_delay else { bail!("no client_delay: {report:#?}") };
    let (Some(ttft_p50), Some(error_max), Some(delivery_p50), Some(itl_error_p50)) =
        (report.ttft_ms.p50, delay.ttft_error_ms.max, delay.delivery_ms.p50, delay.itl_error_ms.p50)
    else {
        bail!("missing percentiles: {report:#?}");
    };
    assert!(ttft_p50 >= 60.0, "{report:#?}");
    assert!(error_max < ttft_p50 - 50.0, "the server's latency counted as the client's: {delay:?}");
    assert!(delivery_p50 >= 0.0 && itl_error_p50 >= 0.0, "{delay:?}");
    let json = serde_json::to_value(&report)?;
    assert!(json["client_delay"]["itl_error_ms"]["p99"].is_number(), "{json}");

    let plain = Mock::start(&["--tokens-per-s", "200"]).await?;
    let mut opts = options(&plain.base, 4, true);
    story(&mut opts);
    let report = run(opts).await?;
    assert!(report.client_delay.is_none(), "{report:#?}");
    assert!(serde_json::to_value(&report)?.get("client_delay").is_none());
    Ok(())
}

#[tokio::test]
async fn cancellation_closes_the_servers_streams_and_keeps_partial_results() -> Result<()> {
    // Slow streams: 200 tokens at 10/s would take 20 s.
    let mock = Mock::start(&["--tokens-per-s", "10"]).await?;
    let mut opts = options(&mock.base, 1000, true);
    story(&mut opts);
    opts.max_tokens = 200;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let probe_run = tokio::spawn(run_with(opts, cancel.clone(), Some(tx)));
    // Wait until the server has all four streams open and the first tokens have arrived.
    mock.wait_stats("4 streams in flight", |s| s["in_flight"] == 4).await?;
    loop {
        let progress =
            tokio::time::timeout(RUN_TIMEOUT, rx.recv()).await?.ok_or_else(|| eyre!("progress ended early"))?;
        if progress.in_flight == 4 && progress.elapsed_ms >= 500 {
            // Nothing has finished, yet tokens are flowing and counted live.
            assert_eq!(progress.done, 0);
            assert!(progress.output_tokens_per_s > 0.0, "{progress:?}");
            break;
        }
    }
    cancel.cancel();
    // Uncancelled, these streams would run 20 s and end as successes: the outcomes tell.
    let report =
        tokio::time::timeout(RUN_TIMEOUT, probe_run).await.wrap_err("the run did not end after cancel")???;
    assert!(report.extra.cancelled);
    assert_eq!(report.requests, 4, "{report:#?}");
    assert_eq!(report.count(Outcome::Cancelled), 4);
    let stats = mock.wait_stats("4 client disconnects", |s| s["client_disconnects"] == 4).await?;
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["completed_streams"], 0);
    // The last progress message says the run is over.
    let mut last = None;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        last = Some(p);
    }
    let last = last.ok_or_else(|| eyre!("no final progress"))?;
    assert!(last.finished);
    assert_eq!(last.done, 4);
    assert_eq!(last.outcomes.get(&Outcome::Cancelled), Some(&4));
    Ok(())
}

#[tokio::test]
async fn dropping_a_run_stops_its_requests_too() -> Result<()> {
    let mock = Mock::start(&["--tokens-per-s", "10"]).await?;
    let mut opts = options(&mock.base, 1000, true);
    story(&mut opts);
    opts.max_tokens = 200;
    let probe_run = tokio::spawn(run(opts));
    mock.wait_stats("4 streams in flight", |s| s["in_flight"] == 4).await?;
    probe_run.abort();
    let stats = mock.wait_stats("4 client disconnects", |s| s["client_disconnects"] == 4).await?;
    assert_eq!(stats["in_flight"], 0);
    Ok(())
}

#[tokio::test]
async fn progress_reports_counts_ttft_and_a_final_snapshot() -> Result<()> {
    let mock = Mock::start(&["--tokens-per-s", "100"]).await?;
    let mut opts = options(&mock.base, 12, true);
    story(&mut opts);
    opts.max_tokens = 30; // ~0.3 s a request, three waves
    let (tx, mut rx) = mpsc::channel(64);
    let report = run_with(opts, CancellationToken::new(), Some(tx)).await?;
    let mut seen: Vec<ProbeProgress> = Vec::new();
    while let Some(p) = rx.recv().await {
        seen.push(p);
    }
    let last = seen.last().ok_or_else(|| eyre!("no progress at all"))?;
    assert!(last.finished);
    assert_eq!(last.done, 12);
    assert_eq!(last.planned, Some(12));
    assert_eq!(last.in_flight, 0);
    assert_eq!(last.outcomes.get(&Outcome::Success), Some(&12));
    assert!(last.ttft_p50_ms.is_some());
    assert!(seen.len() >= 2, "progress was published during the run too");
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(report.requests, 12);
    Ok(())
}

#[tokio::test]
async fn load_shapes_duration_and_open_loop_rate() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    let mut opts = options(&mock.base, 1, false);
    opts.stop = Stop::Duration(Duration::from_millis(300));
    let report = run(opts).await?;
    // How many fit in 300 ms depends on the machine; that the run lasted them does not.
    assert!(report.requests >= 1, "{report:#?}");
    assert!(report.all_succeeded());
    // Workers stop only after seeing the end, so the last request finished after it.
    assert!(report.duration_s >= 0.3);

    // 10 requests at 20/s: the last one starts 450 ms after the first.
    let mut opts = options(&mock.base, 10, false);
    opts.rate = Some(20.0);
    let report = run(opts).await?;
    assert_all(&report, Outcome::Success, 10);
    assert!(report.duration_s >= 0.45, "{}", report.duration_s);
    Ok(())
}

#[tokio::test]
async fn api_keys_are_sent_as_bearer_tokens() -> Result<()> {
    let env = [("PROBE_TEST_MOCK_KEY", "sk-probe-test")];
    let mock = Mock::start_with_env(&["--api-key-env", "PROBE_TEST_MOCK_KEY"], &env).await?;
    let report = run(options(&mock.base, 3, true)).await?;
    assert_all(&report, Outcome::ClientError, 3);
    assert!(report.errors[&Outcome::ClientError][0].starts_with("HTTP 401"));

    let mut opts = options(&mock.base, 3, true);
    opts.api_key = Some(probe::ApiKey::new("sk-probe-test"));
    opts.model = None;
    let report = run(opts).await?;
    assert_all(&report, Outcome::Success, 3);

    // Listing models without the key fails the run before any request.
    let mut opts = options(&mock.base, 3, true);
    opts.model = None;
    match probe::run(opts, CancellationToken::new(), None).await {
        Err(ProbeError::Models { outcome, .. }) => assert_eq!(outcome, Outcome::ClientError),
        other => bail!("expected a model-listing error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_unknown_model_is_a_client_error() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    let mut opts = options(&mock.base, 2, false);
    opts.model = Some("no-such-model".into());
    let report = run(opts).await?;
    assert_all(&report, Outcome::ClientError, 2);
    assert!(report.errors[&Outcome::ClientError][0].contains("does not exist"));
    Ok(())
}

// ---- What the mock never does: tiny servers in the test. ----

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let report = run(options(&base, 3, true)).await?;
    assert_all(&report, Outcome::ConnectionError, 3);
    Ok(())
}

#[tokio::test]
async fn a_full_accept_queue_is_a_connect_timeout() -> Result<()> {
    // A listener that never accepts, with a backlog of 0: once its queue is full the kernel
    // drops further SYNs, so a new connection can only time out.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr = socket.local_addr()?;
    let _listener = socket.listen(0)?;
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => bail!("connecting to the backlog listener: {e}"),
            Err(_) => break, // the queue is full
        }
    }
    let mut opts = options(&format!("http://{addr}"), 2, true);
    opts.timeouts.connect = Duration::from_millis(300);
    let report = run(opts).await?;
    assert_all(&report, Outcome::TimeoutConnect, 2);
    Ok(())
}

/// Serves `app` on 127.0.0.1; returns the base URL.
async fn serve(app: axum::Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(base)
}

#[tokio::test]
async fn wrong_content_types_unfinished_streams_and_redirects_are_malformed() -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::post;

    let html = axum::Router::new()
        .route("/v1/chat/completions", post(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html>hi</html>") }));
    let base = serve(html).await?;
    for stream in [true, false] {
        let report = run(options(&base, 2, stream)).await?;
        assert_all(&report, Outcome::Malformed, 2);
        assert!(report.errors[&Outcome::Malformed][0].contains("content type"));
    }

    // A stream that ends cleanly but never says [DONE].
    let unfinished = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            ([(header::CONTENT_TYPE, "text/event-stream")], "data: {\"choices\":[{\"delta\":{\"content\":\"4\"}}]}\n\n")
        }),
    );
    let base = serve(unfinished).await?;
    let report = run(options(&base, 2, true)).await?;
    assert_all(&report, Outcome::Malformed, 2);
    assert!(report.errors[&Outcome::Malformed][0].contains("[DONE]"));

    let redirect = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/elsewhere")]) }),
    );
    let base = serve(redirect).await?;
    let report = run(options(&base, 1, false)).await?;
    assert_all(&report, Outcome::Malformed, 1);
    assert!(report.errors[&Outcome::Malformed][0].contains("not followed"));
    Ok(())
}

// ---- `llmdeck probe` ----

async fn probe_cmd(args: &[&str]) -> Result<std::process::Output> {
    probe_cmd_with_env(args, &[]).await
}

async fn probe_cmd_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let child = Command::new(BIN)
        .arg("probe")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .wrap_err("spawning llmdeck probe")?;
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .wrap_err("llmdeck probe did not finish in time")?
        .wrap_err("waiting for llmdeck probe")
}

#[tokio::test]
async fn the_command_prints_json_and_exits_by_outcome() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    let out = probe_cmd(&[&mock.base, "--json", "-n", "6", "--no-stream"]).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Piped: nothing but the result.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["requests"], 6);
    assert_eq!(json["model"], MODEL);
    assert_eq!(json["outcomes"]["success"], 6);
    assert_eq!(json["outcomes"]["timeout_idle"], 0);
    assert_eq!(json["expected_answer_rate"], 1.0);
    assert!(json["ttft_ms"]["p50"].is_null());
    assert!(json["latency_ms"]["p99"].is_number());

    let table = probe_cmd(&[&mock.base, "-n", "3"]).await?;
    assert_eq!(table.status.code(), Some(0), "{table:?}");
    let text = String::from_utf8(table.stdout)?;
    assert!(text.contains("time to first token"), "{text}");
    assert!(text.contains("100% as expected"), "{text}");

    let failing = Mock::start(&["--error-rate", "1", "--error-mix", "503"]).await?;
    let out = probe_cmd(&[&failing.base, "--json", "-n", "3"]).await?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["outcomes"]["server_error"], 3);
    assert_eq!(json["errors"]["server_error"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn the_command_reports_usage_errors_with_exit_2() -> Result<()> {
    for args in [
        vec!["http://127.0.0.1:1", "--requests", "0"],
        vec!["http://127.0.0.1:1", "--timeout-idle", "soon"],
        vec!["not-a-url"],
        vec!["http://127.0.0.1:1", "--api-key-env", "PROBE_TEST_UNSET_VARIABLE"],
        vec!["http://127.0.0.1:1", "--prompt-file", "/nonexistent/prompts.jsonl"],
        // Numbers that used to panic, and one past the concurrency bound.
        vec!["http://127.0.0.1:1", "--timeout-total", "1e20"],
        vec!["http://127.0.0.1:1", "--duration", "1e300"],
        vec!["http://127.0.0.1:1", "--rate", "1e-300"],
        vec!["http://127.0.0.1:1", "--rate", "1e300"],
        vec!["http://127.0.0.1:1", "--concurrency", "100000"],
    ] {
        let out = probe_cmd(&args).await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
    // An endpoint that cannot be reached is a failed check, not a usage error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let out = probe_cmd(&[&base]).await?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn the_command_reads_prompt_files() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("prompts.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"What is the largest planet?\", \"expected\": \"Jupiter\"}\n\
         {\"prompt\": \"What is the capital of Germany?\", \"expected\": \"Paris\"}\n",
    )?;
    let path = path.to_string_lossy().into_owned();
    let out = probe_cmd(&[&mock.base, "--json", "-n", "4", "--prompt-file", &path]).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout)?;
    // Berlin is not Paris: half the answers are wrong, and the requests still succeeded.
    assert_eq!(json["expected_answer_rate"], 0.5);
    Ok(())
}

#[tokio::test]
async fn ctrl_c_prints_the_partial_report_and_exits_130() -> Result<()> {
    let mock = Mock::start(&["--tokens-per-s", "10"]).await?;
    let dir = tempfile::tempdir()?;
    let prompts = dir.path().join("story.jsonl");
    std::fs::write(&prompts, format!("{{\"prompt\": \"{STORY}\"}}\n"))?;
    let child = Command::new(BIN)
        .args(["probe", &mock.base, "--json", "-n", "100", "-c", "3"])
        .args(["--max-tokens", "200", "--prompt-file"])
        .arg(&prompts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or_else(|| eyre!("no pid"))?;
    // Ready when the server has three completion streams open (the model listing is done).
    mock.wait_stats("3 streams in flight", |s| s["in_flight"] == 3 && count(s, "/v1/models", "200") == 1).await?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), nix::sys::signal::Signal::SIGINT)?;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output()).await??;
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["outcomes"]["cancelled"], 3);
    assert_eq!(json["requests"], 3);
    mock.wait_stats("3 client disconnects", |s| s["client_disconnects"] == 3).await?;
    Ok(())
}

/// A hostile endpoint cannot write to the operator's terminal through the probe's text output:
/// its model id and error messages carry a clipboard write (OSC 52), a title (OSC 0) and
/// screen-clearing CSI sequences, in 7-bit and C1 forms; what is shown is the visible text.
#[tokio::test]
async fn a_hostile_servers_escape_sequences_never_reach_the_terminal() -> Result<()> {
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let model = "evil\x1b]52;c;aGVsbG8=\x07-model\x1b[2J\u{9b}31m";
    let message = "bad\x1b]0;pwned\x07 request\x1b[1;1H\u{9d}52;c;eA==\u{9c}!";
    let app = axum::Router::new()
        .route("/v1/models", get(move || async move { axum::Json(serde_json::json!({"data": [{"id": model}]})) }))
        .route(
            "/v1/chat/completions",
            post(move || async move {
                (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": {"message": message}})))
            }),
        );
    let base = serve(app).await?;
    for stream in [false, true] {
        let mut args = vec![base.as_str(), "-n", "2"];
        if !stream {
            args.push("--no-stream");
        }
        let out = probe_cmd(&args).await?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8(out.stdout)?;
        let stderr = String::from_utf8(out.stderr)?;
        for text in [&stdout, &stderr] {
            assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "a control character got through: {text:?}");
        }
        assert!(stdout.contains("evil-model"), "{stdout}");
        assert!(stdout.contains("bad request!"), "{stdout}");
    }
    Ok(())
}

/// A bearer key for a local model never travels to a proxy: with every proxy variable pointing
/// at a port nobody listens on, a loopback target is still reached directly.
#[tokio::test]
async fn loopback_targets_never_go_through_a_proxy() -> Result<()> {
    let mock = Mock::start(&[]).await?;
    // Port 1: privileged, nothing listens there.
    let proxy = "http://127.0.0.1:1".to_owned();
    let env: Vec<(&str, &str)> = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .into_iter()
        .map(|k| (k, proxy.as_str()))
        .chain([("NO_PROXY", ""), ("no_proxy", "")])
        .collect();
    let out = probe_cmd_with_env(&[&mock.base, "--json", "-n", "2", "--no-stream"], &env).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["outcomes"]["success"], 2);
    Ok(())
}
