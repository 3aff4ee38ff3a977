//! Remote viewers through `llmdeck daemon`'s WebSocket: the hello and the events, commands
//! acknowledged by id, the token, the origin check, the client limit, frame limits, slow
//! clients, read-only tokens, a daemon restart, and `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Sandbox, free_port, mock_model};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

const LONG: Duration = Duration::from_secs(40);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn daemon(sb: &Sandbox, extra: &str, models: &str) -> (Daemon, String, String) {
    let models = if models.is_empty() { " []\n".to_owned() } else { format!("\n{models}") };
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\n{extra}models:{models}"));
    let mut d = Daemon::start_with(sb, &["daemon", "--listen", "127.0.0.1:0", "--config"], &config);
    let url = d.ws_url(sb);
    (d, url, sb.daemon_token())
}

fn request(url: &str, token: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().expect("request");
    if let Some(token) = token {
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    req
}

async fn connect(url: &str, token: &str) -> (Ws, Value) {
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request(url, Some(token)), Some(config), false)
        .await
        .expect("connect");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(LONG, ws.next()).await.expect("a frame in time").expect("open").expect("read");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

async fn wait_json(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let v = next_json(ws).await;
        if pred(&v) {
            return v;
        }
    }
}

fn model_is(model: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| {
        v["type"] == "event"
            && v["event"]["type"] == "model"
            && v["event"]["model"] == model
            && v["event"]["state"] == state
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sees_the_state_and_commands_are_acked_by_id() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", &mock_model("m", free_port(), "", ""));
    let (mut ws, hello) = connect(&url, &token).await;
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
    assert!(hello["snapshot"].is_object(), "the snapshot is an object, not a string: {hello}");
    assert!(hello["snapshot"]["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(hello["snapshot"]["state"]["models"][0]["id"], "m");
    let mut last_seq = hello["snapshot"]["seq"].as_u64().expect("seq");
    if hello["snapshot"]["state"]["models"][0]["state"] != "ready" {
        wait_json(&mut ws, "m ready", model_is("m", "ready")).await;
    }

    // A malformed command gets an error ack; the connection stays.
    send(&mut ws, json!({"type": "command", "id": "bad-1", "command": {"command": "explode"}})).await;
    let ack = wait_json(&mut ws, "the error ack", |v| v["type"] == "ack").await;
    assert_eq!((ack["id"].clone(), ack["ok"].clone()), (json!("bad-1"), json!(false)), "{ack}");
    assert!(ack["error"].as_str().is_some_and(|e| e.contains("not a command")), "{ack}");

    send(&mut ws, json!({"type": "command", "id": "c-7", "command": {"command": "stop_model", "model": "m"}})).await;
    let mut acked = false;
    let mut stopped = false;
    let deadline = Instant::now() + LONG;
    while !(acked && stopped) {
        assert!(Instant::now() < deadline, "no ack or no stop");
        let v = next_json(&mut ws).await;
        if v["type"] == "ack" {
            assert_eq!((v["id"].clone(), v["ok"].clone()), (json!("c-7"), json!(true)), "{v}");
            acked = true;
        } else if v["type"] == "event" {
            let seq = v["seq"].as_u64().expect("seq");
            assert!(seq > last_seq, "events arrive in order");
            last_seq = seq;
            stopped |= model_is("m", "stopped")(&v);
        }
    }
    // The daemon's own JSON lines saw the same stop.
    d.wait_for("the stop on stdout", LONG, |v| v["type"] == "model" && v["model"] == "m" && v["state"] == "stopped");
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

async fn handshake_status(url: &str, token: Option<&str>, origin: Option<&str>) -> u16 {
    let mut req = request(url, token);
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_the_origin_are_checked_before_any_upgrade() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", "");
    assert_eq!(handshake_status(&url, None, None).await, 401);
    assert_eq!(handshake_status(&url, Some("not-the-token-at-all"), None).await, 401);
    assert_eq!(handshake_status(&url, Some(&token), Some("https://evil.example")).await, 403);
    let own_origin = url.replace("ws://", "http://").trim_end_matches("/ws").to_owned();
    assert_eq!(handshake_status(&url, Some(&token), Some(&own_origin)).await, 101);
    assert_eq!(handshake_status(&url, Some(&token), None).await, 101);
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_33rd_client_is_refused_with_a_reason() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", "");
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(connect(&url, &token).await.0);
    }
    let refused = tokio_tungstenite::connect_async(request(&url, Some(&token))).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("at most 32") && body.contains("daemon.max_clients"), "{body}");
        }
        other => panic!("the 33rd client was not refused: {:?}", other.map(|_| "connected")),
    }
    // One leaves: the next one gets in.
    drop(held.pop());
    let deadline = Instant::now() + LONG;
    while handshake_status(&url, Some(&token), None).await != 101 {
        assert!(Instant::now() < deadline, "a slot never came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_a_mebibyte_closes_with_1009() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", "");
    let (mut ws, _) = connect(&url, &token).await;
    let huge = format!("{{\"type\":\"command\",\"id\":\"x\",\"pad\":\"{}\"}}", "a".repeat(2 << 20));
    let _ = ws.send(Message::text(huge)).await;
    let code = loop {
        match tokio::time::timeout(LONG, ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => d.fail(&format!("expected a close frame, got {other:?}")),
        }
    };
    assert_eq!(code, 1009);
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_closed_with_1013_while_others_keep_receiving() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", &mock_model("chatty", free_port(), ", --log-rate, \"3000\"", ""));
    // The slow client reads through a tiny receive window, one frame every 20 ms: far slower
    // than the events come, so the daemon's queue for it fills.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").trim_end_matches("/ws").parse().expect("addr");
    let stream = socket.connect(addr).await.expect("tcp");
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (mut slow, _) = tokio_tungstenite::client_async_with_config(request(&url, Some(&token)), stream, Some(config))
        .await
        .expect("slow client");
    let (mut reader, _) = connect(&url, &token).await;
    // The reader keeps receiving meanwhile; count its frames.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reading = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => {
                        received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Some(Ok(Message::Close(c)))) => panic!("the reading client was closed: {c:?}"),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("the reading client stopped receiving: {other:?}"),
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut slow_frames = 0u64;
    let code = loop {
        assert!(Instant::now() < deadline, "the slow client was never closed ({slow_frames} frames read)");
        match tokio::time::timeout(Duration::from_secs(30), slow.next()).await.expect("a frame or the close") {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => slow_frames += 1,
            Some(Err(e)) => panic!("expected a close frame after {slow_frames} frames, got an error: {e}"),
            None => panic!("the connection ended without a close frame"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = received.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(std::sync::atomic::Ordering::Relaxed) < before + 100 {
        assert!(Instant::now() < deadline, "the reading client stopped receiving after the slow one was closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reading.abort();
    assert_eq!(code, 1013);
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_watches_but_cannot_stop() {
    let sb = Sandbox::new();
    let readonly = sb.path().join("viewer.token");
    std::fs::write(&readonly, "read-only-token-0123456789abcdef\n").expect("token");
    let extra = format!("daemon: {{ readonly_token_file: '{}' }}\n", readonly.display());
    let (mut d, url, _) = daemon(&sb, &extra, &mock_model("m", free_port(), "", ""));
    let (mut ws, hello) = connect(&url, "read-only-token-0123456789abcdef").await;
    assert_eq!(hello["snapshot"]["state"]["models"][0]["id"], "m");
    send(&mut ws, json!({"type": "command", "id": "s1", "command": {"command": "stop_model", "model": "m"}})).await;
    let ack = wait_json(&mut ws, "the ack", |v| v["type"] == "ack").await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(ack["error"].as_str().is_some_and(|e| e.contains("read-only")), "{ack}");
    d.drain_for(Duration::from_millis(300));
    assert!(!d.states_of("m").contains(&"stopping".to_owned()), "the model was not touched");
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_need_the_token() {
    let sb = Sandbox::new();
    let (mut d, url, token) = daemon(&sb, "", &mock_model("m", free_port(), "", ""));
    d.wait_for("m ready", LONG, |v| v["type"] == "model" && v["model"] == "m" && v["state"] == "ready");
    let base = url.replace("ws://", "http://").trim_end_matches("/ws").to_owned();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let refused = http.get(format!("{base}/metrics")).send().await.expect("metrics");
    assert_eq!(refused.status(), 401);
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let ready = scrape
        .samples
        .iter()
        .find(|s| s.metric == "llmdeck_model_ready" && s.labels.get("model") == Some("m"))
        .expect("llmdeck_model_ready{model=\"m\"}");
    assert!(matches!(ready.value, prometheus_parse::Value::Gauge(v) if v == 1.0), "{ready:?}");
    assert!(scrape.samples.iter().any(|s| s.metric == "llmdeck_model_restarts_total"), "{text}");
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

/// The attach client (a `Link`): a daemon restart on the same address makes it resync from
/// the new daemon's hello (a new epoch), and its commands work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_makes_attached_viewers_resync() {
    use llmdeck::protocol::{Command, Link, LinkStatus, answered};
    let sb = Sandbox::new();
    let port = free_port();
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\ndaemon: {{ listen: '127.0.0.1:{port}' }}\nmodels:\n{}",
        mock_model("m", free_port(), "", "")
    ));
    let mut d = Daemon::start_with(&sb, &["daemon", "--config"], &config);
    let url = d.ws_url(&sb);
    let token =
        llmdeck::remote::token::read(&sb.path().join("data").join("llmdeck").join("daemon.token")).expect("token");
    let link = llmdeck::remote::WsLink::connect(&url, token).await.expect("attach");
    let first_epoch = link.subscribe().snapshot.epoch;
    let mut status = link.status();
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
    tokio::time::timeout(LONG, status.wait_for(|s| matches!(s, LinkStatus::Disconnected { .. })))
        .await
        .expect("the viewer notices")
        .expect("status");
    let mut again = Daemon::start_with(&sb, &["daemon", "--config"], &config);
    again.wait_for("m ready", LONG, |v| v["type"] == "model" && v["model"] == "m" && v["state"] == "ready");
    tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| *s == LinkStatus::Connected))
        .await
        .expect("reconnected")
        .expect("status");
    let snapshot = link.subscribe().snapshot;
    assert_ne!(snapshot.epoch, first_epoch, "resynced to the new daemon");
    let answer = link.submit(Command::RestartModel { model: "m".into() }).expect("submitted");
    answered(answer).await.expect("the new daemon answers");
    again.signal(15);
    assert!(again.wait_exit(LONG).success());
}

/// The Models and Tests rows of a screen (its left half): what must match between two viewers
/// of one state. Durations (the uptime) and the port, which differ between two runs, are left out.
fn rows_of(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|l| l.chars().take(60).collect::<String>())
        .filter(|l| ["m-one", "smoke", "Models", "Tests"].iter().any(|w| l.contains(w)))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| {
                    !(w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok())
                        && w.parse::<u16>().map_or(true, |n| n < 1000)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `llmdeck attach` shows what the in-process TUI shows for the same state; killing it (even
/// with SIGKILL) never touches the daemon's models; and plain `llmdeck` on a state dir a daemon
/// holds attaches to it instead of refusing.
#[test]
fn attach_in_tmux_matches_the_in_process_tui_and_never_affects_the_daemon() {
    use common::BIN;
    let sb = Sandbox::new();
    let port = free_port();
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\nmodels:\n{}tests:\n  - {{ name: smoke, kind: local, model: m-one }}\n",
        mock_model("m-one", port, "", "")
    ));
    // The in-process TUI first.
    let t = sb.tmux(120, 40, &[]);
    t.launch(&format!("'{BIN}' --config '{}'", config.display()));
    t.wait_text("● ready", LONG);
    let in_process = rows_of(&t.screen());
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);
    assert_eq!(t.wait_exited(LONG), 0);

    // Then the daemon, and a viewer attached to it.
    let mut d = Daemon::start(&sb, &config);
    d.wait_for("m-one ready", LONG, |v| v["type"] == "model" && v["model"] == "m-one" && v["state"] == "ready");
    let pid = d.model_events("m-one").iter().find_map(|v| v["pid"].as_u64()).expect("pid");
    let viewer = sb.tmux(120, 40, &[]);
    viewer.launch(&format!("'{BIN}' attach --config '{}'", config.display()));
    viewer.wait_text("● ready", LONG);
    viewer.wait_text("attached to ws://", Duration::from_secs(5));
    let attached_rows = rows_of(&viewer.screen());
    assert_eq!(attached_rows, in_process, "the attached screen differs:\n{}", viewer.screen());

    // Plain `llmdeck` on the same state dir attaches too.
    let second = sb.tmux(120, 40, &[]);
    second.launch(&format!("'{BIN}' --config '{}'", config.display()));
    second.wait_text("attached to ws://", LONG);

    let attached = viewer.pane_pid();
    let llmdeck = std::process::Command::new("pgrep").arg("-P").arg(attached.to_string()).output().expect("pgrep");
    let llmdeck: u32 = String::from_utf8_lossy(&llmdeck.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("attach runs");
    common::unsafe_kill(llmdeck, 9);
    assert_eq!(viewer.wait_exited(LONG), 128 + 9);
    second.keys(&["q"]);
    assert_eq!(second.wait_exited(LONG), 0, "quitting a viewer asks nothing: the daemon keeps its models");
    d.drain_for(Duration::from_millis(500));
    assert!(common::alive(pid as u32), "the model still runs");
    assert_eq!(d.states_of("m-one"), ["starting", "ready"], "nothing happened to the model");
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
}

/// SIGTERM to a daemon whose test is running: the run is cancelled, its cleanup (a command
/// that takes a few seconds) runs to its end and is reported done, and only then are the
/// models stopped.
#[test]
fn sigterm_of_the_daemon_waits_for_a_runs_cleanup() {
    let sb = Sandbox::new();
    let marker = sb.path().join("cleaned");
    let tests = format!(
        "tests:\n  - name: slow-cleanup\n    kind: local\n    model: m\n    probe: {{ requests: 1000, concurrency: 1 }}\n    cleanup_command: \"sleep 3; echo cleaned > '{}'\"\n",
        marker.display()
    );
    let models = format!("{}{tests}", mock_model("m", free_port(), ", --latency-ms, \"200\"", ""));
    let (mut d, url, token) = daemon(&sb, "", &models);
    d.wait_for("m ready", LONG, |v| v["type"] == "model" && v["model"] == "m" && v["state"] == "ready");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (mut ws, _) = connect(&url, &token).await;
        send(
            &mut ws,
            json!({"type": "command", "id": "run", "command": {"command": "run_test", "test": "slow-cleanup"}}),
        )
        .await;
        let ack = wait_json(&mut ws, "the ack", |v| v["type"] == "ack").await;
        assert_eq!(ack["ok"], true, "{ack}");
    });
    d.wait_for("the probe to run", LONG, |v| {
        v["type"] == "run" && v["change"] == "step" && v["index"] == 1 && v["status"] == "running"
    });
    d.signal(15);
    let cleaning = d.wait_for("the cleanup announced", LONG, |v| v["type"] == "engine" && v["event"] == "cleaning_up");
    assert_eq!(cleaning["runs"].as_array().map(Vec::len), Some(1), "{cleaning}");
    assert!(d.wait_exit(LONG).success());
    assert!(marker.exists(), "the cleanup ran to its end");
    let position = |pred: &dyn Fn(&Value) -> bool| d.seen.iter().position(pred);
    let cleaned =
        position(&|v| v["type"] == "run" && v["change"] == "step" && v["index"] == 3 && v["status"] == "done")
            .expect("the cleanup step is reported done");
    let finished = position(&|v| v["type"] == "run" && v["change"] == "finished").expect("a verdict");
    let stopping = position(&|v| v["type"] == "model" && v["state"] == "stopping").expect("the model stops");
    assert!(cleaned < finished && finished < stopping, "cleanup, then verdict, then the models");
    assert_eq!(d.seen[finished]["verdict"]["outcome"], "cancelled");
}
