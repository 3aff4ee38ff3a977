//! The probe's hot loop for plain `http://` targets reached without a proxy: hyper's HTTP/1.1
//! connections used directly, one request at a time each, pooled per lane.
//!
//! Profiling the probe against oha (benches/probe_vs_oha.sh) showed reqwest's layers — the
//! legacy pool's connector clone and key hashing, URL to URI conversion, default-header
//! merging — costing about as much CPU per request as the whole gap to oha. Everything else
//! (TLS, proxies, redirects reported) stays with reqwest.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::outcome::{Failure, Outcome, error_chain};

type Sender = http1::SendRequest<Full<Bytes>>;

/// A connection: its sender and the task driving it. Dropped, it closes the socket at once,
/// which is what tells the server that the client went away (a cancelled request, a half-read
/// answer).
struct Connection {
    sender: Sender,
    driver: AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends POSTs of one body shape to one URL over pooled keep-alive connections.
pub struct DirectClient {
    /// `host:port`, as connected to.
    authority: String,
    /// Path and query, as sent in the request line.
    target: Uri,
    host: HeaderValue,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for DirectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectClient").field("authority", &self.authority).field("target", &self.target).finish()
    }
}

/// Whether a proxy is configured for plain HTTP (then reqwest sends: it honours the proxy and
/// `NO_PROXY`).
fn proxy_configured() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

impl DirectClient {
    /// A client for `url` when it is plain HTTP that no proxy applies to; `None` otherwise.
    pub fn for_url(url: &reqwest::Url, connect_timeout: Duration, max_idle: usize) -> Option<Arc<Self>> {
        if url.scheme() != "http" || (!crate::util::is_loopback_url(url.as_str()) && proxy_configured()) {
            return None;
        }
        // IPv6 literals come with their brackets, as both the authority and Host need them.
        let host = url.host_str()?.to_owned();
        let port = url.port_or_known_default()?;
        let authority = format!("{host}:{port}");
        let host_header = if url.port().is_some() { authority.clone() } else { host };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Some(Arc::new(Self {
            target: path.parse().ok()?,
            host: HeaderValue::from_str(&host_header).ok()?,
            authority,
            connect_timeout,
            max_idle: max_idle.max(1),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Sends one POST of `body`; the response's body returns the connection to the pool once
    /// read to its end.
    pub async fn post(self: &Arc<Self>, body: Bytes, auth: Option<&HeaderValue>) -> Result<Response, Failure> {
        // A pooled connection the server closed before our request went out is retried once on
        // a fresh one (as reqwest does); anything that failed after it was sent is not.
        let mut request = self.request(body, auth);
        if let Some(mut idle) = self.checkout() {
            match idle.sender.try_send_request(request).await {
                Ok(response) => return Ok(self.response(response, idle)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(send_failure(failed.into_error())),
                },
            }
        }
        let mut fresh = self.connect().await?;
        match fresh.sender.send_request(request).await {
            Ok(response) => Ok(self.response(response, fresh)),
            Err(e) => Err(send_failure(e)),
        }
    }

    fn request(&self, body: Bytes, auth: Option<&HeaderValue>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("llmdeck/", env!("CARGO_PKG_VERSION"))));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = auth {
            headers.insert(hyper::header::AUTHORIZATION, auth.clone());
        }
        request
    }

    fn checkout(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(candidate) = idle.pop() {
            if candidate.sender.is_ready() {
                return Some(candidate);
            }
        }
        None
    }

    fn checkin(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle && connection.sender.is_ready() {
            idle.push(connection);
        }
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    Outcome::ConnectionError,
                    format!("connecting to {}: {}", self.authority, error_chain(&e)),
                ));
            }
            Err(_) => {
                let limit = humantime::format_duration(self.connect_timeout);
                return Err(Failure::new(
                    Outcome::TimeoutConnect,
                    format!("connecting to {} took longer than {limit}", self.authority),
                ));
            }
        };
        // Small requests go out at once, as with reqwest's tcp_nodelay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(send_failure)?;
        let driver = tokio::spawn(async move {
            // Its end (closed by either side) shows in the sender: nothing to report here.
            let _ = connection.await;
        })
        .abort_handle();
        Ok(Connection { sender, driver })
    }

    fn response(self: &Arc<Self>, response: hyper::Response<Incoming>, connection: Connection) -> Response {
        let (parts, body) = response.into_parts();
        Response {
            status: parts.status,
            headers: parts.headers,
            body,
            lease: Some(Lease { client: Arc::clone(self), connection: Some(connection) }),
        }
    }
}

