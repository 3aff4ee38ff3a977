//! One request on the wire: send, read (streaming or not) under its own timeouts, classify.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::answer::{self, Usage};
use super::direct::{self, DirectClient};
use super::outcome::{Failure, Outcome, error_chain};
use super::prompts::Expected;
use super::{Endpoint, Timeouts};

/// A non-streaming answer larger than this is refused as malformed (bounded buffers).
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Only this much of an error body is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 16 << 10;
/// Only this much of the answer text is kept for the expected-answer check.
const MAX_ANSWER_CHARS: usize = 16 << 10;
/// The most one server-sent event may hold, its lines together: a server that never ends an
/// event sends a malformed stream, not an ever-growing buffer.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// What reading a streamed body can fail with before the events are parsed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError<E: StdError + 'static> {
    #[error(transparent)]
    Transport(E),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes (no blank line ends it)")]
    EventTooLarge,
}

/// Bytes of the event being read, across chunks: reset by a blank line (`\n\n`, `\n\r\n`).
#[derive(Default)]
struct EventBudget {
    in_event: usize,
    line_len: usize,
    last_byte: u8,
}

impl EventBudget {
    /// Counts `chunk`; false once the current event is over [`MAX_EVENT_BYTES`].
    fn take(&mut self, chunk: &[u8]) -> bool {
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let segment = &chunk[from..nl];
            if let Some(&b) = segment.last() {
                self.last_byte = b;
            }
            let line = self.line_len + segment.len();
            let blank = line == 0 || (line == 1 && self.last_byte == b'\r');
            self.in_event = if blank { 0 } else { self.in_event + line + 1 };
            self.line_len = 0;
            self.last_byte = b'\n';
            from = nl + 1;
        }
        let rest = &chunk[from..];
        if let Some(&b) = rest.last() {
            self.last_byte = b;
        }
        self.line_len += rest.len();
        self.in_event + self.line_len <= MAX_EVENT_BYTES
    }
}

/// `bytes` with each event bounded by [`MAX_EVENT_BYTES`]: past it, one
/// [`BodyError::EventTooLarge`] and the end.
pub(super) fn bounded_events<S, E>(bytes: S) -> impl Stream<Item = Result<Bytes, BodyError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: StdError + 'static,
{
    let mut budget = EventBudget::default();
    let mut over = false;
    bytes
        .map(move |chunk| match chunk {
            Ok(bytes) if budget.take(&bytes) => Ok(bytes),
            Ok(_) => Err(BodyError::EventTooLarge),
            Err(e) => Err(BodyError::Transport(e)),
        })
        .take_while(move |item| {
            let go = !over;
            over |= matches!(item, Err(BodyError::EventTooLarge));
            std::future::ready(go)
        })
}

/// What happened to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRecord {
    pub outcome: Outcome,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Sending to the last byte of the answer (`[DONE]` when streaming), or to the failure.
    pub latency: Duration,
    /// Streaming: sending to the first content token (kept for failed and cancelled requests too).
    pub ttft: Option<Duration>,
    /// Streaming: gaps between consecutive content chunks.
    pub itl: Vec<Duration>,
    pub prompt_tokens: Option<u64>,
    /// From `usage` when the server sent it; else counted chunks (streaming) or estimated from
    /// the text (4 characters a token), and `tokens_estimated` is set.
    pub completion_tokens: u64,
    pub tokens_estimated: bool,
    /// Successful answers to prompts with an expected answer: whether it was there.
    pub answer_matched: Option<bool>,
    /// The failure's message.
    pub error: Option<String>,
    /// Against a server that stamps its chunks: each content chunk's delivery delay (read here −
    /// sent there), and the TTFT measured here minus the server's own.
    pub delivery: Vec<Duration>,
    pub ttft_error: Option<Duration>,
}

