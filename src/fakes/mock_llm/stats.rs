//! Request counters for `GET /mock/stats`: atomics only, so counting never serialises requests.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use serde_json::{Map, Value, json};

/// The endpoints counted separately; anything else is `other`.
pub const ENDPOINTS: [&str; 5] = ["/health", "/v1/models", "/v1/chat/completions", "/v1/completions", "other"];

/// HTTP statuses are 100..=999; one counter slot per status and endpoint.
const STATUS_SLOTS: usize = 1000;

#[derive(Debug)]
pub struct Stats {
    requests: AtomicU64,
    in_flight: AtomicU64,
    completed_streams: AtomicU64,
    client_disconnects: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// `ENDPOINTS.len() × STATUS_SLOTS` counters.
    by_status: Box<[AtomicU64]>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            completed_streams: AtomicU64::new(0),
            client_disconnects: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            by_status: (0..ENDPOINTS.len() * STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Index into [`ENDPOINTS`] for a request path.
pub fn endpoint_index(path: &str) -> usize {
    ENDPOINTS.iter().position(|e| *e == path).unwrap_or(ENDPOINTS.len() - 1)
}

impl Stats {
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stats: Arc::clone(self) }
    }

    pub fn record_status(&self, endpoint: usize, status: u16) {
        let slot = endpoint * STATUS_SLOTS + usize::from(status).min(STATUS_SLOTS - 1);
        if let Some(counter) = self.by_status.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens.fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.completion_tokens.fetch_add(u64::from(completion), Ordering::Relaxed);
    }

    pub fn stream_completed(&self) {
        self.completed_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn client_disconnected(&self) {
        self.client_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// (prompt tokens, completion tokens) served so far.
    pub fn tokens(&self) -> (u64, u64) {
        (self.prompt_tokens.load(Ordering::Relaxed), self.completion_tokens.load(Ordering::Relaxed))
    }

    /// The `/mock/stats` document.
    pub fn snapshot(&self, hung: bool) -> Value {
        let mut by_status: Map<String, Value> = Map::new();
        let mut by_endpoint: Map<String, Value> = Map::new();
        for (index, name) in ENDPOINTS.iter().enumerate() {
            let mut statuses: Map<String, Value> = Map::new();
            let slots = &self.by_status[index * STATUS_SLOTS..(index + 1) * STATUS_SLOTS];
            for (status, counter) in slots.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                statuses.insert(status.to_string(), json!(count));
                let total = by_status.get(&status.to_string()).and_then(Value::as_u64).unwrap_or(0);
                by_status.insert(status.to_string(), json!(total + count));
            }
            if !statuses.is_empty() {
                by_endpoint.insert((*name).to_owned(), Value::Object(statuses));
            }
        }
        let (prompt_tokens, completion_tokens) = self.tokens();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "by_status": by_status,
            "in_flight": self.in_flight(),
            "completed_streams": self.completed_streams.load(Ordering::Relaxed),
            "client_disconnects": self.client_disconnects.load(Ordering::Relaxed),
            "by_endpoint": by_endpoint,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "hung": hung,
        })
    }
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until the body is finished or dropped,
/// so streaming responses count until their last byte.
pub struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub fn wrap(inner: Body, in_flight: InFlight) -> Body {
        Body::new(Self { inner, _in_flight: in_flight })
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_statuses_over_endpoints() {
        let stats = Arc::new(Stats::default());
        let guard = stats.request_started();
        stats.record_status(endpoint_index("/health"), 200);
        stats.record_status(endpoint_index("/v1/completions"), 200);
        stats.record_status(endpoint_index("/v1/completions"), 429);
        stats.record_status(endpoint_index("/nope"), 404);
        let snap = stats.snapshot(false);
        assert_eq!(snap["by_status"], json!({"200": 2, "429": 1, "404": 1}));
        assert_eq!(snap["by_endpoint"]["other"], json!({"404": 1}));
        assert_eq!(snap["in_flight"], 1);
        drop(guard);
        assert_eq!(stats.snapshot(false)["in_flight"], 0);
        assert_eq!(stats.snapshot(false)["requests"], 1);
    }
}
