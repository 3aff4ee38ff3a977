//! `llmdeck mock-llm`: an OpenAI-compatible server that behaves like vLLM where it matters, with
//! fault injection, for the demo and for tests.
//!
//! # Endpoints
//! - `GET /health`: 200, empty body (like vLLM).
//! - `GET /v1/models`: an OpenAI model list with `--model-name`.
//! - `POST /v1/chat/completions`, `POST /v1/completions`: non-streaming with `usage`, or
//!   streaming (`"stream": true`) as SSE `data: {...}\n\n` chunks — chat's first chunk carries
//!   the role, then one content token per chunk, a chunk with `finish_reason`, a usage chunk
//!   (`"choices": []`) when `stream_options.include_usage` is true, then `data: [DONE]`.
//!   A `model` other than `--model-name` gets 404; `max_tokens` 0 or beyond the context length
//!   (8192) gets 400, like vLLM. `max_completion_tokens` and `ignore_eos` are honoured.
//! - `GET /mock/stats` (not part of vLLM, never counted, authenticated or hung):
//!   `{"requests", "by_status": {"200": n, ...}, "in_flight", "completed_streams",
//!   "client_disconnects", "by_endpoint": {"/v1/completions": {"200": n}, ...},
//!   "prompt_tokens", "completion_tokens", "hung"}`. A client disconnect is a streaming body
//!   dropped before `[DONE]` (not counting `--drop-after-tokens` cuts).
//! - Anything else: 404 `{"detail":"Not Found"}` (FastAPI's).
//!
//! # What the "model" says
//! Smoke prompts from [`text::SMOKE_ANSWERS`] (case-insensitive substring of the last user
//! message, or of the completion prompt) are answered with exactly the answer (completions with
//! a leading space, " Paris"):
//!
//! | prompt contains | answer |
//! |---|---|
//! | `2+2`, `2 + 2`, `two plus two` | `4` |
//! | `7 times 6`, `6 times 7`, `7*6`, `7 * 6`, `7x6`, `7 x 6` | `42` |
//! | `15 minus 8`, `15-8`, `15 - 8` | `7` |
//! | `days are in a week`, `days in a week` | `7` |
//! | `capital of France` | `Paris` |
//! | `capital of Japan` | `Tokyo` |
//! | `capital of Italy` | `Rome` |
//! | `capital of Germany` | `Berlin` |
//! | `largest planet` | `Jupiter` |
//! | `color of the sky`, `colour of the sky` | `Blue` |
//! | `opposite of hot` | `Cold` |
//!
//! Other prompts get deterministic filler text of `min(max_tokens, --output-tokens)` tokens
//! (`finish_reason` `length` when `max_tokens` cut it, else `stop`); with `ignore_eos`, exactly
//! `max_tokens`. One token = one streamed chunk = one counted completion token. Prompt tokens
//! are estimated (about 4 characters a token, plus 4 per chat message).
//!
//! # Console
//! vLLM-like lines on stdout; the last start-up line is the readiness signal and carries the
//! port actually bound (useful with `--port 0`):
//! `INFO:     Uvicorn running on http://127.0.0.1:PORT (Press CTRL+C to quit)`.
//! Nothing listens before `--startup-delay` has passed. The OOM traceback goes to stderr.
//!
//! # Faults
//! `--crash-after`, `--oom-after` and `--hang-after` are timed from process start (so they can
//! fire during the start-up delay, like a real load-time OOM). A hung server accepts
//! connections and never answers (`/health` included; `/mock/stats` still answers) and stops
//! logging. `--error-rate` draws per completion request (deterministic for a given `--seed`,
//! by arrival order); `--malformed-rate` likewise. `--stream-stall-after-tokens N` and
//! `--drop-after-tokens N` apply to every completion request: streams stall (or are cut off
//! without `[DONE]`) once N content tokens were sent, if the reply is that long; non-streaming
//! requests never get an answer (stall) or get half a body before the connection closes (drop).
//!
//! SIGINT and SIGTERM stop the server gracefully (1 s for open streams) with exit 0.

mod console;
mod faults;
mod server;
mod stats;
mod stream;
mod text;
mod wire;

