//! Remote viewers, measured: event latency from the daemon to attached clients (p50/p99 over
//! 10,000 events each, 10 clients at once) and the daemon's memory per attached client.
//!
//! `cargo bench --bench attach_latency`. Latency is from the moment a log line was captured
//! (its timestamp, on this machine's clock) to the moment a client decoded the event carrying it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const CLIENTS: usize = 10;
const EVENTS_PER_CLIENT: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn client(url: String, token: String, events: usize) -> Vec<f64> {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await.expect("connect");
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => panic!("the daemon closed the connection: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the connection failed: {other:?}"),
        };
        let now = chrono::Utc::now();
        let v: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
        if v["type"] != "event" || v["event"]["type"] != "log" {
            continue;
        }
        if let Some(ts) = v["event"]["lines"][0]["ts"].as_str()
            && let Ok(ts) = chrono::DateTime::parse_from_rfc3339(ts)
        {
            latencies.push((now - ts.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    latencies
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_llmdeck");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = llmdeck::util::ports::reserve_loopback_ports(1).expect("port");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "gpu: {{ backend: none }}\nmodels:\n  - id: chatty\n    command: {bin}\n    args: [mock-llm, --port, \"{p}\", --log-rate, \"2000\"]\n    port: {p}\n",
            p = port[0].port()
        ),
    )
    .expect("config");
    let mut daemon = Command::new(bin)
        .args(["daemon", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    // Drain its JSON lines (a reader that stops would make it lag).
    let stdout = daemon.stdout.take().expect("stdout");
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let url_file = dir.path().join("state/llmdeck/daemon.url");
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(url) = std::fs::read_to_string(&url_file) {
            break url.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = std::fs::read_to_string(dir.path().join("data/llmdeck/daemon.token")).expect("token").trim().to_owned();
    std::thread::sleep(Duration::from_secs(3));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let before = rss_kib(daemon.id());
    let started = Instant::now();
    let all: Vec<f64> = runtime.block_on(async {
        let tasks: Vec<_> =
            (0..CLIENTS).map(|_| tokio::spawn(client(url.clone(), token.clone(), EVENTS_PER_CLIENT))).collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        all
    });
    let took = started.elapsed();
    let mut sorted = all;
    sorted.sort_by(f64::total_cmp);
    println!(
        "event latency daemon → {CLIENTS} attached clients, {} events each ({} in all, {took:.1?}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        EVENTS_PER_CLIENT,
        sorted.len(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or_default()
    );

    // Memory: the daemon with many viewers attached and idle, against none.
    let idle = rss_kib(daemon.id());
    let held = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..30 {
            let mut request = url.clone().into_client_request().expect("request");
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
            let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), false).await.expect("connect");
            let _hello = ws.next().await;
            held.push(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        held
    });
    let with_30 = rss_kib(daemon.id());
    println!(
        "daemon RSS: {} MiB before the clients, {} MiB after them, {} MiB with 30 attached: {:.0} KiB per attached client",
        before / 1024,
        idle / 1024,
        with_30 / 1024,
        (with_30.saturating_sub(idle)) as f64 / 30.0
    );
    for h in held {
        h.abort();
    }
    let _ = Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}
