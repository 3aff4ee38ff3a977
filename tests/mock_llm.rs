//! Black-box tests of `llmdeck mock-llm` through the binary, on 127.0.0.1. Each server is
//! started with `--port 0` (or a port we picked) and is ready when it prints uvicorn's
//! "Uvicorn running on http://..." line. Every wait is bounded.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const READY_MARKER: &str = "Uvicorn running on http://";

/// A running `llmdeck mock-llm`, killed when dropped.
struct Mock {
    child: Child,
    base: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stdout_task: JoinHandle<()>,
    stderr_task: JoinHandle<String>,
}

/// Spawns the server without waiting for it; `port_rx` yields the port of the readiness line.
struct Spawned {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stdout_task: JoinHandle<()>,
    stderr_task: JoinHandle<String>,
    port_rx: tokio::sync::oneshot::Receiver<u16>,
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Spawned> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmdeck"));
    command
        .arg("mock-llm")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().wrap_err("spawning llmdeck mock-llm")?;
    let stdout = child.stdout.take().ok_or_else(|| eyre!("no stdout pipe"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| eyre!("no stderr pipe"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    let stdout_task = {
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut port_tx = Some(port_tx);
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(port) = ready_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        })
    };
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    Ok(Spawned { child, stdout: lines, stdout_task, stderr_task, port_rx })
}

/// The port in `INFO:     Uvicorn running on http://127.0.0.1:PORT (Press CTRL+C to quit)`.
fn ready_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let authority = rest.split_whitespace().next()?;
    authority.rsplit(':').next()?.parse().ok()
}

impl Spawned {
    async fn ready(mut self) -> Result<Mock> {
        let port = match tokio::time::timeout(READY_TIMEOUT, &mut self.port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => bail!("mock-llm's stdout closed before it was ready\n{}", self.what_happened().await),
            Err(_) => bail!(
                "mock-llm did not print its readiness line within {READY_TIMEOUT:?}\n{}",
                self.what_happened().await
            ),
        };
        Ok(Mock {
            child: self.child,
            base: format!("http://127.0.0.1:{port}"),
            stdout: self.stdout,
            stdout_task: self.stdout_task,
            stderr_task: self.stderr_task,
        })
    }

    /// Its exit status (or that it still runs, then it is killed), stderr and stdout.
    async fn what_happened(&mut self) -> String {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => format!("it exited: {status}"),
            Ok(Err(e)) => format!("waiting for it failed: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                "it was still running (now killed)".to_owned()
            }
        };
        let stderr = match tokio::time::timeout(Duration::from_secs(2), &mut self.stderr_task).await {
            Ok(Ok(text)) => text,
            _ => "(unreadable)".into(),
        };
        let stdout = self.stdout.lock().map(|l| l.join("\n")).unwrap_or_default();
        format!("{status}\n--- stderr:\n{stderr}\n--- stdout:\n{stdout}")
    }
}

async fn start(args: &[&str]) -> Result<Mock> {
    start_with_env(args, &[]).await
}

async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Mock> {
    let mut all = vec!["--port", "0"];
    all.extend_from_slice(args);
    spawn(&all, env)?.ready().await
}

impl Mock {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stats(&self) -> Result<Value> {
        Ok(client()?.get(self.url("/mock/stats")).send().await?.error_for_status()?.json().await?)
    }

    /// Polls `/mock/stats` until `check` holds (the stats are the readiness signal here).
    async fn wait_for_stats(&self, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats().await?;
            if check(&stats) {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!("stats never reached the expected state: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .wrap_err("mock-llm did not exit in time")?
            .wrap_err("waiting for mock-llm")
    }

    /// Everything printed on stderr (after the process has exited).
    async fn stderr(self) -> Result<String> {
        let Mock { stderr_task, .. } = self;
        tokio::time::timeout(EXIT_TIMEOUT, stderr_task)
            .await
            .wrap_err("stderr did not close")?
            .wrap_err("stderr reader")
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for a stdout line containing `needle`.
    async fn wait_for_line(&self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.stdout_lines().into_iter().find(|l| l.contains(needle)) {
                return Ok(line);
            }
            if Instant::now() > deadline || self.stdout_task.is_finished() {
                bail!("no line containing {needle:?} in {:#?}", self.stdout_lines());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<reqwest::Response> {
        Ok(client()?.post(self.url(path)).json(&body).send().await?)
    }
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
}

fn chat(prompt: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}]})
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|event| event.strip_prefix("data: ")).map(str::to_owned).collect()
}

