//! A probe run: resolve the model, then send requests from a few dedicated threads ("lanes"),
//! each with its own single-threaded tokio runtime and HTTP client, like wrk's threads. Keeping a
//! request, its connection and its timers on one thread avoids cross-thread wake-ups (the
//! per-request overhead stays low), and a heavy benchmark never competes with the caller's
//! runtime (the TUI, the daemon). Results are folded under a short lock; progress is published
//! from the caller's runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::request::{Requester, list_models};
use super::stats::{Aggregator, ProbeProgress, ProbeReport};
use super::{Endpoint, Outcome, ProbeError, ProbeOptions, Prompt, RequestRecord, Stop, prompts};

/// How often progress is published.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// At most this many sending threads, whatever the machine (a probe is rarely CPU-bound).
const MAX_LANES: usize = 4;

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
    let auth = match &opts.api_key {
        Some(key) => Some(bearer(key.expose())?),
        None => None,
    };
    let model = match &opts.model {
        Some(model) => model.clone(),
        None => {
            let client = build_client(&opts)?;
            first_model(&client, &base_url, auth.as_ref(), &opts, &cancel).await?
        }
    };
    let prompts = if opts.prompts.is_empty() { prompts::builtin() } else { opts.prompts.clone() };
    let work: Arc<[Work]> = prompts
        .iter()
        .map(|p| Work {
            body: request_body(&opts, &model, p),
            expected: p.expected.as_deref().map(prompts::Expected::new),
        })
        .collect();
    let url = reqwest::Url::parse(&format!("{base_url}{}", opts.endpoint.path()))
        .map_err(|e| ProbeError::Invalid(format!("`{base_url}`: {e}")))?;

    // Everything that can fail is prepared before the first request goes out.
    let streamed_chunks = Arc::new(AtomicU64::new(0));
    let lanes = lane_shares(opts.concurrency as usize, lane_count(opts.concurrency as usize))
        .into_iter()
        .map(|concurrency| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ProbeError::Client(format!("starting a probe runtime: {e}")))?;
            let requester = Requester::new(
                build_client(&opts)?,
                url.clone(),
                auth.clone(),
                opts.endpoint,
                opts.stream,
                opts.timeouts,
            )
            .with_live_chunks(streamed_chunks.clone())
            .with_direct_connections(concurrency);
            Ok((runtime, requester, concurrency))
        })
        .collect::<Result<Vec<_>, ProbeError>>()?;

    let run_cancel = cancel.child_token();
    // The lanes are threads: if this future is dropped mid-run, they must stop too.
    let _stop_lanes_on_drop = run_cancel.clone().drop_guard();
    let plan = Arc::new(Plan::new(&opts, Instant::now()));
    let shared = Arc::new(Shared::new(plan.started).with_streamed_chunks(streamed_chunks));
    let mut finished = Vec::with_capacity(lanes.len());
    for (index, (runtime, requester, concurrency)) in lanes.into_iter().enumerate() {
        let lane = Lane {
            requester,
            concurrency,
            plan: plan.clone(),
            work: work.clone(),
            shared: shared.clone(),
            cancel: run_cancel.child_token(),
        };
        match spawn_lane(index, runtime, lane) {
            Ok(done) => finished.push(done),
            Err(e) => {
                // Stop the lanes already sending, then report why the run could not start.
                run_cancel.cancel();
                futures::future::join_all(finished).await;
                return Err(e);
            }
        }
    }
    publish_until_done(finished, &shared, &plan, progress.as_ref()).await;

    let (aggregator, last_finished) = shared.take();
    let mut report = aggregator.report(base_url, model, last_finished - plan.started);
    report.extra.cancelled = cancel.is_cancelled();
    Ok(report)
}

/// How many sending threads: one per core, at most [`MAX_LANES`], never more than requests
/// in flight.
fn lane_count(concurrency: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(MAX_LANES).min(concurrency).max(1)
}

