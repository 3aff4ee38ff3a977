//! vLLM-like console output: start-up and shutdown lines, periodic throughput lines, the crash
//! line and the CUDA OOM traceback. Regular lines go to stdout (as vLLM's logger does), the OOM
//! traceback to stderr. Write errors (a closed pipe) are ignored: the server keeps serving.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr};

use super::faults::Faults;
use super::stats::Stats;

/// The vLLM version the banner claims to be.
const VLLM_VERSION: &str = "0.11.0";

/// vLLM's timestamp: `11-23 14:02:11`.
fn stamp() -> String {
    chrono::Local::now().format("%m-%d %H:%M:%S").to_string()
}

/// `LEVEL MM-DD HH:MM:SS [source] message`, vLLM's line shape.
fn vllm_line(level: &str, source: &str, message: &str) -> String {
    format!("{level} {} [{source}] {message}", stamp())
}

/// The same, from the engine-core subprocess (vLLM V1 prefixes those lines).
fn engine_line(pid: u32, level: &str, source: &str, message: &str) -> String {
    format!("(EngineCore_DP0 pid={pid}) {}", vllm_line(level, source, message))
}

fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// What the banner needs to know.
pub struct Banner<'a> {
    pub model: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub pid: u32,
    pub startup_delay: Duration,
}

/// Lines printed at once, before "loading the weights" (the start-up delay).
pub fn startup_begin(b: &Banner<'_>) {
    let Banner { model, host, port, pid, .. } = b;
    print_lines(&[
        vllm_line("INFO", "api_server.py:1896", &format!("vLLM API server version {VLLM_VERSION} (llmdeck mock-llm)")),
        vllm_line(
            "INFO",
            "utils.py:233",
            &format!(
                "non-default args: {{'model': '{model}', 'host': '{host}', 'port': {port}, \
                 'gpu_memory_utilization': 0.9, 'max_model_len': {}}}",
                super::MAX_MODEL_LEN
            ),
        ),
        vllm_line("INFO", "model.py:547", "Resolved architecture: LlamaForCausalLM"),
        vllm_line("INFO", "model.py:1510", &format!("Using max model len {}", super::MAX_MODEL_LEN)),
        vllm_line("INFO", "scheduler.py:205", "Chunked prefill is enabled with max_num_batched_tokens=2048."),
        engine_line(*pid, "INFO", "core.py:644", "Waiting for init message from front-end."),
        engine_line(*pid, "INFO", "gpu_model_runner.py:2602", &format!("Starting to load model {model}...")),
    ]);
}

/// Lines printed once the start-up delay has passed, before binding.
pub fn startup_loaded(b: &Banner<'_>) {
    let secs = b.startup_delay.as_secs_f64();
    let pid = b.pid;
    print_lines(&[
        engine_line(pid, "INFO", "default_loader.py:267", &format!("Loading weights took {:.2} seconds", secs * 0.8)),
        engine_line(
            pid,
            "INFO",
            "gpu_model_runner.py:2653",
            &format!("Model loading took 14.9935 GiB and {:.6} seconds", secs * 0.9),
        ),
        engine_line(
            pid,
            "INFO",
            "gpu_worker.py:298",
            "Memory profiling takes 1.27 seconds. Available KV cache memory: 52.31 GiB",
        ),
        engine_line(pid, "INFO", "kv_cache_utils.py:1087", "GPU KV cache size: 428,560 tokens"),
        engine_line(
            pid,
            "INFO",
            "kv_cache_utils.py:1091",
            &format!("Maximum concurrency for {} tokens per request: 52.31x", super::MAX_MODEL_LEN),
        ),
        engine_line(
            pid,
            "INFO",
            "core.py:210",
            &format!("init engine (profile, create kv cache, warmup model) took {:.2} seconds", secs),
        ),
        vllm_line("INFO", "api_server.py:1634", "Supported_tasks: ['generate']"),
    ]);
}