fn status_count(stats: &Value, status: &str) -> u64 {
    stats["by_status"][status].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn serves_health_models_and_non_streaming_answers() -> Result<()> {
    let mock = start(&["--model-name", "tiny-llama"]).await?;
    let http = client()?;

    let health = http.get(mock.url("/health")).send().await?;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await?, "");

    let models: Value = http.get(mock.url("/v1/models")).send().await?.json().await?;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-llama");
    assert_eq!(models["data"][0]["object"], "model");

    let mut request = chat("What is 2+2?");
    request["model"] = json!("tiny-llama");
    let answer: Value = mock.post("/v1/chat/completions", request).await?.json().await?;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["message"]["content"], "4");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 1);
    assert!(answer["usage"]["prompt_tokens"].as_u64() > Some(0));

    let completion: Value = mock
        .post("/v1/completions", json!({"prompt": "The capital of France is", "max_tokens": 8}))
        .await?
        .json()
        .await?;
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["choices"][0]["text"], " Paris");

    // Filler text is capped by max_tokens.
    let long: Value =
        mock.post("/v1/completions", json!({"prompt": "Write an essay.", "max_tokens": 7})).await?.json().await?;
    assert_eq!(long["usage"]["completion_tokens"], 7);
    assert_eq!(long["choices"][0]["finish_reason"], "length");

    let wrong_model = mock.post("/v1/chat/completions", chat("hi")).await?;
    assert_eq!(wrong_model.status(), 404);
    let body: Value = wrong_model.json().await?;
    assert_eq!(body["error"]["code"], "model_not_found");

    let stats = mock.stats().await?;
    assert_eq!(stats["requests"], 6);
    assert_eq!(status_count(&stats, "200"), 5);
    assert_eq!(status_count(&stats, "404"), 1);
    assert_eq!(stats["in_flight"], 0);
    Ok(())
}

#[tokio::test]
async fn streams_chat_and_completions_with_usage() -> Result<()> {
    let mock = start(&["--tokens-per-s", "500"]).await?;
    let mut request = chat("What is the capital of France?");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = mock.post("/v1/chat/completions", request).await?;
    assert_eq!(response.status(), 200);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let events = sse_data(&response.text().await?);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e)).collect::<Result<_, _>>()?;
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Paris");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 1);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");

    // Completions, filler text, no usage asked: one chunk per token, no usage chunk.
    let response =
        mock.post("/v1/completions", json!({"prompt": "Once upon a time", "max_tokens": 12, "stream": true})).await?;
    let events = sse_data(&response.text().await?);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e)).collect::<Result<_, _>>()?;
    let tokens = chunks.iter().filter(|c| c["choices"][0]["finish_reason"].is_null()).count();
    assert_eq!(tokens, 12);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks[tokens]["choices"][0]["finish_reason"], "length");

    let stats = mock.stats().await?;
    assert_eq!(stats["completed_streams"], 2);
    assert_eq!(stats["client_disconnects"], 0);
    Ok(())
}

/// Behaviours taught by the real server (llama.cpp's Python server): no /health, no usage in
/// streams even when asked.
#[tokio::test]
async fn no_health_and_no_stream_usage_like_llama_cpp() -> Result<()> {
    let mock = start(&["--no-health", "--no-stream-usage"]).await?;
    let health = client()?.get(mock.url("/health")).send().await?;
    assert_eq!(health.status(), 404);
    let models = client()?.get(mock.url("/v1/models")).send().await?;
    assert_eq!(models.status(), 200);
    let mut request = chat("What is the capital of France?");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let events = sse_data(&mock.post("/v1/chat/completions", request).await?.text().await?);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!events.iter().any(|e| e.contains("\"usage\"")), "{events:?}");
    Ok(())
}