/// Splits `concurrency` over `lanes` as evenly as possible.
fn lane_shares(concurrency: usize, lanes: usize) -> Vec<usize> {
    (0..lanes).map(|k| concurrency / lanes + usize::from(k < concurrency % lanes)).collect()
}

fn spawn_lane(index: usize, runtime: tokio::runtime::Runtime, lane: Lane) -> Result<oneshot::Receiver<()>, ProbeError> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("llmdeck-probe-{index}"))
        .spawn(move || {
            runtime.block_on(lane.run());
            // Dropping the runtime closes the lane's pooled connections.
            drop(runtime);
            let _ = done_tx.send(());
        })
        .map_err(|e| ProbeError::Client(format!("starting a probe thread: {e}")))?;
    Ok(done_rx)
}

/// Publishes progress every [`PROGRESS_EVERY`] until every lane has finished, then once more
/// with `finished` set.
async fn publish_until_done(
    finished: Vec<oneshot::Receiver<()>>,
    shared: &Shared,
    plan: &Plan,
    progress: Option<&mpsc::Sender<ProbeProgress>>,
) {
    let all_done = futures::future::join_all(finished);
    tokio::pin!(all_done);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            results = &mut all_done => {
                if results.iter().any(Result::is_err) {
                    // `execute` classifies everything; a panic is a bug, so it is logged loudly.
                    tracing::error!("a probe thread ended abnormally; its requests in flight are lost");
                }
                break;
            }
            _ = tick.tick(), if progress.is_some() => {
                if let Some(tx) = progress {
                    let _ = tx.try_send(shared.progress(plan, false));
                }
            }
        }
    }
    if let Some(tx) = progress {
        // The last snapshot is worth a short wait; the report is returned regardless.
        let last = shared.progress(plan, true);
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(last)).await;
    }
}

/// The most requests in flight at once (as `probe.concurrency` in the configuration).
pub const MAX_CONCURRENCY: u32 = 1024;
/// The open loop's bounds in requests per second: slower is one request per 17 minutes,
/// faster no client here keeps up with.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;

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
    if opts.concurrency > MAX_CONCURRENCY {
        return invalid(&format!("the concurrency must be at most {MAX_CONCURRENCY}"));
    }
    if opts.rate.is_some_and(|r| !(MIN_RATE..=MAX_RATE).contains(&r)) {
        return invalid(&format!("the rate must be between {MIN_RATE} and {MAX_RATE} requests per second"));
    }
    if opts.max_tokens == 0 {
        return invalid("max tokens must be at least 1");
    }
    let t = &opts.timeouts;
    if [t.connect, t.first_token, t.idle, t.total].iter().any(|d| d.is_zero()) {
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
    let url = reqwest::Url::parse(trimmed).map_err(|e| ProbeError::Invalid(format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProbeError::Invalid(format!(
            "`{raw}` is not an http(s) URL with a host, e.g. http://127.0.0.1:8000"
        )));
    }
    Ok(trimmed.to_owned())
}

fn build_client(opts: &ProbeOptions) -> Result<reqwest::Client, ProbeError> {
    let mut builder = reqwest::Client::builder();
    // A bearer key for a local model must never travel to a proxy; others honour
    // HTTP(S)_PROXY and NO_PROXY.
    if crate::util::is_loopback_url(&opts.base_url) {
        builder = builder.no_proxy();
    }
    builder
        .connect_timeout(opts.timeouts.connect)
        .pool_max_idle_per_host(opts.concurrency as usize)
        // A redirect is reported, not followed (a POST would silently become a GET).
        .redirect(reqwest::redirect::Policy::none())
        // Every request is sent once and counted once.
        .retry(reqwest::retry::never())
        .tcp_nodelay(true)
        .user_agent(concat!("llmdeck/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProbeError::Client(super::outcome::error_chain(&e)))
}

fn bearer(key: &str) -> Result<HeaderValue, ProbeError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| ProbeError::Invalid("the API key contains characters not allowed in a header".into()))?;
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
        Ok(models) => models.into_iter().next().ok_or_else(|| ProbeError::NoModels(base_url.to_owned())),
        Err(f) if f.outcome == Outcome::Cancelled => Err(ProbeError::Cancelled),
        Err(f) => {
            Err(ProbeError::Models { url: format!("{base_url}/v1/models"), outcome: f.outcome, message: f.message })
        }
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
    expected: Option<prompts::Expected>,
}

