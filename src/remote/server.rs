//! The daemon's HTTP server: the WebSocket at `/ws` (hello, events, commands and their acks),
//! Prometheus text at `/metrics`, and the tail of a log file at `/logs/{source}` — all behind a
//! bearer token. It serves whatever engine its [`Link`] reaches.
//!
//! Each client gets its own subscription and a bounded queue; a client that falls behind is
//! closed with 1013 (it reconnects and resyncs) and never makes the engine wait.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path as UrlPath, Query, State as Axum};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::token::Token;
use super::wire::{ClientFrame, EventFrameRef, ServerFrame};
use crate::logs::LogSource;
use crate::protocol::{Command, SharedLink, answered};

/// Incoming frames larger than this are refused (close 1009).
pub const MAX_INCOMING_BYTES: usize = 1024 * 1024;
/// Messages are read whole up to this size, so one over [`MAX_INCOMING_BYTES`] can be refused
/// with a clean close (cutting it off mid-read would reset the connection instead); beyond it
/// the connection is simply dropped. Only clients holding a token get this far.
const HARD_INCOMING_LIMIT: usize = 16 * 1024 * 1024;
/// Frames queued for one client before it counts as fallen behind.
const CLIENT_QUEUE: usize = 512;
/// How often the server pings; a peer silent for [`DEAD_AFTER`] is dropped.
const PING_EVERY: Duration = Duration::from_secs(10);
const DEAD_AFTER: Duration = Duration::from_secs(30);
/// How long a close frame may take to leave (behind what the slow client has yet to read)
/// before the connection is simply dropped; within the dead-peer bound.
const CLOSE_GRACE: Duration = Duration::from_secs(20);
/// `/logs/{source}` serves at most this much of a file's end.
const MAX_LOG_TAIL: u64 = 16 * 1024 * 1024;

/// What the server needs besides the engine.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub token: Token,
    /// A second token that may watch but not change anything.
    pub readonly: Option<Token>,
    pub max_clients: usize,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    /// Where model logs are (`<dir>/<id>.log`) and llmdeck's own log.
    pub log_dir: PathBuf,
    pub app_log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Full,
    ReadOnly,
}

struct Server {
    link: SharedLink,
    opts: ServerOptions,
    clients: AtomicUsize,
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    link: SharedLink,
    opts: ServerOptions,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let server = Arc::new(Server { link, opts, clients: AtomicUsize::new(0) });
    let app = Router::new()
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/logs/{source}", get(log_tail))
        .with_state(server);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response()
}

impl Server {
    /// The caller's role, or why it has none (turned into a 401 by [`refused`]).
    fn role(&self, headers: &HeaderMap) -> Result<Role, &'static str> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match presented {
            Some(t) if self.opts.token.matches(t) => Ok(Role::Full),
            Some(t) if self.opts.readonly.as_ref().is_some_and(|r| r.matches(t)) => Ok(Role::ReadOnly),
            Some(_) => Err("wrong token"),
            None => Err(
                "a token is required: send `Authorization: Bearer <token>` (llmdeck attach reads it from the daemon's token file)",
            ),
        }
    }
}

/// A browser tab on another site must not reach the daemon: an `Origin` that is not this
/// host is refused. (Non-browser clients send no `Origin`.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Counts a connected client; released when dropped.
struct ClientSlot(Arc<Server>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn websocket(
    Axum(server): Axum<Arc<Server>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let role = match server.role(&headers) {
        Ok(role) => role,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, why),
    };
    if !same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin WebSocket requests are refused");
    }
    let max = server.opts.max_clients;
    if server.clients.fetch_add(1, Ordering::SeqCst) >= max {
        server.clients.fetch_sub(1, Ordering::SeqCst);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("too many clients: the daemon serves at most {max} (daemon.max_clients)"),
        );
    }
    let slot = ClientSlot(server.clone());
    upgrade.max_message_size(HARD_INCOMING_LIMIT).max_frame_size(HARD_INCOMING_LIMIT).on_upgrade(
        move |socket| async move {
            tracing::info!("viewer {peer} attached{}", if role == Role::ReadOnly { " (read-only)" } else { "" });
            serve_client(socket, server.clone(), role).await;
            tracing::info!("viewer {peer} detached");
            drop(slot);
        },
    )
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))
}

