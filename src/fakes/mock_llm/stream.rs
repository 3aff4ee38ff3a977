//! Streaming answers: OpenAI SSE chunks (`data: {...}\n\n`) ending with `data: [DONE]`, paced
//! by `--tokens-per-s`, with the per-stream faults (stall, drop, malformed chunk) and the
//! client-disconnect count.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::Response;
use serde::Serialize;

use super::server::{Shared, pause};
use super::stats::Stats;
use super::text::Generation;
use super::wire::{ChatChunkChoice, Chunk, Delta, TextChoice, Usage};

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

impl Kind {
    pub fn new_id(self) -> String {
        let prefix = match self {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        format!("{prefix}-{:032x}", fastrand::u128(..))
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }
}

/// One answer, ready to be sent whole or streamed.
#[derive(Debug)]
pub struct Reply {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub generation: Generation,
    pub usage: Usage,
    pub include_usage: bool,
    /// Send one broken chunk (streaming) or a truncated body (non-streaming).
    pub malformed: bool,
    /// `--cut-off-when-busy` struck: no content and no `finish_reason` (streams go from the
    /// role chunk straight to `[DONE]`).
    pub cut_off: bool,
    /// `--stamp-chunks`: when the request arrived (then every chunk also carries its send time).
    pub received_unix_us: Option<u64>,
}

/// The streaming response; the body is produced lazily, so pacing and faults happen on the wire.
pub fn response(shared: Arc<Shared>, reply: Reply) -> Response {
    let guard = StreamGuard { stats: Arc::clone(&shared.stats), end: StreamEnd::Open };
    let state = SseStream { shared, reply, step: Step::Start, sent_tokens: 0, guard };
    let body = futures::stream::unfold(state, |mut state| async move {
        let item = state.next_event().await?;
        Some((item, state))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Latency, then the role chunk (chat only).
    Start,
    Token(usize),
    Finish,
    Usage,
    Done,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Open,
    Finished,
    CutByServer,
}

/// Counts the stream as a client disconnect when the body is dropped before it finished (the
/// server drops a response body when the client goes away).
struct StreamGuard {
    stats: Arc<Stats>,
    end: StreamEnd,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.end == StreamEnd::Open {
            self.stats.client_disconnected();
        }
    }
}

struct SseStream {
    shared: Arc<Shared>,
    reply: Reply,
    step: Step,
    sent_tokens: u32,
    guard: StreamGuard,
}

type Event = Result<Bytes, io::Error>;

impl SseStream {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.step != Step::Start && self.step != Step::End {
                if let Some(cut) = self.fault_point().await {
                    return Some(cut);
                }
                self.shared.wait_if_hung().await;
            }
            match self.step {
                Step::Start => {
                    pause(self.shared.latency).await;
                    self.shared.wait_if_hung().await;
                    self.step = Step::Token(0);
                    if self.reply.kind == Kind::Chat {
                        let delta = Delta { role: Some("assistant"), content: Some("") };
                        return Some(self.chat_chunk(delta, None));
                    }
                }
                Step::Token(index) => {
                    let Some(token) = self.reply.generation.tokens.get(index) else {
                        self.step = Step::Finish;
                        continue;
                    };
                    if index > 0
                        && let Some(gap) = self.shared.token_interval
                    {
                        pause(gap).await;
                    }
                    self.step = Step::Token(index + 1);
                    self.sent_tokens += 1;
                    let token = token.clone();
                    let event = match self.reply.kind {
                        Kind::Chat => self.chat_chunk(Delta { role: None, content: Some(&token) }, None),
                        Kind::Completion => self.text_chunk(&token, None),
                    };
                    if self.reply.malformed && index == 0 {
                        return Some(event.map(|bytes| broken(&bytes)));
                    }
                    return Some(event);
                }
                Step::Finish if self.reply.cut_off => self.step = Step::Done,
                Step::Finish => {
                    self.step = if self.reply.include_usage { Step::Usage } else { Step::Done };
                    let finish = Some(self.reply.generation.finish_reason.as_str());
                    return Some(match self.reply.kind {
                        Kind::Chat => self.chat_chunk(Delta::default(), finish),
                        Kind::Completion => self.text_chunk("", finish),
                    });
                }
                Step::Usage => {
                    self.step = Step::Done;
                    return Some(self.usage_chunk());
                }
                Step::Done => {
                    self.step = Step::End;
                    self.guard.end = StreamEnd::Finished;
                    let usage = self.reply.usage;
                    self.shared.stats.record_tokens(usage.prompt_tokens, usage.completion_tokens);
                    self.shared.stats.stream_completed();
                    return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                }
                Step::End => return None,
            }
        }
    }