/// The load shape, shared by every lane.
struct Plan {
    started: Instant,
    /// Stop after this many requests.
    limit: Option<u64>,
    /// Start no request after this instant.
    end: Option<Instant>,
    /// Open loop: request `i` starts at `started + i / rate`.
    rate: Option<f64>,
    stream: bool,
}

impl Plan {
    fn new(opts: &ProbeOptions, started: Instant) -> Self {
        let (limit, end) = match opts.stop {
            Stop::Requests(n) => (Some(n), None),
            Stop::Duration(d) => (None, Some(started + d)),
        };
        Self { started, limit, end, rate: opts.rate, stream: opts.stream }
    }

    fn planned(&self) -> Option<u64> {
        self.limit
    }

    fn past_end(&self, at: Instant) -> bool {
        self.end.is_some_and(|end| at >= end)
    }
}

/// What the lanes share: the request counter and the results.
struct Shared {
    /// Sequence numbers handed out so far (may run past the limit: those are not sent).
    next: AtomicU64,
    in_flight: AtomicU64,
    /// Content chunks streamed so far, counted as they arrive (live tokens/s).
    streamed_chunks: Arc<AtomicU64>,
    results: Mutex<Results>,
}

struct Results {
    aggregator: Aggregator,
    last_finished: Instant,
}

impl Shared {
    fn new(started: Instant) -> Self {
        Self {
            next: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            streamed_chunks: Arc::default(),
            results: Mutex::new(Results { aggregator: Aggregator::default(), last_finished: started }),
        }
    }

    fn with_streamed_chunks(mut self, counter: Arc<AtomicU64>) -> Self {
        self.streamed_chunks = counter;
        self
    }

    /// The next request's sequence number, unless the planned count is reached.
    fn claim(&self, plan: &Plan) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        plan.limit.is_none_or(|n| i < n).then_some(i)
    }

    fn results(&self) -> MutexGuard<'_, Results> {
        // A panic while holding the lock cannot leave the numbers half-updated in a way that
        // matters more than losing them; keep going.
        self.results.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn finish(&self, record: &RequestRecord) {
        let now = Instant::now();
        let mut results = self.results();
        results.aggregator.add(record);
        results.last_finished = results.last_finished.max(now);
    }

    fn progress(&self, plan: &Plan, finished: bool) -> ProbeProgress {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let results = self.results();
        let elapsed = if finished { results.last_finished - plan.started } else { plan.started.elapsed() };
        let mut progress = results.aggregator.progress(elapsed, plan.planned(), in_flight);
        progress.finished = finished;
        if plan.stream && !finished {
            // While streaming, tokens flow long before requests finish: count them as they come.
            let secs = elapsed.as_secs_f64();
            let chunks = self.streamed_chunks.load(Ordering::Relaxed);
            progress.output_tokens_per_s = if secs > 0.0 { chunks as f64 / secs } else { 0.0 };
        }
        progress
    }

    fn take(&self) -> (Aggregator, Instant) {
        let mut results = self.results();
        (std::mem::take(&mut results.aggregator), results.last_finished)
    }
}

