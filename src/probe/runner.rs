//! A probe run: resolve the model, schedule requests (closed or open loop), collect records into
//! a report, and publish progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::request::{Requester, list_models};
use super::stats::{Aggregator, ProbeProgress, ProbeReport};
use super::{Endpoint, Outcome, ProbeError, ProbeOptions, Prompt, RequestRecord, Stop, prompts};

/// How often progress is published.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Finished records waiting for the collector (requests wait when it is full; it never is for
/// long, the collector only adds numbers).
const RECORD_QUEUE: usize = 1024;

/// Runs a probe to its end (or to cancellation) and reports.
///
/// `progress` receives a snapshot every [`PROGRESS_EVERY`] and a last one with `finished` set.
/// Snapshots are sent with `try_send`: a slow receiver misses some, never slows the probe down
/// (each snapshot is complete, so missing one loses nothing).
///
/// On cancellation, requests in flight are ended at once (their connections closed, so the
/// server sees it), counted as `cancelled`, and the report of what finished is returned with
/// `extra.cancelled` set.
pub async fn run(
    opts: ProbeOptions,
    cancel: CancellationToken,
    progress: Option<mpsc::Sender<ProbeProgress>>,
) -> Result<ProbeReport, ProbeError> {
    validate(&opts)?;
    let base_url = normalise_base_url(&opts.base_url)?;
    let client = build_client(&opts)?;
    let auth = match &opts.api_key {
        Some(key) => Some(bearer(key.expose())?),
        None => None,
    };
    let model = match &opts.model {
        Some(model) => model.clone(),
        None => first_model(&client, &base_url, auth.as_ref(), &opts, &cancel).await?,
    };
    let prompts = if opts.prompts.is_empty() {
        prompts::builtin()
    } else {
        opts.prompts.clone()
    };
    let work: Arc<[Work]> = prompts
        .iter()
        .map(|p| Work {
            body: request_body(&opts, &model, p),
            expected: p.expected.clone(),
        })
        .collect();
    let requester = Arc::new(Requester::new(
        client,
        &base_url,
        auth,
        opts.endpoint,
        opts.stream,
        opts.timeouts,
    ));

    let planned = match opts.stop {
        Stop::Requests(n) => Some(n),
        Stop::Duration(_) => None,
    };
    let (records_tx, records_rx) = mpsc::channel(RECORD_QUEUE);
    let in_flight = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let collector = tokio::spawn(collect(
        records_rx,
        progress,
        planned,
        started,
        in_flight.clone(),
    ));
    let schedule = Schedule {
        opts: &opts,
        started,
        requester,
        work,
        records: records_tx,
        in_flight,
        cancel: cancel.clone(),
    };
    schedule.run().await;
    let (aggregator, last_finished) = match collector.await {
        Ok(done) => done,
        Err(e) => return Err(ProbeError::Client(format!("the collector task failed: {e}"))),
    };
    let mut report = aggregator.report(base_url, model, last_finished - started);
    report.extra.cancelled = cancel.is_cancelled();
    Ok(report)
}

fn validate(opts: &ProbeOptions) -> Result<(), ProbeError> {
    let invalid = |m: &str| Err(ProbeError::Invalid(m.to_owned()));
    match opts.stop {
        Stop::Requests(0) => return invalid("the number of requests must be at least 1"),
        Stop::Duration(d) if d.is_zero() => return invalid("the duration must be positive"),
        _ => {}
    }
    if opts.concurrency == 0 {
        return invalid("the concurrency must be at least 1");
    }
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return invalid("the rate must be a positive number of requests per second");
    }
    if opts.max_tokens == 0 {
        return invalid("max tokens must be at least 1");
    }
    let t = &opts.timeouts;
    if [t.connect, t.first_token, t.idle, t.total]
        .iter()
        .any(|d| d.is_zero())
    {
        return invalid("every timeout must be positive");
    }
    if opts.prompts.iter().any(|p| p.prompt.is_empty()) {
        return invalid("a prompt is empty");
    }
    Ok(())
}

