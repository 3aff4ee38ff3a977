//! Outcome classes: what happened to one request, with stable names for JSON.

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
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 11] = [
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

/// What ended a failed request: its class and a human message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: Outcome,
    pub message: String,
}

impl Failure {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self { outcome, message: message.into() }
    }

    pub fn cancelled() -> Self {
        Self::new(Outcome::Cancelled, "cancelled")
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(Outcome::Malformed, message)
    }

    /// A failure to get a response at all (`send()` failed).
    pub fn from_send_error(err: reqwest::Error) -> Self {
        let outcome = if err.is_connect() && err.is_timeout() {
            Outcome::TimeoutConnect
        } else {
            // Refused, reset, closed before the response: all "the connection failed".
            Outcome::ConnectionError
        };
        Self::new(outcome, error_chain(&err))
    }
}

pub use crate::util::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_classes() {
        let table = [
            (429, Outcome::RateLimited),
            (400, Outcome::ClientError),
            (401, Outcome::ClientError),
            (404, Outcome::ClientError),
            (422, Outcome::ClientError),
            (500, Outcome::ServerError),
            (502, Outcome::ServerError),
            (503, Outcome::ServerError),
            (504, Outcome::ServerError),
            (529, Outcome::ServerError),
            (301, Outcome::Malformed),
            (101, Outcome::Malformed),
            (600, Outcome::Malformed),
        ];
        for (status, class) in table {
            assert_eq!(Outcome::of_status(status), class, "status {status}");
        }
    }

    #[test]
    fn names_are_the_serde_names() {
        for class in Outcome::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.name()));
        }
    }
}