/// The route list and uvicorn's lines; the last one is the readiness signal and carries the
/// port actually bound.
pub fn listening(addr: SocketAddr, pid: u32) {
    let mut lines = vec![
        vllm_line("INFO", "api_server.py:1912", &format!("Starting vLLM API server 0 on http://{addr}")),
        vllm_line("INFO", "launcher.py:34", "Available routes are:"),
    ];
    for (route, method) in
        [("/health", "GET"), ("/v1/models", "GET"), ("/v1/chat/completions", "POST"), ("/v1/completions", "POST")]
    {
        lines.push(vllm_line("INFO", "launcher.py:42", &format!("Route: {route}, Methods: {method}")));
    }
    lines.extend([
        format!("INFO:     Started server process [{pid}]"),
        "INFO:     Waiting for application startup.".to_owned(),
        "INFO:     Application startup complete.".to_owned(),
        format!("INFO:     Uvicorn running on http://{addr} (Press CTRL+C to quit)"),
    ]);
    print_lines(&lines);
}

pub fn bind_failed(host: &str, port: u16, error: &std::io::Error) {
    print_lines(&[format!(
        "ERROR:    [Errno {}] error while attempting to bind on address ('{host}', {port}): {error}",
        error.raw_os_error().unwrap_or(0)
    )]);
}

pub fn sigterm_ignored() {
    print_lines(&[vllm_line("WARNING", "mock_llm", "received SIGTERM; ignoring it (--ignore-sigterm)")]);
}

pub fn shutdown(pid: u32) {
    print_lines(&[
        "INFO:     Shutting down".to_owned(),
        "INFO:     Waiting for application shutdown.".to_owned(),
        "INFO:     Application shutdown complete.".to_owned(),
        format!("INFO:     Finished server process [{pid}]"),
    ]);
}

/// Printed just before `--crash-after` exits the process.
pub fn crash_line(code: u8) {
    let line = if code == 0 {
        vllm_line("INFO", "api_server.py:1950", "Engine finished; exiting (mock-llm --crash-after, exit code 0)")
    } else {
        vllm_line(
            "ERROR",
            "core_client.py:564",
            &format!(
                "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client. \
                 (mock-llm --crash-after, exit code {code})"
            ),
        )
    };
    print_lines(&[line]);
}