/// `http://host:port`, without a trailing `/` or `/v1` (paths are added per request).
pub fn normalise_base_url(raw: &str) -> Result<String, ProbeError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| ProbeError::Invalid(format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProbeError::Invalid(format!(
            "`{raw}` is not an http(s) URL with a host, e.g. http://127.0.0.1:8000"
        )));
    }
    Ok(trimmed.to_owned())
}

fn build_client(opts: &ProbeOptions) -> Result<reqwest::Client, ProbeError> {
    reqwest::Client::builder()
        .connect_timeout(opts.timeouts.connect)
        .pool_max_idle_per_host(opts.concurrency as usize)
        // A redirect is reported, not followed (a POST would silently become a GET).
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .user_agent(concat!("llmdeck/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProbeError::Client(super::outcome::error_chain(&e)))
}

fn bearer(key: &str) -> Result<HeaderValue, ProbeError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        ProbeError::Invalid("the API key contains characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

async fn first_model(
    client: &reqwest::Client,
    base_url: &str,
    auth: Option<&HeaderValue>,
    opts: &ProbeOptions,
    cancel: &CancellationToken,
) -> Result<String, ProbeError> {
    match list_models(client, base_url, auth, &opts.timeouts, cancel).await {
        Ok(models) => models
            .into_iter()
            .next()
            .ok_or_else(|| ProbeError::NoModels(base_url.to_owned())),
        Err(f) if f.outcome == Outcome::Cancelled => Err(ProbeError::Cancelled),
        Err(f) => Err(ProbeError::Models {
            url: format!("{base_url}/v1/models"),
            outcome: f.outcome,
            message: f.message,
        }),
    }
}

/// The JSON body for one prompt, built once per prompt and shared by every request.
fn request_body(opts: &ProbeOptions, model: &str, prompt: &Prompt) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": opts.max_tokens,
        "temperature": 0,
        "stream": opts.stream,
    });
    match opts.endpoint {
        Endpoint::Chat => {
            body["messages"] = serde_json::json!([{"role": "user", "content": prompt.prompt}]);
        }
        Endpoint::Completions => body["prompt"] = serde_json::json!(prompt.prompt),
    }
    if opts.stream {
        // Ask for exact token counts in the last chunk (vLLM, SGLang, llama.cpp, OpenAI).
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

struct Work {
    body: Bytes,
    expected: Option<String>,
}

struct Schedule<'a> {
    opts: &'a ProbeOptions,
    started: Instant,
    requester: Arc<Requester>,
    work: Arc<[Work]>,
    records: mpsc::Sender<RequestRecord>,
    in_flight: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Schedule<'_> {
    /// Starts requests until the stop condition or cancellation, then waits for all of them.
    async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.opts.concurrency as usize));
        let limit = match self.opts.stop {
            Stop::Requests(n) => Some(n),
            Stop::Duration(_) => None,
        };
        let end = match self.opts.stop {
            Stop::Duration(d) => Some(self.started + d),
            Stop::Requests(_) => None,
        };
        let mut tasks = JoinSet::new();
        let mut sent: u64 = 0;
        while limit.is_none_or(|n| sent < n) {
            if let Some(rate) = self.opts.rate {
                let at = self.started + Duration::from_secs_f64(sent as f64 / rate);
                if end.is_some_and(|e| at >= e) {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break, // never closed
                },
            };
            if end.is_some_and(|e| Instant::now() >= e) {
                break;
            }
            let work = &self.work[(sent % self.work.len() as u64) as usize];
            let (body, expected) = (work.body.clone(), work.expected.clone());
            let requester = self.requester.clone();
            let records = self.records.clone();
            let in_flight = self.in_flight.clone();
            let cancel = self.cancel.clone();
            in_flight.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let record = requester.execute(body, expected.as_deref(), &cancel).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // The collector outlives every sender.
                let _ = records.send(record).await;
                drop(permit);
            });
            sent += 1;
            reap(&mut tasks);
        }
        while let Some(joined) = tasks.join_next().await {
            report_panic(joined);
        }
    }
}