fn text(json: String) -> Message {
    Message::Text(Utf8Bytes::from(json))
}

/// One client: the hello, then every event, while its commands are answered. Ends on the
/// client's close, a dead peer, a protocol breach, or the client falling behind.
async fn serve_client(socket: WebSocket, server: Arc<Server>, role: Role) {
    let (mut sink, mut stream) = socket.split();
    let sub = server.link.subscribe();
    let (out, mut queue) = mpsc::channel::<Message>(CLIENT_QUEUE);
    let closing = CancellationToken::new();
    let (close_tx, mut close_rx) = mpsc::channel::<Message>(1);

    // The writer: frames in order; a close request ends it (after a last, bounded try).
    let writer = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                Some(close) = close_rx.recv() => Err(close),
                msg = queue.recv() => match msg { Some(m) => Ok(m), None => break },
            };
            match next {
                Ok(msg) => {
                    tokio::select! {
                        sent = sink.send(msg) => if sent.is_err() { break },
                        Some(close) = close_rx.recv() => {
                            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
                            break;
                        }
                    }
                }
                Err(close) => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
                    break;
                }
            }
        }
    });
    let request_close = |msg: Message| {
        let _ = close_tx.try_send(msg);
        closing.cancel();
    };

    let hello = ServerFrame::Hello { version: env!("CARGO_PKG_VERSION").into(), snapshot: Box::new(sub.snapshot) };
    match serde_json::to_string(&hello) {
        Ok(json) => {
            let _ = out.try_send(text(json));
        }
        Err(e) => request_close(close(close_code::ERROR, &format!("cannot encode the snapshot: {e}"))),
    }
    let mut events = sub.events;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    while !closing.is_cancelled() {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let json = match serde_json::to_string(&EventFrameRef::new(event.seq, &event.event)) {
                        Ok(json) => json,
                        Err(e) => {
                            request_close(close(close_code::ERROR, &format!("cannot encode event {}: {e}", event.seq)));
                            break;
                        }
                    };
                    if out.try_send(text(json)).is_err() {
                        request_close(close(close_code::AGAIN, "falling behind: reconnect to resync"));
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    request_close(close(close_code::AGAIN, "falling behind: reconnect to resync"));
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    request_close(close(close_code::AWAY, "the engine stopped"));
                    break;
                }
            },
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(frame) )) if frame.len() > MAX_INCOMING_BYTES => {
                        let why = format!("a frame of {} bytes; the limit is {MAX_INCOMING_BYTES}", frame.len());
                        tracing::info!("a viewer sent {why}: closing");
                        request_close(close(close_code::SIZE, &why));
                        break;
                    }
                    Some(Ok(Message::Binary(frame))) if frame.len() > MAX_INCOMING_BYTES => {
                        let why = format!("a frame of {} bytes; the limit is {MAX_INCOMING_BYTES}", frame.len());
                        request_close(close(close_code::SIZE, &why));
                        break;
                    }
                    Some(Ok(Message::Text(frame))) => {
                        if let Some(ack) = handle_command(&server, role, frame.as_str()) {
                            let out = out.clone();
                            tokio::spawn(async move {
                                let ack = ack.await;
                                if let Ok(json) = serde_json::to_string(&ack) {
                                    let _ = out.send(text(json)).await;
                                }
                            });
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let ack = ServerFrame::ack(String::new(), Err("binary frames are not understood; send JSON text".into()));
                        if let Ok(json) = serde_json::to_string(&ack) {
                            let _ = out.try_send(text(json));
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        let (code, why) = read_error(e);
                        tracing::info!("a viewer's frame could not be read: {why}");
                        request_close(close(code, &why));
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    tracing::info!("a viewer stopped answering for {DEAD_AFTER:?}: dropped");
                    break;
                }
                let _ = out.try_send(Message::Ping(Default::default()));
            }
        }
    }
    drop(out);
    if closing.is_cancelled() {
        // Our close is on its way: read until the peer's answer, so the connection ends with
        // the close handshake rather than a reset under data the peer was still sending.
        let answered = async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, answered).await;
    }
    if tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), writer).await.is_err() {
        tracing::warn!("a viewer's connection did not close in time: dropped");
    }
}