#[tokio::test]
async fn api_key_is_required_on_v1_and_never_printed() -> Result<()> {
    let secret = "sk-mock-test-7f3a";
    let mock = start_with_env(&["--api-key-env", "MOCK_LLM_TEST_KEY"], &[("MOCK_LLM_TEST_KEY", secret)]).await?;
    let http = client()?;

    let missing = http.get(mock.url("/v1/models")).send().await?;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await?;
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"].get("param").is_some());

    let wrong =
        http.post(mock.url("/v1/chat/completions")).bearer_auth("sk-wrong").json(&chat("What is 2+2?")).send().await?;
    assert_eq!(wrong.status(), 401);

    let right =
        http.post(mock.url("/v1/chat/completions")).bearer_auth(secret).json(&chat("What is 2+2?")).send().await?;
    assert_eq!(right.status(), 200);

    // Like vLLM, /health needs no key.
    assert_eq!(http.get(mock.url("/health")).send().await?.status(), 200);

    assert!(mock.stdout_lines().iter().all(|l| !l.contains(secret)));
    let mut mock = mock;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mock.child.id().ok_or_else(|| eyre!("no pid"))? as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    assert_eq!(mock.wait_exit().await?.code(), Some(0));
    let lines = mock.stdout_lines();
    let stderr = mock.stderr().await?;
    assert!(!stderr.contains(secret));
    assert!(lines.iter().all(|l| !l.contains(secret)));
    Ok(())
}

#[tokio::test]
async fn missing_api_key_variable_is_a_usage_error() -> Result<()> {
    let spawned = spawn(&["--port", "0", "--api-key-env", "MOCK_LLM_UNSET_VAR_X"], &[])?;
    let mut child = spawned.child;
    let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await??;
    assert_eq!(status.code(), Some(2));
    Ok(())
}