fn reap(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.try_join_next() {
        report_panic(joined);
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        // `execute` classifies everything; a panic is a bug, so it is logged loudly.
        tracing::error!("a probe request task failed: {e}");
    }
}

/// Folds records as they arrive and publishes progress; returns the aggregate and the time the
/// last record arrived.
async fn collect(
    mut records: mpsc::Receiver<RequestRecord>,
    progress: Option<mpsc::Sender<ProbeProgress>>,
    planned: Option<u64>,
    started: Instant,
    in_flight: Arc<AtomicU64>,
) -> (Aggregator, Instant) {
    let mut aggregator = Aggregator::default();
    let mut last = started;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let snapshot = |agg: &Aggregator| {
        agg.progress(
            started.elapsed(),
            planned,
            in_flight.load(Ordering::Relaxed),
        )
    };
    loop {
        tokio::select! {
            record = records.recv() => match record {
                Some(record) => {
                    aggregator.add(&record);
                    last = Instant::now();
                }
                None => break,
            },
            _ = tick.tick(), if progress.is_some() => {
                if let Some(tx) = &progress {
                    let _ = tx.try_send(snapshot(&aggregator));
                }
            }
        }
    }
    if let Some(tx) = &progress {
        let mut last_progress = aggregator.progress(last - started, planned, 0);
        last_progress.finished = true;
        // The last snapshot is worth a short wait; the report is returned regardless.
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(last_progress)).await;
    }
    (aggregator, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        for raw in [
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "http://127.0.0.1:8000/v1",
            " http://127.0.0.1:8000/v1/ ",
        ] {
            assert_eq!(normalise_base_url(raw).unwrap(), "http://127.0.0.1:8000");
        }
        assert_eq!(
            normalise_base_url("https://x.example/llm").unwrap(),
            "https://x.example/llm"
        );
        assert!(normalise_base_url("127.0.0.1:8000").is_err());
        assert!(normalise_base_url("ftp://x").is_err());
    }

    #[test]
    fn request_bodies_follow_endpoint_and_streaming() {
        let mut opts = ProbeOptions::new("http://x");
        opts.stream = true;
        let p = Prompt::new("2+2?", Some("4"));
        let chat: serde_json::Value =
            serde_json::from_slice(&request_body(&opts, "m", &p)).unwrap();
        assert_eq!(chat["messages"][0]["content"], "2+2?");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["model"], "m");

        opts.stream = false;
        opts.endpoint = Endpoint::Completions;
        let completion: serde_json::Value =
            serde_json::from_slice(&request_body(&opts, "m", &p)).unwrap();
        assert_eq!(completion["prompt"], "2+2?");
        assert!(completion.get("messages").is_none());
        assert!(completion.get("stream_options").is_none());
    }

    #[test]
    fn nonsense_options_are_refused() {
        let ok = ProbeOptions::new("http://x");
        assert_eq!(validate(&ok), Ok(()));
        let mut o = ok.clone();
        o.concurrency = 0;
        assert!(validate(&o).is_err());
        let mut o = ok.clone();
        o.stop = Stop::Requests(0);
        assert!(validate(&o).is_err());
        let mut o = ok.clone();
        o.rate = Some(f64::NAN);
        assert!(validate(&o).is_err());
        let mut o = ok;
        o.timeouts.idle = Duration::ZERO;
        assert!(validate(&o).is_err());
    }

    #[test]
    fn api_keys_never_show_in_debug() {
        let mut opts = ProbeOptions::new("http://x");
        opts.api_key = Some(super::super::ApiKey::new("sk-secret"));
        assert!(!format!("{opts:?}").contains("sk-secret"));
    }
}
