//! The attach side: a [`Link`] to a daemon over its WebSocket. It keeps a mirror of the
//! daemon's state (the same hub and reducer the engine uses), reconnects with backoff when the
//! connection drops, and resyncs from each hello; viewers see its status change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::token::Token;
use super::wire::{ClientFrame, ServerFrame};
use crate::logs::LogSource;
use crate::protocol::{
    Ack, Answer, Command, CommandError, Hub, Link, LinkStatus, Sequenced, Snapshot, State, Subscription,
};

/// Hellos carry a whole snapshot: far larger than anything a client sends.
const MAX_SERVER_FRAME: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between reconnection attempts.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a command may wait for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Ack, CommandError>>>>>;

/// A viewer's link to a daemon.
pub struct WsLink {
    url: String,
    hub: Arc<Hub>,
    status: watch::Sender<LinkStatus>,
    outgoing: mpsc::Sender<ClientFrame>,
    pending: Pending,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl Drop for WsLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the daemon refused the token (HTTP 401): {0}")]
    Unauthorized(String),
    #[error("the daemon refused the connection (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the daemon sent no hello: {0}")]
    NoHello(String),
}

impl WsLink {
    /// Connects (the first hello must arrive, so a wrong URL or token is an error now, not a
    /// banner later), then keeps the connection up in the background.
    pub async fn connect(url: &str, token: Token) -> Result<WsLink, ConnectError> {
        let (ws, snapshot) = open(url, &token).await?;
        let hub = Arc::new(Hub::from_snapshot(snapshot));
        let (status, _) = watch::channel(LinkStatus::Connected);
        let (outgoing, outgoing_rx) = mpsc::channel(64);
        let pending: Pending = Arc::default();
        let stop = CancellationToken::new();
        let conn = Connection {
            url: url.to_owned(),
            token,
            hub: hub.clone(),
            status: status.clone(),
            pending: pending.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(conn.run(ws, outgoing_rx));
        Ok(WsLink { url: url.to_owned(), hub, status, outgoing, pending, next_id: AtomicU64::new(1), stop })
    }

    /// The mirrored state, as of the last event received.
    pub fn state(&self) -> State {
        self.hub.snapshot().state
    }

    /// Fetches the end of a source's log file from the daemon (`/logs/{source}`).
    pub fn log_fetcher(
        &self,
        token: Token,
    ) -> impl Fn(LogSource) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync + 'static {
        let base = http_base(&self.url);
        move |source: LogSource| {
            let url = format!("{base}/logs/{source}");
            let token = token.clone();
            Box::pin(async move { fetch(&url, &token).await })
        }
    }
}

/// `ws://host:port/ws` → `http://host:port`.
fn http_base(ws_url: &str) -> String {
    let rest = ws_url
        .strip_prefix("ws://")
        .map(|r| ("http://", r))
        .or_else(|| ws_url.strip_prefix("wss://").map(|r| ("https://", r)));
    match rest {
        Some((scheme, rest)) => format!("{scheme}{}", rest.split('/').next().unwrap_or(rest)),
        None => ws_url.trim_end_matches("/ws").to_owned(),
    }
}

async fn fetch(url: &str, token: &Token) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let response = client
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| format!("fetching the log: {}", crate::util::error_chain(&e)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("reading the log: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "the daemon answered {status}: {}",
            crate::util::clean_excerpt(&String::from_utf8_lossy(&body), 200)
        ));
    }
    Ok(body.to_vec())
}