/// A connection on loan to one response: back to the pool when the body was read to its end,
/// closed when dropped before (a half-read connection is never reused).
struct Lease {
    client: Arc<DirectClient>,
    connection: Option<Connection>,
}

impl Lease {
    fn release(mut self) {
        if let Some(connection) = self.connection.take() {
            self.client.checkin(connection);
        }
    }
}

/// A response whose body is read frame by frame.
pub struct Response {
    pub status: hyper::StatusCode,
    pub headers: hyper::HeaderMap,
    body: Incoming,
    lease: Option<Lease>,
}

impl Response {
    /// The next piece of the body; `None` at its end (the connection is then reusable).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers carry nothing the probe reads.
                }
                Some(Err(e)) => {
                    self.lease = None;
                    return Err(e);
                }
                None => {
                    if let Some(lease) = self.lease.take() {
                        lease.release();
                    }
                    return Ok(None);
                }
            }
        }
    }

    pub fn content_length(&self) -> Option<u64> {
        hyper::body::Body::size_hint(&self.body).exact()
    }
}

/// A failure to get a response over a connection.
fn send_failure<E: StdError + 'static>(e: E) -> Failure {
    Failure::new(Outcome::ConnectionError, error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Option<Arc<DirectClient>> {
        DirectClient::for_url(&reqwest::Url::parse(url).unwrap(), Duration::from_secs(1), 4)
    }

    #[test]
    fn plain_http_is_sent_directly_https_is_not() {
        let direct = client("http://127.0.0.1:8000/v1/chat/completions?x=1").expect("direct");
        assert_eq!(direct.authority, "127.0.0.1:8000");
        assert_eq!(direct.target.to_string(), "/v1/chat/completions?x=1");
        assert_eq!(direct.host, "127.0.0.1:8000");
        assert!(client("https://127.0.0.1:8000/v1/completions").is_none());
    }

    /// A tiny HTTP/1.1 server: answers `{}` to each request; closes a connection after
    /// `per_connection` answers. Returns its URL and a count of accepted connections.
    async fn server(per_connection: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        // Headers, then a body of content-length bytes.
                        let body_start = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < body_start + length {
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..body_start + length);
                        let answer =
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    // Dropping the socket closes the connection, as a server's keep-alive timeout does.
                });
            }
        });
        (url, accepted)
    }

    async fn post_and_read(direct: &Arc<DirectClient>) -> Bytes {
        let mut response = direct.post(Bytes::from_static(b"{}"), None).await.expect("answered");
        assert_eq!(response.status, 200);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.expect("body") {
            body.extend_from_slice(&chunk);
        }
        Bytes::from(body)
    }

    #[tokio::test]
    async fn a_connection_is_reused_for_requests_read_to_their_end() {
        let (url, accepted) = server(usize::MAX).await;
        let direct = client(&url).unwrap();
        for _ in 0..10 {
            assert_eq!(post_and_read(&direct).await, Bytes::from_static(b"{}"));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_not_counted_as_a_failure() {
        let (url, accepted) = server(1).await;
        let direct = client(&url).unwrap();
        for _ in 0..5 {
            // Give the close time to arrive, or to race the next request: both must succeed.
            tokio::task::yield_now().await;
            assert_eq!(post_and_read(&direct).await, Bytes::from_static(b"{}"));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_closes_its_connection() {
        let (url, accepted) = server(usize::MAX).await;
        let direct = client(&url).unwrap();
        let response = direct.post(Bytes::from_static(b"{}"), None).await.expect("answered");
        drop(response);
        assert!(direct.idle.lock().unwrap().is_empty(), "a half-read connection went back to the pool");
        post_and_read(&direct).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_dropped_while_waiting_for_its_answer_closes_its_connection() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Never answers; reads until the client closes.
            let mut chunk = [0u8; 4096];
            while socket.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
            let _ = closed_tx.send(());
        });
        let direct = client(&url).unwrap();
        let waiting = direct.post(Bytes::from_static(b"{}"), None);
        assert!(tokio::time::timeout(Duration::from_millis(100), waiting).await.is_err(), "answered?");
        tokio::time::timeout(Duration::from_secs(10), closed_rx)
            .await
            .expect("the server saw the connection close")
            .unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
        drop(listener);
        let failure = client(&url).unwrap().post(Bytes::new(), None).await.err().expect("refused");
        assert_eq!(failure.outcome, Outcome::ConnectionError);
        assert!(failure.message.contains("refused"), "{}", failure.message);
    }

    #[test]
    fn default_ports_and_ipv6_literals_keep_a_valid_host() {
        let direct = client("http://[::1]/v1/completions").expect("direct");
        assert_eq!(direct.authority, "[::1]:80");
        assert_eq!(direct.host, "[::1]");
    }
}