/// Sends requests of one probe run: one client, one URL (parsed once), one set of timeouts.
#[derive(Debug, Clone)]
pub struct Requester {
    client: reqwest::Client,
    /// Plain HTTP without a proxy: hyper's connections directly (the hot loop's fast path).
    direct: Option<Arc<DirectClient>>,
    url: reqwest::Url,
    auth: Option<HeaderValue>,
    endpoint: Endpoint,
    stream: bool,
    timeouts: Timeouts,
    /// Content chunks received so far by every request of the run (live tokens/s).
    live_chunks: Arc<AtomicU64>,
}

impl Requester {
    pub fn new(
        client: reqwest::Client,
        url: reqwest::Url,
        auth: Option<HeaderValue>,
        endpoint: Endpoint,
        stream: bool,
        timeouts: Timeouts,
    ) -> Self {
        Self { client, direct: None, url, auth, endpoint, stream, timeouts, live_chunks: Arc::default() }
    }

    /// Sends over hyper's connections directly when the URL allows it (plain HTTP, no proxy),
    /// keeping at most `max_idle` of them open between requests.
    pub fn with_direct_connections(mut self, max_idle: usize) -> Self {
        self.direct = DirectClient::for_url(&self.url, self.timeouts.connect, max_idle);
        self
    }

    /// Counts every streamed content chunk into `counter` as it arrives.
    pub fn with_live_chunks(mut self, counter: Arc<AtomicU64>) -> Self {
        self.live_chunks = counter;
        self
    }

    /// Runs one request to its end, whatever happens; never fails, it classifies.
    pub async fn execute(&self, body: Bytes, expected: Option<&Expected>, cancel: &CancellationToken) -> RequestRecord {
        let clock = if self.stream { Clock::start_stream(&self.timeouts) } else { Clock::start(&self.timeouts) };
        let mut tally = Tally::default();
        // One cancellation check around the whole exchange: dropping it drops the response,
        // which closes the connection, so the server sees the disconnect at once.
        let result = or_cancelled(cancel, self.exchange(body, &clock, &mut tally)).await;
        let end = tally.finished_at.unwrap_or_else(Instant::now);
        let mut record = RequestRecord {
            outcome: Outcome::Success,
            status: tally.status,
            latency: end - clock.start,
            ttft: tally.first_token.map(|t| t - clock.start),
            prompt_tokens: tally.usage.and_then(|u| u.prompt_tokens),
            ..RequestRecord::default()
        };
        (record.completion_tokens, record.tokens_estimated) = tally.completion_tokens(self.stream);
        record.itl = tally.itl;
        record.delivery = tally.delivery;
        record.ttft_error = tally.ttft_error;
        match result {
            Ok(()) => {
                record.answer_matched = expected.map(|e| e.is_in(&tally.answer));
            }
            Err(failure) => {
                record.outcome = failure.outcome;
                record.error = Some(failure.message);
            }
        }
        record
    }

    async fn send(&self, body: Bytes, clock: &Clock<'_>) -> Result<Answer, Failure> {
        if let Some(direct) = &self.direct {
            return clock.within(Phase::FirstToken, direct.post(body, self.auth.as_ref())).await?.map(Answer::Direct);
        }
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = clock.within(Phase::FirstToken, request.send()).await?.map_err(Failure::from_send_error)?;
        Ok(Answer::Pooled(response))
    }

    async fn exchange(&self, body: Bytes, clock: &Clock<'_>, tally: &mut Tally) -> Result<(), Failure> {
        let response = self.send(body, clock).await?;
        let status = response.status();
        tally.status = Some(status.as_u16());
        if !status.is_success() {
            return Err(error_status(response, clock).await);
        }
        let content_type = content_type(&response);
        if self.stream {
            if !is_event_stream(content_type) {
                return Err(Failure::malformed(format!("expected an event stream, got content type `{content_type}`")));
            }
            let events = std::pin::pin!(bounded_events(response.into_stream()).eventsource());
            read_events(events, self.endpoint, clock, tally, &self.live_chunks).await
        } else {
            if !is_json(content_type) {
                return Err(Failure::malformed(format!("expected JSON, got content type `{content_type}`")));
            }
            let body = read_body(response, MAX_BODY_BYTES, clock).await?;
            tally.finished_at = Some(Instant::now());
            let full = answer::parse_full(&body, self.endpoint)?;
            tally.answer = truncate_chars(full.answer, MAX_ANSWER_CHARS);
            tally.generated_chars = full.generated.chars().count();
            tally.usage = full.usage;
            Ok(())
        }
    }
}

