//! The probe: smoke tests and benchmarks of OpenAI-compatible endpoints.
//!
//! A library first: [`run`] takes [`ProbeOptions`], a cancellation token and an optional
//! progress channel, and returns a [`ProbeReport`]. `llmdeck probe`, the Tests pane and the
//! deployment runner all call it.
//!
//! Every request ends in exactly one [`Outcome`], classified by what happened on the wire first,
//! then by status. Each request carries its own deadlines (connect, first token, idle gap,
//! total), so no request's timeout is stretched by another's.

pub mod answer;
mod direct;
pub mod outcome;
pub mod prompts;
pub mod request;
mod runner;
pub mod stats;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use outcome::{Failure, Outcome};
pub use prompts::Prompt;
pub use request::RequestRecord;
pub use runner::{normalise_base_url, run};
pub use stats::{Percentiles, ProbeProgress, ProbeReport, ReportExtra};

/// Which OpenAI API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    #[default]
    Chat,
    /// `POST /v1/completions`
    Completions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// Per-request timeouts; each is honoured on its own for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// Sending to the response headers, and when streaming to the first content token.
    pub first_token: Duration,
    /// The longest gap between two chunks once the answer has started.
    pub idle: Duration,
    /// The whole request.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// When the run stops sending new requests. Requests in flight at that point finish (within
/// their own timeouts) and are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// A bearer key. Never printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Everything one probe run needs.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The server root (`http://host:port`); a trailing `/v1` is tolerated.
    pub base_url: String,
    /// `None`: the first model `/v1/models` lists.
    pub model: Option<String>,
    pub api_key: Option<ApiKey>,
    pub endpoint: Endpoint,
    pub stream: bool,
    pub max_tokens: u32,
    pub timeouts: Timeouts,
    pub stop: Stop,
    /// The most requests in flight at once (closed loop: exactly this many, back to back).
    pub concurrency: u32,
    /// Open loop: start requests at this rate (req/s) on a fixed schedule, still capped by
    /// `concurrency`; when the cap is reached the schedule slips rather than overlapping more.
    pub rate: Option<f64>,
    /// Used round-robin; empty means the built-in smoke set ([`prompts::builtin`]).
    pub prompts: Vec<Prompt>,
}

impl ProbeOptions {
    /// A smoke run with the defaults of the `probe:` config section.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::from_config(base_url, None, &crate::config::ProbeConfig::default())
    }

    /// Options from a test's `probe:` config section.
    pub fn from_config(
        base_url: impl Into<String>,
        model: Option<String>,
        config: &crate::config::ProbeConfig,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            model,
            api_key: None,
            endpoint: Endpoint::Chat,
            stream: config.stream,
            max_tokens: config.max_tokens,
            timeouts: Timeouts::default(),
            stop: Stop::Requests(u64::from(config.requests)),
            concurrency: config.concurrency,
            rate: None,
            prompts: Vec::new(),
        }
    }
}

/// Why a run could not take place at all (individual request failures are outcomes, not this).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid probe options: {0}")]
    Invalid(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("could not list the models at {url} ({outcome}): {message}")]
    Models { url: String, outcome: Outcome, message: String },
    #[error("{0}/v1/models lists no model; pass one with --model")]
    NoModels(String),
    #[error("cancelled before the first request")]
    Cancelled,
}