pub use faults::ErrorMix;
pub use text::{SMOKE_ANSWERS, SmokeAnswer, smoke_answer};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use clap::Args;
use color_eyre::eyre::{Result, WrapErr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::util::parse_duration;

/// The context length the mock claims (`max_model_len`).
pub const MAX_MODEL_LEN: u32 = 8192;

/// How long open streams may keep running after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct MockLlmArgs {
    /// Port to listen on (0 = any free port; the "Uvicorn running on" line shows which)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Model name served (in /v1/models; requests naming another model get 404)
    #[arg(long, default_value = "mock-model", value_name = "NAME")]
    pub model_name: String,

    /// Time "loading the model" before listening (seconds, or with a unit: 500ms, 2m)
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub startup_delay: Duration,

    /// Milliseconds added before the first token (streaming) or the response
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,

    /// Generation speed; streams are paced by it, and non-streaming answers take as long
    /// (0 = as fast as possible)
    #[arg(long, default_value = "0", value_parser = faults::parse_rate, value_name = "RATE")]
    pub tokens_per_s: f64,

    /// Length of replies to prompts that are not smoke prompts (capped by max_tokens)
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=8192), value_name = "N")]
    pub output_tokens: u32,

    /// Require this bearer key on /v1/* (visible in the process list: prefer --api-key-env)
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_env", value_parser = ApiKey::parse)]
    pub api_key: Option<ApiKey>,

    /// Require the bearer key held by this environment variable on /v1/*
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,

    /// vLLM-like periodic throughput lines per second on stdout (0 = none)
    #[arg(long, default_value = "0", value_parser = faults::parse_rate, value_name = "LINES_PER_S")]
    pub log_rate: f64,

    /// Answer 404 on /health, like llama.cpp's Python server (readiness from /v1/models alone)
    #[arg(long)]
    pub no_health: bool,

    /// Never send a usage chunk in streams, even when asked (llama.cpp's Python server);
    /// clients must count tokens themselves
    #[arg(long)]
    pub no_stream_usage: bool,

    /// While another request is in flight, answer with nothing: a stream sends the role chunk
    /// then `[DONE]`, a JSON answer has empty content (llama.cpp's Python server under load)
    #[arg(long)]
    pub cut_off_when_busy: bool,

    /// Stamp each streamed chunk with `received_unix_us` (when the request arrived) and
    /// `sent_unix_us` (when the chunk left): clients can measure the delay they add themselves
    #[arg(long)]
    pub stamp_chunks: bool,

    #[command(flatten)]
    pub faults: Box<FaultArgs>,
}

/// Fault injection (boxed: rarely used, and it keeps the CLI enum small).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fault injection")]
pub struct FaultArgs {
    /// Share of completion requests answered with an HTTP error from --error-mix (0..1)
    #[arg(long, default_value = "0", value_parser = faults::parse_probability, value_name = "P")]
    pub error_rate: f64,

    /// Weighted error statuses for --error-rate: STATUS[:WEIGHT],...
    #[arg(long, default_value = "429:1,500:1,503:1", value_parser = ErrorMix::parse, value_name = "MIX")]
    pub error_mix: ErrorMix,

    /// Share of completion requests answered 200 with a broken JSON body or chunk (0..1)
    #[arg(long, default_value = "0", value_parser = faults::parse_probability, value_name = "P")]
    pub malformed_rate: f64,

    /// Streams stall for ever after N content tokens (non-streaming: no answer at all)
    #[arg(long, value_name = "N")]
    pub stream_stall_after_tokens: Option<u32>,

    /// Streams are cut off (connection closed, no [DONE]) after N content tokens
    /// (non-streaming: half a body, then the connection closes)
    #[arg(long, value_name = "N")]
    pub drop_after_tokens: Option<u32>,

    /// Seed for --error-rate/--malformed-rate draws (default: random)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Exit with --exit-code this long after start (open connections just drop)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub crash_after: Option<Duration>,

    /// Exit code for --crash-after
    #[arg(long, default_value_t = 1, requires = "crash_after", value_name = "N")]
    pub exit_code: u8,

    /// Print a PyTorch CUDA out-of-memory traceback on stderr this long after start, exit 1
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub oom_after: Option<Duration>,

    /// Stop answering this long after start (connections accepted, never answered), stay alive
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub hang_after: Option<Duration>,

    /// Log and ignore SIGTERM (to test stop escalation to SIGKILL); SIGINT still stops
    #[arg(long)]
    pub ignore_sigterm: bool,
}

/// A bearer key; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    fn parse(key: &str) -> Result<Self, String> {
        if key.is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(Self(key.to_owned()))
    }

    /// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

