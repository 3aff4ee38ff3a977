//! The probe's figures as every view sees them: outcome classes, percentiles, live progress and
//! the report (the `llmdeck probe --json` shape, also kept in run reports).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What happened to one request. Classified by what happened on the wire first (a dropped
/// connection, a broken body, a stall), then by HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Success,
    /// HTTP 429.
    RateLimited,
    /// Any other 4xx.
    ClientError,
    /// 5xx (529 "overloaded" included), or an error object sent inside a 200 stream.
    ServerError,
    /// No TCP connection within the connect timeout.
    TimeoutConnect,
    /// Connected, but no response headers (non-streaming) or no first content token (streaming)
    /// within the first-token timeout.
    TimeoutFirstToken,
    /// The answer had started but the gap between two chunks exceeded the idle timeout.
    TimeoutIdle,
    /// The whole request exceeded the total timeout.
    TimeoutTotal,
    /// Refused, reset, or closed mid-answer.
    ConnectionError,
    /// A 2xx whose body is not a valid answer: invalid JSON, missing fields, wrong content type,
    /// a stream that ends without `[DONE]`, an unexpected status such as a redirect.
    Malformed,
    /// Cancelled by the caller while in flight; partial figures are kept.
    Cancelled,
    /// A 2xx that carried no answer: a stream with no content and no `finish_reason` (the
    /// role chunk, then `[DONE]`), or a JSON answer with no content and no tool calls. Real
    /// servers cut answers off this way under load; it is not a success.
    Incomplete,
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 12] = [
        Outcome::Success,
        Outcome::RateLimited,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::TimeoutConnect,
        Outcome::TimeoutFirstToken,
        Outcome::TimeoutIdle,
        Outcome::TimeoutTotal,
        Outcome::ConnectionError,
        Outcome::Malformed,
        Outcome::Incomplete,
        Outcome::Cancelled,
    ];

    /// The stable name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited => "rate_limited",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::TimeoutConnect => "timeout_connect",
            Outcome::TimeoutFirstToken => "timeout_first_token",
            Outcome::TimeoutIdle => "timeout_idle",
            Outcome::TimeoutTotal => "timeout_total",
            Outcome::ConnectionError => "connection_error",
            Outcome::Malformed => "malformed",
            Outcome::Cancelled => "cancelled",
            Outcome::Incomplete => "incomplete",
        }
    }

    /// The class of a response that arrived with this status and is not a success.
    /// 2xx is never passed here: a 2xx is judged by its body.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            429 => Outcome::RateLimited,
            400..=499 => Outcome::ClientError,
            500..=599 => Outcome::ServerError,
            // 1xx/3xx (redirects are not followed) and nonsense codes: not an answer at all.
            _ => Outcome::Malformed,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// p50/p90/p95/p99/max in milliseconds; every field is `null` when there were no samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// From samples in microseconds (sorted here).
    pub fn of_micros(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let ms = |p: f64| nearest_rank(samples, p).map(|us| f64::from(us) / 1000.0);
        Self { p50: ms(50.0), p90: ms(90.0), p95: ms(95.0), p99: ms(99.0), max: ms(100.0) }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample such that at least `p`%
/// of all samples are less than or equal to it, i.e. `sorted[ceil(p/100 · n) − 1]`.
/// `p = 0` gives the minimum; `None` when there are no samples.
pub fn nearest_rank(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// How a report's percentiles were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PercentileMethod {
    #[default]
    Exact,
    Hdr,
}

/// The result of a probe run. Serialises to exactly the documented `--json` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The server root probed.
    pub target: String,
    pub model: String,
    /// Requests that finished, whatever their outcome (cancelled ones included).
    pub requests: u64,
    /// Wall time from the first request sent to the last one finished.
    pub duration_s: f64,
    /// Every class, zero counts included.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Percentiles over successful requests only.
    pub latency_ms: Percentiles,
    /// Streaming only (`null`s otherwise): time from sending to the first content token.
    pub ttft_ms: Percentiles,
    /// Streaming only: gaps between consecutive content chunks.
    pub itl_ms: Percentiles,
    /// `requests / duration_s`.
    pub requests_per_s: f64,
    /// Completion tokens of successful requests per second of the run.
    pub output_tokens_per_s: f64,
    /// Share of successful answers to prompts with an expected answer that contained it;
    /// `null` when no such prompt succeeded.
    pub expected_answer_rate: Option<f64>,
    /// The first few distinct messages per failing class (classes without any are left out).
    pub errors: BTreeMap<Outcome, Vec<String>>,
    /// How the percentiles were computed: `exact` (every sample kept), or `hdr` (past a
    /// bound on kept samples: an HDR histogram, 3 significant digits, within 0.1%).
    #[serde(default)]
    pub percentiles: PercentileMethod,
    /// Only against a server that stamps its chunks (`mock-llm --stamp-chunks`): what the client
    /// itself adds to the streaming figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_delay: Option<ClientDelay>,
    /// Figures beyond the documented JSON shape, for tables and callers.
    #[serde(skip)]
    pub extra: ReportExtra,
}

/// The delay the client adds, measured against the server's own stamps (receipt of the
/// request, send time of each chunk; one clock, as both run on one machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientDelay {
    /// Measured TTFT minus the server's (first chunk sent − request received).
    pub ttft_error_ms: Percentiles,
    /// |measured gap − the server's gap| between consecutive content chunks.
    pub itl_error_ms: Percentiles,
    /// Each content chunk: read by the client − sent by the server.
    pub delivery_ms: Percentiles,
}

/// Report figures that are not part of the `--json` shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportExtra {
    /// The run was cancelled before it finished its planned load.
    pub cancelled: bool,
    /// Completion tokens of successful requests.
    pub output_tokens: u64,
    /// Some of those were counted from chunks or estimated from text, not taken from `usage`.
    pub output_tokens_estimated: bool,
    /// Prompt tokens of successful requests that reported `usage`.
    pub prompt_tokens: u64,
    /// Successful requests that had an expected answer, and how many matched.
    pub answers_checked: u64,
    pub answers_matched: u64,
}

impl ProbeReport {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// Every request finished as `success` (and there was at least one).
    pub fn all_succeeded(&self) -> bool {
        self.requests > 0 && self.count(Outcome::Success) == self.requests
    }
}

/// Live figures during a run, sent a few times a second and once at the end.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProbeProgress {
    pub elapsed_ms: u64,
    /// Requests finished so far, whatever their outcome.
    pub done: u64,
    /// The planned number of requests (`None` for a run bounded by duration).
    pub planned: Option<u64>,
    pub in_flight: u64,
    /// Only classes seen so far.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Median time to first token of successful streaming requests so far.
    pub ttft_p50_ms: Option<f64>,
    pub requests_per_s: f64,
    /// While streaming: content chunks received so far (about one token each) per second,
    /// counted as they arrive. Otherwise, and in the last message: completion tokens of
    /// successful requests per second, as in the report.
    pub output_tokens_per_s: f64,
    /// The run has ended (this is the last progress message).
    pub finished: bool,
}