/// A response from either sender, read the same way.
enum Answer {
    Pooled(reqwest::Response),
    Direct(direct::Response),
}

/// A body that broke off, from either sender.
#[derive(Debug)]
pub(super) enum ReadError {
    Pooled(reqwest::Error),
    Direct(hyper::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Pooled(e) => e.fmt(f),
            ReadError::Direct(e) => e.fmt(f),
        }
    }
}

impl StdError for ReadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ReadError::Pooled(e) => e.source(),
            ReadError::Direct(e) => e.source(),
        }
    }
}

impl Answer {
    fn status(&self) -> reqwest::StatusCode {
        match self {
            Answer::Pooled(r) => r.status(),
            Answer::Direct(r) => r.status,
        }
    }

    fn headers(&self) -> &reqwest::header::HeaderMap {
        match self {
            Answer::Pooled(r) => r.headers(),
            Answer::Direct(r) => &r.headers,
        }
    }

    fn content_length(&self) -> Option<u64> {
        match self {
            Answer::Pooled(r) => r.content_length(),
            Answer::Direct(r) => r.content_length(),
        }
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, ReadError> {
        match self {
            Answer::Pooled(r) => r.chunk().await.map_err(ReadError::Pooled),
            Answer::Direct(r) => r.chunk().await.map_err(ReadError::Direct),
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, ReadError>> {
        futures::stream::unfold(Some(self), |answer| async move {
            let mut answer = answer?;
            match answer.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(answer))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

fn content_type(response: &Answer) -> &str {
    response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").trim()
}

/// The media type without parameters (`application/json; charset=utf-8` → `application/json`).
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case("application/json")
        || essence.get(essence.len().saturating_sub(5)..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
}

fn is_event_stream(content_type: &str) -> bool {
    essence(content_type).eq_ignore_ascii_case("text/event-stream")
}

/// A non-2xx response: classified by status; the body only supplies the message.
async fn error_status(response: Answer, clock: &Clock<'_>) -> Failure {
    let status = response.status();
    let outcome = Outcome::of_status(status.as_u16());
    let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let detail = match read_body(response, MAX_ERROR_BODY_BYTES, clock).await {
        Ok(body) => answer::error_body_message(&body),
        Err(f) if f.outcome == Outcome::Cancelled => return f,
        Err(f) => format!("(body unreadable: {})", f.message),
    };
    let mut message = format!("HTTP {}", status.as_u16());
    if let Some(location) = location {
        message.push_str(&format!(" redirect to {location} (not followed)"));
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    Failure::new(outcome, message)
}

/// What has been seen of one request so far.
#[derive(Debug, Default)]
struct Tally {
    status: Option<u16>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    itl: Vec<Duration>,
    content_chunks: u64,
    answer: String,
    generated_chars: usize,
    usage: Option<Usage>,
    finished_at: Option<Instant>,
    /// A chunk carried a `finish_reason`.
    finish_seen: bool,
    delivery: Vec<Duration>,
    ttft_error: Option<Duration>,
}

impl Tally {
    fn on_token(&mut self, at: Instant) {
        if self.first_token.is_none() {
            self.first_token = Some(at);
        }
        if let Some(last) = self.last_token {
            self.itl.push(at - last);
        }
        self.last_token = Some(at);
        self.content_chunks += 1;
    }

    /// A content chunk the server stamped, read `since_start` after the request was sent.
    fn on_stamped_token(&mut self, since_start: Duration, stamp: answer::Stamp) {
        let read_unix_us = crate::util::unix_micros();
        self.delivery.push(Duration::from_micros(read_unix_us.saturating_sub(stamp.sent_unix_us)));
        if self.first_token.is_none() {
            let server_ttft = Duration::from_micros(stamp.sent_unix_us.saturating_sub(stamp.received_unix_us));
            self.ttft_error = Some(since_start.saturating_sub(server_ttft));
        }
    }

    /// `usage` when reported, else an estimate (flagged).
    fn completion_tokens(&self, stream: bool) -> (u64, bool) {
        if let Some(n) = self.usage.and_then(|u| u.completion_tokens) {
            return (n, false);
        }
        if stream { (self.content_chunks, true) } else { (self.generated_chars.div_ceil(4) as u64, true) }
    }
}

/// Reads server-sent events until `data: [DONE]`.
async fn read_events<S, E>(
    mut events: S,
    endpoint: Endpoint,
    clock: &Clock<'_>,
    tally: &mut Tally,
    live_chunks: &AtomicU64,
) -> Result<(), Failure>
where
    S: Stream<Item = Result<eventsource_stream::Event, EventStreamError<BodyError<E>>>> + Unpin,
    E: StdError + 'static,
{
    let mut last_event: Option<Instant> = None;
    loop {
        // Until the first token only the first-token timeout applies; then each gap is bounded.
        let phase = match (tally.first_token, last_event) {
            (Some(_), Some(since)) => Phase::Idle(since),
            _ => Phase::FirstToken,
        };
        let next = clock.within(phase, events.next()).await?;
        let now = Instant::now();
        let event = match next {
            None => {
                return Err(Failure::malformed("the stream ended without `data: [DONE]`"));
            }
            Some(Err(EventStreamError::Transport(BodyError::EventTooLarge))) => {
                return Err(Failure::malformed(BodyError::<E>::EventTooLarge.to_string()));
            }
            Some(Err(EventStreamError::Transport(BodyError::Transport(e)))) => {
                return Err(Failure::new(Outcome::ConnectionError, format!("the stream broke: {}", error_chain(&e))));
            }
            Some(Err(e)) => {
                return Err(Failure::malformed(format!("invalid event stream: {e}")));
            }
            Some(Ok(event)) => event,
        };
        last_event = Some(now);
        if event.data.trim() == "[DONE]" {
            tally.finished_at = Some(now);
            drain(&mut events, clock).await;
            if tally.content_chunks == 0 && !tally.finish_seen {
                return Err(Failure::new(
                    Outcome::Incomplete,
                    "the stream ended with no content and no finish_reason (cut off)",
                ));
            }
            return Ok(());
        }
        let chunk = answer::parse_chunk(&event.data, endpoint)?;
        tally.finish_seen |= chunk.finished;
        if !chunk.text.is_empty() {
            if let Some(stamp) = chunk.stamp {
                tally.on_stamped_token(now - clock.start, stamp);
            }
            tally.on_token(now);
            live_chunks.fetch_add(1, Ordering::Relaxed);
            tally.generated_chars += chunk.text.chars().count();
            if tally.answer.len() < MAX_ANSWER_CHARS {
                tally.answer.push_str(&chunk.answer);
            }
        }
        if chunk.usage.is_some() {
            tally.usage = chunk.usage;
        }
    }
}

/// After `[DONE]`, reads the end of the body so the connection can be reused; anything that
/// goes wrong here no longer matters.
async fn drain<S: Stream + Unpin>(events: &mut S, clock: &Clock<'_>) {
    let since = Instant::now();
    while let Ok(Some(_)) = clock.within(Phase::Idle(since), events.next()).await {}
}

/// Reads a whole body chunk by chunk, each gap bounded by the idle timeout.
async fn read_body(mut response: Answer, limit: usize, clock: &Clock<'_>) -> Result<Bytes, Failure> {
    let too_large = || Failure::malformed(format!("the body is larger than {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut since = Instant::now();
    loop {
        let chunk = clock
            .within(Phase::Idle(since), response.chunk())
            .await?
            .map_err(|e| Failure::new(Outcome::ConnectionError, format!("the body broke off: {}", error_chain(&e))))?;
        let Some(chunk) = chunk else { break };
        since = Instant::now();
        // Most answers arrive in one chunk: keep it without copying.
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&chunk);
            }
        }
        let size = if rest.is_empty() { first.as_ref().map_or(0, Bytes::len) } else { rest.len() };
        if size > limit {
            return Err(too_large());
        }
    }
    Ok(if rest.is_empty() { first.unwrap_or_default() } else { Bytes::from(rest) })
}

fn truncate_chars(mut s: String, max_bytes: usize) -> String {
    if s.len() > max_bytes {
        let mut cut = max_bytes;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Which per-phase timeout bounds the current wait (the total timeout always does too).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Waiting for the response headers and, when streaming, the first content token.
    FirstToken,
    /// Waiting for the next chunk after one that arrived at this instant.
    Idle(Instant),
}

/// `fut`, unless `cancel` fires first.
pub(crate) async fn or_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::select! {
        biased;
        out = fut => out,
        _ = cancel.cancelled() => Err(Failure::cancelled()),
    }
}

/// The deadlines of one request, measured from its start.
pub(crate) struct Clock<'a> {
    pub start: Instant,
    total_deadline: Instant,
    timeouts: &'a Timeouts,
    /// What the first-token phase waits for, in timeout messages.
    awaited: &'static str,
}

impl<'a> Clock<'a> {
    /// A request whose first phase ends with the response headers.
    pub fn start(timeouts: &'a Timeouts) -> Self {
        let start = Instant::now();
        Self { start, total_deadline: start + timeouts.total, timeouts, awaited: "no response" }
    }

    /// A streaming request: its first phase ends with the first content token.
    pub fn start_stream(timeouts: &'a Timeouts) -> Self {
        Self { awaited: "no first token", ..Self::start(timeouts) }
    }

    /// Awaits `fut` unless the phase's deadline or the total deadline comes first.
    pub async fn within<F: Future>(&self, phase: Phase, fut: F) -> Result<F::Output, Failure> {
        let phase_deadline = match phase {
            Phase::FirstToken => self.start + self.timeouts.first_token,
            Phase::Idle(since) => since + self.timeouts.idle,
        };
        let total_first = self.total_deadline <= phase_deadline;
        let deadline = if total_first { self.total_deadline } else { phase_deadline };
        tokio::time::timeout_at(deadline, fut).await.map_err(|_| {
            if total_first {
                self.timeout(Outcome::TimeoutTotal, "the request", self.timeouts.total)
            } else {
                match phase {
                    Phase::FirstToken => {
                        self.timeout(Outcome::TimeoutFirstToken, self.awaited, self.timeouts.first_token)
                    }
                    Phase::Idle(_) => self.timeout(Outcome::TimeoutIdle, "no data between chunks", self.timeouts.idle),
                }
            }
        })
    }

    fn timeout(&self, outcome: Outcome, what: &str, limit: Duration) -> Failure {
        let limit = humantime::format_duration(limit);
        let message = match outcome {
            Outcome::TimeoutTotal => format!("{what} took longer than the total timeout ({limit})"),
            _ => format!("{what} within {limit} ({outcome})"),
        };
        Failure::new(outcome, message)
    }
}

/// `GET /v1/models`: the ids the server serves, in its order.
pub async fn list_models(
    client: &reqwest::Client,
    base_url: &str,
    auth: Option<&HeaderValue>,
    timeouts: &Timeouts,
    cancel: &CancellationToken,
) -> Result<Vec<String>, Failure> {
    #[derive(serde::Deserialize)]
    struct Models {
        data: Vec<ModelEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ModelEntry {
        id: String,
    }
    let clock = Clock::start(timeouts);
    let mut request = client.get(format!("{base_url}/v1/models"));
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth.clone());
    }
    let fetch = async {
        let response = clock.within(Phase::FirstToken, request.send()).await?.map_err(Failure::from_send_error)?;
        let response = Answer::Pooled(response);
        if !response.status().is_success() {
            return Err(error_status(response, &clock).await);
        }
        read_body(response, MAX_BODY_BYTES, &clock).await
    };
    let body = or_cancelled(cancel, fetch).await?;
    let models: Models = serde_json::from_slice(&body)
        .map_err(|e| Failure::malformed(format!("/v1/models did not answer a model list: {e}")))?;
    Ok(models.data.into_iter().map(|m| m.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chunk = Result<Bytes, std::io::Error>;

    fn chunks(parts: &[&str]) -> Vec<Chunk> {
        parts.iter().map(|p| Ok(Bytes::copy_from_slice(p.as_bytes()))).collect()
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(5),
            total: Duration::from_secs(60),
        }
    }

    async fn read(parts: Vec<Chunk>) -> (Result<(), Failure>, Tally) {
        let t = timeouts();
        let clock = Clock::start(&t);
        let mut tally = Tally::default();
        let events = bounded_events(futures::stream::iter(parts)).eventsource();
        let live = AtomicU64::new(0);
        let result = read_events(events, Endpoint::Chat, &clock, &mut tally, &live).await;
        assert_eq!(live.load(Ordering::Relaxed), tally.content_chunks);
        (result, tally)
    }

    fn token(content: &str) -> String {
        format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n")
    }

    #[tokio::test]
    async fn sse_split_anywhere_gives_the_same_answer() {
        let whole = format!(
            "{}{}{}data: {{\"choices\":[],\"usage\":{{\"completion_tokens\":3}}}}\n\ndata: [DONE]\n\n",
            token("Pa"),
            token("r"),
            token("is")
        );
        // Every split point, including inside `data:`, inside JSON and between \n\n.
        for cut in 1..whole.len() {
            let (result, tally) = read(chunks(&[&whole[..cut], &whole[cut..]])).await;
            assert_eq!(result, Ok(()), "cut at {cut}");
            assert_eq!(tally.answer, "Paris", "cut at {cut}");
            assert_eq!(tally.content_chunks, 3);
            assert_eq!(tally.completion_tokens(true), (3, false));
        }
        // One byte per chunk.
        let bytes: Vec<Chunk> = whole.as_bytes().iter().map(|b| Ok(Bytes::copy_from_slice(&[*b]))).collect();
        let (result, tally) = read(bytes).await;
        assert_eq!(result, Ok(()));
        assert_eq!(tally.answer, "Paris");
    }

    #[tokio::test]
    async fn sse_comments_and_crlf_are_handled() {
        let text = ": keep-alive\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"4\"}}]}\r\n\r\n\
                    :another comment\r\n\r\ndata: [DONE]\r\n\r\n";
        for cut in 1..text.len() {
            let (result, tally) = read(chunks(&[&text[..cut], &text[cut..]])).await;
            assert_eq!(result, Ok(()), "cut at {cut}");
            assert_eq!(tally.answer, "4", "cut at {cut}");
            assert_eq!(tally.content_chunks, 1, "cut at {cut}");
            // No usage: counted chunks, flagged as estimated.
            assert_eq!(tally.completion_tokens(true), (1, true));
        }
    }

    #[tokio::test]
    async fn a_stream_without_done_is_malformed() {
        let (result, tally) = read(chunks(&[&token("a"), &token("b")])).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.outcome, Outcome::Malformed);
        assert!(failure.message.contains("[DONE]"));
        // Partial figures stay.
        assert_eq!(tally.content_chunks, 2);
        assert_eq!(tally.itl.len(), 1);
        // A last event without its blank line is not an event (spec), so no [DONE] either.
        let (result, _) = read(chunks(&[&token("a"), "data: [DONE]\n"])).await;
        assert_eq!(result.unwrap_err().outcome, Outcome::Malformed);
    }

    #[tokio::test]
    async fn broken_chunks_and_transport_errors_are_classified() {
        let (result, _) = read(chunks(&["data: {not json}\n\n"])).await;
        assert_eq!(result.unwrap_err().outcome, Outcome::Malformed);

        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let parts = vec![Ok(Bytes::from(token("a"))), Err(reset)];
        let (result, tally) = read(parts).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.outcome, Outcome::ConnectionError);
        assert!(failure.message.contains("connection reset"), "{failure:?}");
        assert_eq!(tally.content_chunks, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_own_timeout() {
        let t = timeouts();
        let never = std::future::pending::<()>;

        let clock = Clock::start(&t);
        let f = clock.within(Phase::FirstToken, never()).await.unwrap_err();
        assert_eq!(f.outcome, Outcome::TimeoutFirstToken);
        assert_eq!(clock.start.elapsed(), t.first_token);

        let clock = Clock::start(&t);
        let f = clock.within(Phase::Idle(Instant::now()), never()).await.unwrap_err();
        assert_eq!(f.outcome, Outcome::TimeoutIdle);
        assert_eq!(clock.start.elapsed(), t.idle);

        // Idle gaps keep being reset, but the total deadline still ends the request.
        let clock = Clock::start(&t);
        let f = loop {
            let since = Instant::now();
            let wait = tokio::time::sleep(Duration::from_secs(4));
            if let Err(f) = clock.within(Phase::Idle(since), wait).await {
                break f;
            }
        };
        assert_eq!(f.outcome, Outcome::TimeoutTotal);
        assert_eq!(clock.start.elapsed(), t.total);
    }

    #[tokio::test]
    async fn cancellation_wins_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let never = std::future::pending::<Result<(), Failure>>();
        let f = or_cancelled(&cancel, never).await.unwrap_err();
        assert_eq!(f.outcome, Outcome::Cancelled);
        // A finished future is not turned into a cancellation.
        let done = async { Ok::<_, Failure>(7) };
        assert_eq!(or_cancelled(&CancellationToken::new(), done).await, Ok(7));
    }

    #[test]
    fn error_chains_drop_urls_and_repeats() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request for url (http://x/v1)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"));
        assert_eq!(error_chain(&e), "error sending request: Connection refused");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(is_json("Application/JSON"));
        assert!(!is_json("text/html"));
        assert!(!is_json(""));
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream("Text/Event-Stream"));
        assert!(!is_event_stream("text/plain"));
    }

    #[tokio::test]
    async fn an_event_that_never_ends_is_malformed_not_an_ever_growing_buffer() {
        let line = format!("data: {}", "x".repeat(64 << 10));
        let parts: Vec<Chunk> =
            std::iter::repeat_n(line.as_str(), 40).map(|l| Ok(Bytes::from(format!("{l}\n")))).collect();
        let (result, _) = read(parts).await;
        let failure = result.expect_err("refused");
        assert_eq!(failure.outcome, Outcome::Malformed, "{failure:?}");
        assert!(failure.message.contains("larger than"), "{failure:?}");

        // As much in many small events is fine.
        let mut parts: Vec<Chunk> = std::iter::repeat_n(token("x"), 40_000).map(|t| Ok(Bytes::from(t))).collect();
        parts.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        let (result, tally) = read(parts).await;
        assert_eq!(result, Ok(()));
        assert_eq!(tally.content_chunks, 40_000);
    }

    #[test]
    fn the_event_budget_resets_on_blank_lines_split_anywhere() {
        let text = b"data: a\r\n\r\ndata: b\n\n";
        for cut in 0..text.len() {
            let mut budget = EventBudget::default();
            assert!(budget.take(&text[..cut]) && budget.take(&text[cut..]));
            assert_eq!((budget.in_event, budget.line_len), (0, 0), "cut at {cut}");
        }
    }

    proptest::proptest! {
        /// Whatever bytes a server streams, in whatever pieces, reading them ends in an outcome:
        /// no panic, and no success without `[DONE]`.
        #[test]
        fn arbitrary_streams_end_in_an_outcome(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut parts: Vec<Chunk> = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                parts.push(Ok(Bytes::copy_from_slice(&body[from..c])));
                from = c;
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
            let (result, _) = runtime.block_on(read(parts));
            let saw_done = String::from_utf8_lossy(&body).contains("[DONE]");
            proptest::prop_assert!(result.is_err() || saw_done);
        }
    }
}