pub async fn run(args: MockLlmArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let api_key = match resolve_api_key(&args) {
        Ok(key) => key,
        Err(message) => {
            say!("llmdeck mock-llm: {message}");
            return Ok(exit::code(exit::USAGE));
        }
    };
    let fault_args = &args.faults;
    let faults = Arc::new(faults::Faults::new(
        fault_args.seed.unwrap_or_else(|| fastrand::u64(..)),
        fault_args.error_rate,
        fault_args.error_mix.clone(),
        fault_args.malformed_rate,
        fault_args.stream_stall_after_tokens,
        fault_args.drop_after_tokens,
    ));
    let shutdown = CancellationToken::new();
    spawn_signal_listener(shutdown.clone(), fault_args.ignore_sigterm)?;
    faults::spawn_timers(
        faults::Timers {
            crash_after: fault_args.crash_after,
            exit_code: fault_args.exit_code,
            oom_after: fault_args.oom_after,
            hang_after: fault_args.hang_after,
        },
        Arc::clone(&faults),
        started,
    )?;

    let pid = std::process::id();
    let banner = console::Banner {
        model: &args.model_name,
        host: &args.host,
        port: args.port,
        pid,
        startup_delay: args.startup_delay,
    };
    console::startup_begin(&banner);
    tokio::select! {
        () = tokio::time::sleep(args.startup_delay) => {}
        () = shutdown.cancelled() => {
            console::shutdown(pid);
            return Ok(exit::code(exit::OK));
        }
    }
    console::startup_loaded(&banner);

    let listener = match bind(&args.host, args.port).await {
        Ok(listener) => listener,
        Err(e) => {
            console::bind_failed(&args.host, args.port, &e);
            return Ok(exit::code(exit::FAILED));
        }
    };
    let addr = listener.local_addr().wrap_err("reading the bound address")?;

    let stats = Arc::new(stats::Stats::default());
    let shared = Arc::new(server::Shared {
        model: args.model_name.clone(),
        api_key,
        stats: Arc::clone(&stats),
        faults: Arc::clone(&faults),
        latency: Duration::from_millis(args.latency_ms),
        token_interval: (args.tokens_per_s > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / args.tokens_per_s).unwrap_or(Duration::MAX)),
        output_tokens: args.output_tokens,
        started_unix: server::unix_now(),
        no_health: args.no_health,
        no_stream_usage: args.no_stream_usage,
        cut_off_when_busy: args.cut_off_when_busy,
        stamp_chunks: args.stamp_chunks,
    });
    console::listening(addr, pid);
    console::spawn_log_ticker(args.log_rate, stats, faults)?;

    // Small SSE writes must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve =
        axum::serve(listener, server::router(shared)).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        served = std::future::IntoFuture::into_future(serve) => served.wrap_err("serving HTTP")?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    console::shutdown(pid);
    Ok(exit::code(exit::OK))
}

fn resolve_api_key(args: &MockLlmArgs) -> Result<Option<ApiKey>, String> {
    if let Some(key) = &args.api_key {
        return Ok(Some(key.clone()));
    }
    let Some(var) = &args.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(key) => ApiKey::parse(&key).map(Some).map_err(|e| format!("--api-key-env {var}: {e}")),
        Err(_) => Err(format!("--api-key-env {var}: the environment variable is not set (or not UTF-8)")),
    }
}

/// SIGINT and SIGTERM cancel `shutdown` (SIGTERM is only logged with `--ignore-sigterm`).
fn spawn_signal_listener(shutdown: CancellationToken, ignore_sigterm: bool) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).wrap_err("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).wrap_err("installing the SIGINT handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => {
                    if !ignore_sigterm {
                        break;
                    }
                    console::sigterm_ignored();
                }
            }
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Uvicorn's accept backlog: 256 clients connecting at once are all queued, as with vLLM, where
/// the default 128 would drop some SYNs and add a 1 s retransmit to their first token.
const LISTEN_BACKLOG: u32 = 2048;

async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, format!("`{host}` has no address"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_compare_exactly_and_never_print() {
        let key = ApiKey::parse("sk-secret").unwrap();
        assert!(key.matches("sk-secret"));
        assert!(!key.matches("sk-secreT"));
        assert!(!key.matches("sk-secret2"));
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert!(ApiKey::parse("").is_err());
    }
}