/// One sending thread's share of the run.
struct Lane {
    requester: Requester,
    /// Requests this lane keeps in flight.
    concurrency: usize,
    plan: Arc<Plan>,
    work: Arc<[Work]>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Lane {
    async fn run(self) {
        let lane = Arc::new(self);
        let mut tasks = JoinSet::new();
        match lane.plan.rate {
            None => {
                for _ in 0..lane.concurrency {
                    tasks.spawn(lane.clone().closed_loop());
                }
            }
            Some(rate) => lane.clone().open_loop(rate, &mut tasks).await,
        }
        while let Some(joined) = tasks.join_next().await {
            report_panic(joined);
        }
    }

    /// One of `concurrency` workers sending back to back.
    async fn closed_loop(self: Arc<Self>) {
        while !self.cancel.is_cancelled() && !self.plan.past_end(Instant::now()) {
            let Some(i) = self.shared.claim(&self.plan) else {
                break;
            };
            self.send(i).await;
        }
    }

    /// Starts requests on the shared schedule; when this lane's share of the concurrency is
    /// in use, the schedule slips rather than putting more requests in flight.
    async fn open_loop(self: Arc<Self>, rate: f64, tasks: &mut JoinSet<()>) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        while let Some(i) = self.shared.claim(&self.plan) {
            let at = self.plan.started + Duration::from_secs_f64(i as f64 / rate);
            if self.plan.past_end(at) {
                break;
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(at) => {}
            }
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            let lane = self.clone();
            tasks.spawn(async move {
                lane.send(i).await;
                drop(permit);
            });
            while let Some(joined) = tasks.try_join_next() {
                report_panic(joined);
            }
        }
    }

    async fn send(&self, i: u64) {
        let work = &self.work[(i % self.work.len() as u64) as usize];
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let record = self.requester.execute(work.body.clone(), work.expected.as_ref(), &self.cancel).await;
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared.finish(&record);
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        // `execute` classifies everything; a panic is a bug, so it is logged loudly.
        tracing::error!("a probe request task failed: {e}");
    }
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
        assert_eq!(normalise_base_url("https://x.example/llm").unwrap(), "https://x.example/llm");
        assert!(normalise_base_url("127.0.0.1:8000").is_err());
        assert!(normalise_base_url("ftp://x").is_err());
    }

    #[test]
    fn request_bodies_follow_endpoint_and_streaming() {
        let mut opts = ProbeOptions::new("http://x");
        opts.stream = true;
        let p = Prompt::new("2+2?", Some("4"));
        let chat: serde_json::Value = serde_json::from_slice(&request_body(&opts, "m", &p)).unwrap();
        assert_eq!(chat["messages"][0]["content"], "2+2?");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["model"], "m");

        opts.stream = false;
        opts.endpoint = Endpoint::Completions;
        let completion: serde_json::Value = serde_json::from_slice(&request_body(&opts, "m", &p)).unwrap();
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
    fn concurrency_is_split_evenly_over_lanes() {
        assert_eq!(lane_shares(32, 2), [16, 16]);
        assert_eq!(lane_shares(5, 2), [3, 2]);
        assert_eq!(lane_shares(7, 4), [2, 2, 2, 1]);
        assert_eq!(lane_shares(1, 1), [1]);
        assert_eq!(lane_count(1), 1);
        assert!(lane_count(64) <= MAX_LANES);
    }

    #[test]
    fn claims_stop_at_the_planned_count() {
        let opts = ProbeOptions { stop: Stop::Requests(3), ..ProbeOptions::new("http://x") };
        let plan = Plan::new(&opts, Instant::now());
        let shared = Shared::new(plan.started);
        let claimed: Vec<_> = (0..5).map(|_| shared.claim(&plan)).collect();
        assert_eq!(claimed, [Some(0), Some(1), Some(2), None, None]);
    }

    #[test]
    fn api_keys_never_show_in_debug() {
        let mut opts = ProbeOptions::new("http://x");
        opts.api_key = Some(super::super::ApiKey::new("sk-secret"));
        assert!(!format!("{opts:?}").contains("sk-secret"));
    }
}