    /// `--stream-stall-after-tokens` / `--drop-after-tokens`, checked before every event
    /// after the first `N` content tokens.
    async fn fault_point(&mut self) -> Option<Event> {
        let faults = &self.shared.faults;
        if faults.stall_after_tokens.is_some_and(|n| self.sent_tokens >= n) {
            std::future::pending::<()>().await;
        }
        if faults.drop_after_tokens.is_some_and(|n| self.sent_tokens >= n) {
            self.step = Step::End;
            self.guard.end = StreamEnd::CutByServer;
            // Let what was sent reach the client first: an error before the first flush
            // would abort the response before its headers.
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
            return Some(Err(cut_error()));
        }
        None
    }

    fn chat_chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Event {
        let choices = [ChatChunkChoice { index: 0, delta, logprobs: None, finish_reason }];
        self.encode(&choices)
    }

    fn text_chunk(&self, text: &str, finish_reason: Option<&'static str>) -> Event {
        let choices = [TextChoice { index: 0, text, logprobs: None, finish_reason }];
        self.encode(&choices)
    }

    /// The last chunk when the client asked for usage: no choices, just `usage`.
    fn usage_chunk(&self) -> Event {
        let choices: [TextChoice<'_>; 0] = [];
        sse_event(&Chunk {
            id: &self.reply.id,
            object: self.reply.kind.chunk_object(),
            created: self.reply.created,
            model: &self.shared.model,
            choices: &choices,
            usage: Some(Some(self.reply.usage)),
            received_unix_us: self.reply.received_unix_us,
            sent_unix_us: self.reply.received_unix_us.map(|_| crate::util::unix_micros()),
        })
    }

    fn encode<C: Serialize>(&self, choices: &[C]) -> Event {
        sse_event(&Chunk {
            id: &self.reply.id,
            object: self.reply.kind.chunk_object(),
            created: self.reply.created,
            model: &self.shared.model,
            choices,
            // With include_usage, OpenAI sends `"usage": null` on every other chunk.
            usage: self.reply.include_usage.then_some(None),
            received_unix_us: self.reply.received_unix_us,
            sent_unix_us: self.reply.received_unix_us.map(|_| crate::util::unix_micros()),
        })
    }
}

/// How long a cut-off waits so the bytes already sent are flushed to the client.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(10);

fn cut_error() -> io::Error {
    io::Error::other("mock-llm --drop-after-tokens: closing the connection mid-response")
}

/// A body that sends `first`, then closes the connection without finishing the response.
pub fn cut_off_body(first: Bytes) -> Body {
    enum Cut {
        Send(Bytes),
        Close,
        Closed,
    }
    let parts = futures::stream::unfold(Cut::Send(first), |state| async move {
        match state {
            Cut::Send(bytes) => Some((Ok(bytes), Cut::Close)),
            Cut::Close => {
                tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                Some((Err(cut_error()), Cut::Closed))
            }
            Cut::Closed => None,
        }
    });
    Body::from_stream(parts)
}

/// `data: <json>\n\n`.
fn sse_event<T: Serialize>(value: &T) -> Event {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut buf, value).map_err(io::Error::other)?;
    buf.extend_from_slice(b"\n\n");
    Ok(Bytes::from(buf))
}

/// The same event with its JSON cut in half: still framed as an SSE event.
fn broken(event: &Bytes) -> Bytes {
    let json = event.strip_prefix(b"data: ").and_then(|rest| rest.strip_suffix(b"\n\n")).unwrap_or(event);
    let mut buf = Vec::with_capacity(json.len());
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(&json[..json.len() / 2]);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_events_stay_framed_but_are_not_json() {
        let event = sse_event(&serde_json::json!({"a": "hello", "b": [1, 2, 3]})).unwrap();
        let cut = broken(&event);
        assert!(cut.starts_with(b"data: {"));
        assert!(cut.ends_with(b"\n\n"));
        let json = &cut[6..cut.len() - 2];
        assert!(serde_json::from_slice::<serde_json::Value>(json).is_err());
    }
}