impl Link for WsLink {
    fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    fn submit(&self, command: Command) -> Result<Answer, CommandError> {
        if *self.status.borrow() != LinkStatus::Connected {
            return Err(CommandError::new("not connected to the daemon; try again once it is back"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (reply, answer) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), reply);
        if self.outgoing.try_send(ClientFrame::Command { id: id.clone(), command }).is_err() {
            lock(&self.pending).remove(&id);
            return Err(CommandError::new("too many commands in flight to the daemon; try again"));
        }
        let pending = self.pending.clone();
        // An ack that never comes must not leave the caller waiting forever.
        tokio::spawn(async move {
            tokio::time::sleep(ACK_TIMEOUT).await;
            if let Some(reply) = lock(&pending).remove(&id) {
                let _ = reply.send(Err(CommandError::new("the daemon did not answer in time")));
            }
        });
        Ok(answer)
    }

    fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    fn describe(&self) -> String {
        format!("attached to {}", self.url)
    }

    fn quitting_stops_engine(&self) -> bool {
        false
    }

    fn begin_shutdown(&self, _reason: &str) {}

    fn abandon_cleanups(&self) {}
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and reads the hello.
async fn open(url: &str, token: &Token) -> Result<(Socket, Snapshot), ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable { url: url.to_owned(), reason };
    let mut request = url.into_client_request().map_err(|e| unreachable(e.to_string()))?;
    let bearer = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| unreachable("the token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_SERVER_FRAME)).max_frame_size(Some(MAX_SERVER_FRAME));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
    let (mut ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| crate::util::clean_excerpt(&String::from_utf8_lossy(b), 300))
                .unwrap_or_default();
            return Err(if status == 401 {
                ConnectError::Unauthorized(body)
            } else {
                ConnectError::Refused { status, body }
            });
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(connected)) => connected,
    };
    let first = tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await;
    let frame = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(other))) => return Err(ConnectError::NoHello(format!("the first frame was {other:?}"))),
        Ok(Some(Err(e))) => return Err(ConnectError::NoHello(e.to_string())),
        Ok(None) => return Err(ConnectError::NoHello("the connection closed".into())),
        Err(_) => return Err(ConnectError::NoHello(format!("nothing within {CONNECT_TIMEOUT:?}"))),
    };
    match serde_json::from_str::<ServerFrame>(frame.as_str()) {
        Ok(ServerFrame::Hello { snapshot, .. }) => Ok((ws, *snapshot)),
        Ok(_) => Err(ConnectError::NoHello("the first frame was not a hello".into())),
        Err(e) => Err(ConnectError::NoHello(format!("undecodable hello: {e}"))),
    }
}

struct Connection {
    url: String,
    token: Token,
    hub: Arc<Hub>,
    status: watch::Sender<LinkStatus>,
    pending: Pending,
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, first: Socket, mut outgoing: mpsc::Receiver<ClientFrame>) {
        let mut socket = Some(first);
        let mut retry = RETRY_FIRST;
        loop {
            if let Some(ws) = socket.take() {
                let _ = self.status.send(LinkStatus::Connected);
                retry = RETRY_FIRST;
                let why = self.pump(ws, &mut outgoing).await;
                self.fail_pending("the connection to the daemon dropped before the answer");
                if self.stop.is_cancelled() {
                    return;
                }
                tracing::info!("attached daemon {}: {why}", self.url);
                let _ = self.status.send(LinkStatus::Disconnected { reason: why, retry_in_s: Some(retry.as_secs()) });
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            let _ = self.status.send(LinkStatus::Resyncing);
            match open(&self.url, &self.token).await {
                Ok((ws, snapshot)) => {
                    self.hub.reset(snapshot);
                    socket = Some(ws);
                }
                Err(e) => {
                    retry = (retry * 2).min(RETRY_MAX);
                    let _ = self
                        .status
                        .send(LinkStatus::Disconnected { reason: e.to_string(), retry_in_s: Some(retry.as_secs()) });
                }
            }
        }
    }

    /// Moves frames both ways until the connection ends; why it ended.
    async fn pump(&self, ws: Socket, outgoing: &mut mpsc::Receiver<ClientFrame>) -> String {
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    return "detached".into();
                }
                Some(frame) = outgoing.recv() => {
                    let Ok(json) = serde_json::to_string(&frame) else { continue };
                    if let Err(e) = sink.send(Message::text(json)).await {
                        return format!("sending failed: {e}");
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(why) = self.on_frame(text.as_str()) {
                            return why;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(f) if f.code == tungstenite::protocol::frame::coding::CloseCode::Again => {
                                format!("the daemon closed the connection: {} (resyncing)", f.reason)
                            }
                            Some(f) => format!("the daemon closed the connection: {}", f.reason),
                            None => "the daemon closed the connection".into(),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("the connection failed: {e}"),
                    None => return "the connection closed".into(),
                },
            }
        }
    }

    /// Folds one frame; `Some(why)` if the connection must be resynchronised.
    fn on_frame(&self, text: &str) -> Option<String> {
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(ServerFrame::Event { seq, event }) => {
                if !self.hub.publish_numbered(Sequenced { seq, event }) {
                    return Some(format!("event {seq} came after {}: a gap, resyncing", self.hub.seq()));
                }
                None
            }
            Ok(ServerFrame::Ack { id, ok, message, error }) => {
                if let Some(reply) = lock(&self.pending).remove(&id) {
                    let answer = if ok {
                        Ok(Ack { message: message.unwrap_or_default() })
                    } else {
                        Err(CommandError::new(error.unwrap_or_else(|| "refused".into())))
                    };
                    let _ = reply.send(answer);
                }
                None
            }
            Ok(ServerFrame::Hello { snapshot, .. }) => {
                self.hub.reset(*snapshot);
                None
            }
            Err(e) => Some(format!("the daemon sent an undecodable frame: {e}")),
        }
    }

    fn fail_pending(&self, why: &str) {
        for (_, reply) in lock(&self.pending).drain() {
            let _ = reply.send(Err(CommandError::new(why)));
        }
    }
}