/// The close code and reason for a failed read: 1009 for a frame over the limit.
fn read_error(e: axum::Error) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(c)) => (close_code::SIZE, format!("{c} (the limit is {MAX_INCOMING_BYTES} bytes)")),
        Some(WsError::Protocol(p)) => (close_code::PROTOCOL, p.to_string()),
        _ => (close_code::ERROR, inner.to_string()),
    }
}

/// Parses and submits a client's command; the future of its ack.
fn handle_command(
    server: &Arc<Server>,
    role: Role,
    frame: &str,
) -> Option<impl std::future::Future<Output = ServerFrame> + use<>> {
    let parsed: Result<ClientFrame, _> = serde_json::from_str(frame);
    let (id, command) = match parsed {
        Ok(ClientFrame::Command { id, command }) => (id, command),
        Err(e) => {
            // The id, if the frame has one, so the client can match the error.
            let id = serde_json::from_str::<serde_json::Value>(frame)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .unwrap_or_default();
            let error = format!("not a command: {e}");
            return Some(futures::future::Either::Left(std::future::ready(ServerFrame::ack(id, Err(error)))));
        }
    };
    if role == Role::ReadOnly && changes_something(&command) {
        let error = "this token is read-only: it can watch but not change anything".to_owned();
        return Some(futures::future::Either::Left(std::future::ready(ServerFrame::ack(id, Err(error)))));
    }
    let submitted = server.link.submit(command);
    Some(futures::future::Either::Right(async move {
        let answer = match submitted {
            Ok(answer) => answered(answer).await,
            Err(e) => Err(e),
        };
        ServerFrame::ack(id, answer.map(|a| a.message).map_err(|e| e.message))
    }))
}

/// Everything but watching needs the full token.
fn changes_something(command: &Command) -> bool {
    match command {
        Command::StartModel { .. }
        | Command::StopModel { .. }
        | Command::RestartModel { .. }
        | Command::RunTest { .. }
        | Command::CancelTest { .. }
        | Command::DestroySession { .. }
        | Command::ExtendSession { .. } => true,
    }
}

async fn metrics(Axum(server): Axum<Arc<Server>>, headers: HeaderMap) -> Response {
    if !server.opts.metrics_public
        && let Err(why) = server.role(&headers)
    {
        return refuse(StatusCode::UNAUTHORIZED, why);
    }
    let snapshot = server.link.subscribe().snapshot;
    let body = super::metrics::render(&snapshot.state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(serde::Deserialize)]
struct TailQuery {
    bytes: Option<u64>,
}

/// The end of a log file (`model:<id>` or `llmdeck`), for `o` in an attached TUI.
async fn log_tail(
    Axum(server): Axum<Arc<Server>>,
    headers: HeaderMap,
    UrlPath(source): UrlPath<String>,
    Query(query): Query<TailQuery>,
) -> Response {
    if let Err(why) = server.role(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, why);
    }
    let path = match LogSource::try_from(source.clone()) {
        Ok(LogSource::App) => server.opts.app_log.clone(),
        Ok(LogSource::Model(id)) if crate::config::is_valid_id(&id) => {
            crate::logs::file::log_path(&server.opts.log_dir, &id)
        }
        Ok(LogSource::Test(name)) => {
            return refuse(StatusCode::NOT_FOUND, &format!("{name} keeps no log file: its lines are in the Logs pane"));
        }
        _ => {
            return refuse(StatusCode::BAD_REQUEST, &format!("`{source}` is not a log source (model:<id> or llmdeck)"));
        }
    };
    let want = query.bytes.unwrap_or(1024 * 1024).min(MAX_LOG_TAIL);
    match read_tail(path.clone(), want).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse(StatusCode::NOT_FOUND, &format!("no log file at {}", path.display()))
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("reading {}: {e}", path.display())),
    }
}

async fn read_tail(path: PathBuf, want: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(&path).await?;
    let len = file.metadata().await?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(want))).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(want.min(len)).unwrap_or(0));
    file.take(want).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_browsers_get_through() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: not a browser");
        h.insert(header::HOST, "127.0.0.1:7777".parse().expect("header"));
        h.insert(header::ORIGIN, "http://127.0.0.1:7777".parse().expect("header"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().expect("header"));
        assert!(!same_origin(&h));
    }
}