/// A realistic vLLM V1 crash by CUDA OOM: the engine core's traceback ending in
/// `torch.OutOfMemoryError: CUDA out of memory. ...`, then the front end's `EngineDeadError`.
pub fn oom_traceback(pid: u32) -> String {
    const CORE: &str = "core.py:708";
    let site = "/usr/local/lib/python3.12/dist-packages";
    let frames = [
        ("vllm/v1/engine/core.py", 699, "run_engine_core", "engine_core.run_busy_loop()"),
        ("vllm/v1/engine/core.py", 726, "run_busy_loop", "self._process_engine_step()"),
        ("vllm/v1/engine/core.py", 752, "_process_engine_step", "outputs, model_executed = self.step_fn()"),
        ("vllm/v1/engine/core.py", 284, "step", "model_output = self.execute_model_with_error_logging("),
        ("vllm/v1/worker/gpu_model_runner.py", 2275, "execute_model", "hidden_states = self.model("),
        ("torch/nn/modules/module.py", 1773, "_wrapped_call_impl", "return self._call_impl(*args, **kwargs)"),
        (
            "vllm/model_executor/layers/logits_processor.py",
            60,
            "forward",
            "logits = self._get_logits(hidden_states, lm_head, embedding_bias)",
        ),
    ];
    let mut lines = vec![
        engine_line(pid, "ERROR", CORE, "EngineCore encountered a fatal error."),
        engine_line(pid, "ERROR", CORE, "Traceback (most recent call last):"),
    ];
    for (file, line, function, code) in frames {
        lines.push(engine_line(pid, "ERROR", CORE, &format!("  File \"{site}/{file}\", line {line}, in {function}")));
        lines.push(engine_line(pid, "ERROR", CORE, &format!("    {code}")));
    }
    lines.push(engine_line(
        pid,
        "ERROR",
        CORE,
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a \
         total capacity of 79.25 GiB of which 1.19 GiB is free. Including non-PyTorch memory, \
         this process has 78.05 GiB memory in use. Of the allocated memory 74.30 GiB is \
         allocated by PyTorch, and 2.31 GiB is reserved by PyTorch but unallocated. If reserved \
         but unallocated memory is large try setting \
         PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See \
         documentation for Memory Management  \
         (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
    ));
    lines.extend([
        vllm_line("ERROR", "async_llm.py:480", "AsyncLLM output_handler failed."),
        vllm_line("ERROR", "async_llm.py:480", "Traceback (most recent call last):"),
        vllm_line(
            "ERROR",
            "async_llm.py:480",
            &format!("  File \"{site}/vllm/v1/engine/async_llm.py\", line 439, in output_handler"),
        ),
        vllm_line("ERROR", "async_llm.py:480", "    outputs = await engine_core.get_output_async()"),
        vllm_line(
            "ERROR",
            "async_llm.py:480",
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See \
             stack trace (above) for the root cause.",
        ),
        "INFO:     Shutting down".to_owned(),
        format!("INFO:     Finished server process [{pid}]"),
    ]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Prints vLLM's periodic throughput line `lines_per_s` times a second (0 = never) from an OS
/// thread, so a slow reader of our stdout can never stall the HTTP server. A hung server stops
/// logging, as a hung vLLM does.
pub fn spawn_log_ticker(lines_per_s: f64, stats: Arc<Stats>, faults: Arc<Faults>) -> Result<()> {
    if lines_per_s <= 0.0 {
        return Ok(());
    }
    // At most 100 wake-ups a second; faster rates print several lines per wake-up.
    let per_tick = (lines_per_s / 100.0).ceil().max(1.0);
    let tick = Duration::from_secs_f64((per_tick / lines_per_s).min(3600.0));
    let per_tick = per_tick as usize;
    std::thread::Builder::new()
        .name("mock-llm-log".into())
        .spawn(move || {
            let mut last = (Instant::now(), stats.tokens());
            loop {
                std::thread::sleep(tick);
                if faults.is_hung() {
                    continue;
                }
                let now = (Instant::now(), stats.tokens());
                let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
                let prompt_rate = (now.1.0 - last.1.0) as f64 / secs;
                let generation_rate = (now.1.1 - last.1.1) as f64 / secs;
                last = now;
                let running = stats.in_flight();
                let line = vllm_line(
                    "INFO",
                    "loggers.py:127",
                    &format!(
                        "Engine 000: Avg prompt throughput: {prompt_rate:.1} tokens/s, Avg \
                         generation throughput: {generation_rate:.1} tokens/s, Running: \
                         {running} reqs, Waiting: 0 reqs, GPU KV cache usage: {:.1}%, Prefix \
                         cache hit rate: 0.0%",
                        (running as f64 * 0.4).min(100.0)
                    ),
                );
                print_lines(&vec![line; per_tick]);
            }
        })
        .wrap_err("starting the log thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_vllm() {
        let line = vllm_line("INFO", "api_server.py:1", "hello");
        let re = regex::Regex::new(r"^INFO \d\d-\d\d \d\d:\d\d:\d\d \[api_server.py:1\] hello$").unwrap();
        assert!(re.is_match(&line), "{line}");
    }

    #[test]
    fn oom_traceback_carries_the_patterns_supervisors_look_for() {
        let text = oom_traceback(42);
        assert!(text.contains("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"));
        assert!(text.contains("(EngineCore_DP0 pid=42) ERROR"));
        assert!(text.contains("See stack trace (above) for the root cause."));
        assert!(text.ends_with('\n'));
    }
}