#[tokio::test]
async fn injected_errors_follow_the_mix_and_are_counted_exactly() -> Result<()> {
    let mock = start(&["--error-rate", "0.6", "--error-mix", "429:1,500:1,503:1", "--seed", "11"]).await?;
    let mut seen = std::collections::BTreeMap::<u16, u64>::new();
    for _ in 0..90 {
        let response = mock.post("/v1/chat/completions", chat("What is 2+2?")).await?;
        let status = response.status().as_u16();
        *seen.entry(status).or_default() += 1;
        if status != 200 {
            if matches!(status, 429 | 503) {
                assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
            }
            let body: Value = response.json().await?;
            let error = &body["error"];
            assert!(error["message"].is_string(), "{body}");
            assert!(error["type"].is_string(), "{body}");
            assert!(error.get("param").is_some() && error.get("code").is_some());
        }
    }
    for status in [200, 429, 500, 503] {
        assert!(seen.get(&status) > Some(&0), "no {status} in {seen:?}");
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let stats = mock.stats().await?;
    assert_eq!(stats["requests"], 90);
    for (status, count) in &seen {
        assert_eq!(status_count(&stats, &status.to_string()), *count, "{stats}");
        assert_eq!(stats["by_endpoint"]["/v1/chat/completions"][status.to_string()], *count);
    }
    Ok(())
}

#[tokio::test]
async fn crash_after_exits_with_the_code_and_drops_streams() -> Result<()> {
    let mut mock = start(&["--crash-after", "1.5", "--exit-code", "3", "--tokens-per-s", "5"]).await?;
    // 500 tokens at 5 tokens/s would take 100 s: the stream is in flight when the process dies.
    let request = json!({"prompt": "Tell me everything", "max_tokens": 500, "ignore_eos": true,
                         "stream": true});
    let mut stream = mock.post("/v1/completions", request).await?;
    let mut body = String::new();
    while let Ok(Some(bytes)) = stream.chunk().await {
        body.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(!body.is_empty());
    assert!(!body.contains("[DONE]"), "{body}");
    let status = mock.wait_exit().await?;
    assert_eq!(status.code(), Some(3));
    Ok(())
}

#[tokio::test]
async fn oom_after_prints_a_cuda_traceback_and_exits_1() -> Result<()> {
    let mut mock = start(&["--oom-after", "0.5"]).await?;
    let status = mock.wait_exit().await?;
    assert_eq!(status.code(), Some(1));
    let stderr = mock.stderr().await?;
    assert!(stderr.contains("Traceback (most recent call last):"), "{stderr}");
    assert!(stderr.contains("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn hang_after_stops_answering_but_stays_alive() -> Result<()> {
    let mut mock = start(&["--hang-after", "0.5"]).await?;
    // The mock says when it hangs; from then on nothing is answered (a slow answer on a loaded
    // machine is not taken for the hang).
    mock.wait_for_stats(|s| s["hung"] == true).await?;
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let err = quick.get(mock.url("/health")).send().await.err();
    assert!(err.as_ref().is_some_and(reqwest::Error::is_timeout), "the hung server answered: {err:?}");
    // Connections are still accepted, and the process is alive.
    tokio::net::TcpStream::connect(mock.base.trim_start_matches("http://")).await?;
    assert!(mock.child.try_wait()?.is_none());
    Ok(())
}

#[tokio::test]
async fn startup_delay_refuses_connections_until_ready() -> Result<()> {
    // A port outside the kernel's ephemeral range, held for this test: nothing else takes it
    // while the mock is still loading.
    let reserved = llmdeck::util::ports::reserve_loopback_ports(1)?;
    let port = reserved[0].port();
    let started = Instant::now();
    let port_arg = port.to_string();
    let spawned = spawn(&["--port", &port_arg, "--startup-delay", "1.5"], &[])?;
    let early = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    // On a machine slow enough to connect only after the delay there is nothing to check.
    if started.elapsed() < Duration::from_millis(1500) {
        let refused = early.err().map(|e| e.kind());
        assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    }
    let mock = spawned.ready().await?;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(mock.base, format!("http://127.0.0.1:{port}"));
    let health = client()?.get(mock.url("/health")).send().await?;
    assert_eq!(health.status(), 200);
    assert!(mock.stdout_lines().iter().any(|l| l.contains("Loading weights took")));
    Ok(())
}

#[tokio::test]
async fn client_disconnects_are_counted() -> Result<()> {
    let mock = start(&["--tokens-per-s", "20"]).await?;
    let mut request = chat("Write a long story");
    request["stream"] = json!(true);
    let mut response = mock.post("/v1/chat/completions", request).await?;
    let first = response.chunk().await?;
    assert!(first.is_some());
    mock.wait_for_stats(|s| s["in_flight"] == 1).await?;
    drop(response);
    let stats = mock.wait_for_stats(|s| s["client_disconnects"] == 1).await?;
    assert_eq!(stats["completed_streams"], 0);
    mock.wait_for_stats(|s| s["in_flight"] == 0).await?;
    Ok(())
}

#[tokio::test]
async fn stalled_streams_go_quiet_and_count_as_disconnects_when_abandoned() -> Result<()> {
    let mock = start(&["--stream-stall-after-tokens", "2"]).await?;
    let mut request = chat("Write a long story");
    request["stream"] = json!(true);
    let mut response = mock.post("/v1/chat/completions", request).await?;
    let mut body = String::new();
    // The role chunk and two content tokens, however slowly they come ...
    while sse_data(&body).len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => bail!("the stream ended instead of stalling: {body}"),
            Ok(Err(e)) => bail!("the stream broke: {e}: {body}"),
            Err(_) => bail!("no third chunk within 10 s: {body}"),
        }
    }
    // ... then silence (a wait that can only miss a chunk on a slow machine, never invent one).
    if let Ok(chunk) = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await {
        bail!("the stream went on after two tokens: {chunk:?} after {body}");
    }
    assert_eq!(sse_data(&body).len(), 3, "{body}");
    drop(response);
    mock.wait_for_stats(|s| s["client_disconnects"] == 1 && s["in_flight"] == 0).await?;
    Ok(())
}

#[tokio::test]
async fn dropped_streams_end_without_done() -> Result<()> {
    let mock = start(&["--drop-after-tokens", "3"]).await?;
    let response = mock.post("/v1/completions", json!({"prompt": "Write a long story", "stream": true})).await?;
    assert_eq!(response.status(), 200);
    let mut response = response;
    let mut body = String::new();
    let failed = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(failed, "the body should end with a connection error");
    assert!(!body.contains("[DONE]"));
    assert_eq!(sse_data(&body).len(), 3, "{body}");
    let stats = mock.stats().await?;
    assert_eq!(stats["client_disconnects"], 0);
    assert_eq!(stats["completed_streams"], 0);

    // Non-streaming: 200, half a body, then the connection closes.
    let response = mock.post("/v1/completions", json!({"prompt": "Write a long story"})).await?;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
    Ok(())
}

#[tokio::test]
async fn latency_and_token_pace_delay_answers() -> Result<()> {
    let mock = start(&["--latency-ms", "300", "--tokens-per-s", "20"]).await?;
    // Lower bounds only: the mock must wait at least this long (never a performance claim).
    let started = Instant::now();
    let answer: Value = mock.post("/v1/chat/completions", chat("What is 2+2?")).await?.json().await?;
    assert_eq!(answer["choices"][0]["message"]["content"], "4");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let started = Instant::now();
    let body = mock
        .post("/v1/completions", json!({"prompt": "Write a story", "max_tokens": 5, "stream": true}))
        .await?
        .text()
        .await?;
    assert!(body.ends_with("data: [DONE]\n\n"));
    // 300 ms to the first token, then 4 gaps of 50 ms.
    assert!(started.elapsed() >= Duration::from_millis(500));
    Ok(())
}

#[tokio::test]
async fn malformed_answers_are_200_with_broken_json() -> Result<()> {
    let mock = start(&["--malformed-rate", "1"]).await?;
    let response = mock.post("/v1/chat/completions", chat("What is 2+2?")).await?;
    assert_eq!(response.status(), 200);
    let body = response.text().await?;
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");

    let mut request = chat("What is 2+2?");
    request["stream"] = json!(true);
    let body = mock.post("/v1/chat/completions", request).await?.text().await?;
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let broken = events.iter().filter(|e| serde_json::from_str::<Value>(e).is_err()).count();
    assert_eq!(broken, 2, "the broken chunk and [DONE]: {events:?}");
    Ok(())
}

#[tokio::test]
async fn log_rate_prints_vllm_throughput_lines() -> Result<()> {
    let mock = start(&["--log-rate", "20"]).await?;
    let line = mock.wait_for_line("Avg prompt throughput").await?;
    assert!(line.starts_with("INFO "), "{line}");
    assert!(line.contains("Avg generation throughput"), "{line}");
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_gracefully_with_exit_0() -> Result<()> {
    let mut mock = start(&[]).await?;
    let pid = mock.child.id().ok_or_else(|| eyre!("no pid"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)?;
    assert_eq!(mock.wait_exit().await?.code(), Some(0));
    mock.wait_for_line("Finished server process").await?;
    Ok(())
}

#[tokio::test]
async fn ignore_sigterm_keeps_serving_until_sigint() -> Result<()> {
    let mut mock = start(&["--ignore-sigterm"]).await?;
    let pid = nix::unistd::Pid::from_raw(mock.child.id().ok_or_else(|| eyre!("no pid"))? as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    mock.wait_for_line("received SIGTERM; ignoring it").await?;
    let health = client()?.get(mock.url("/health")).send().await?;
    assert_eq!(health.status(), 200);
    assert!(mock.child.try_wait()?.is_none());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    assert_eq!(mock.wait_exit().await?.code(), Some(0));
    Ok(())
}
