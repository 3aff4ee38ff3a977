//! The HTTP surface: routes, the counting/auth/hang middleware, and the completion handlers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::faults::{Faults, Injected};
use super::stats::{self, Stats, TrackedBody};
use super::stream::{self, Kind, Reply};
use super::text::{self, Limits};
use super::wire::{
    AssistantMessage, ChatChoice, ChatRequest, Completion, CompletionRequest, ErrorBody, ErrorEnvelope, ModelCard,
    ModelList, TextChoice, Usage,
};
use super::{ApiKey, MAX_MODEL_LEN};

/// Everything the handlers share; read-only apart from atomics.
#[derive(Debug)]
pub struct Shared {
    pub model: String,
    pub api_key: Option<ApiKey>,
    pub stats: Arc<Stats>,
    pub faults: Arc<Faults>,
    /// Added before the first token (streaming) or the response.
    pub latency: Duration,
    /// Gap between streamed tokens; `None` = as fast as possible.
    pub token_interval: Option<Duration>,
    /// Length of filler replies (`--output-tokens`).
    pub output_tokens: u32,
    /// Unix time the server started (`created` of the model card).
    pub started_unix: u64,
    /// `--no-health`: /health answers 404.
    pub no_health: bool,
    /// `--no-stream-usage`: streams never carry usage.
    pub no_stream_usage: bool,
    /// `--cut-off-when-busy`: answers are empty while another request is in flight.
    pub cut_off_when_busy: bool,
    /// `--stamp-chunks`: streamed chunks carry receipt and send times.
    pub stamp_chunks: bool,
}

impl Shared {
    /// Never returns once the server is hung (`--hang-after`): the request just waits.
    pub async fn wait_if_hung(&self) {
        if self.faults.is_hung() {
            std::future::pending::<()>().await;
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.api_key else {
            return true;
        };
        headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .is_some_and(|given| expected.matches(given.trim()))
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), track))
        // Added after the layer: test observability is neither counted, authenticated nor hung.
        .route("/mock/stats", get(mock_stats))
        .with_state(shared)
}

/// Counts every request, keeps it in flight until its body is done, applies `--hang-after`
/// and the API key (on `/v1/*` only, like vLLM).
async fn track(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = stats::endpoint_index(path);
    let needs_auth = path.starts_with("/v1/");
    let in_flight = shared.stats.request_started();
    shared.wait_if_hung().await;
    let response =
        if needs_auth && !shared.authorized(request.headers()) { unauthorized() } else { next.run(request).await };
    shared.stats.record_status(endpoint, response.status().as_u16());
    response.map(|body| TrackedBody::wrap(body, in_flight))
}

async fn health(State(shared): State<Arc<Shared>>) -> StatusCode {
    if shared.no_health { StatusCode::NOT_FOUND } else { StatusCode::OK }
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data: [ModelCard {
                id: &shared.model,
                object: "model",
                created: shared.started_unix,
                owned_by: "vllm",
                root: &shared.model,
                parent: None,
                max_model_len: MAX_MODEL_LEN,
            }],
        },
    )
}

async fn mock_stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &shared.stats.snapshot(shared.faults.is_hung()))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], r#"{"detail":"Not Found"}"#)
        .into_response()
}

/// A parsed completion request, either endpoint.
struct Job {
    kind: Kind,
    model: Option<String>,
    question: String,
    prompt_tokens: u32,
    max_tokens: Option<u32>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return bad_request(&format!("Invalid chat completion request: {e}"), None),
    };
    if request.messages.is_empty() {
        return bad_request("messages must not be empty", Some("messages"));
    }
    let job = Job {
        kind: Kind::Chat,
        question: request.question(),
        prompt_tokens: request.prompt_tokens(),
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        stream: request.stream.unwrap_or(false),
        include_usage: include_usage(request.stream_options.as_ref()),
        ignore_eos: request.ignore_eos.unwrap_or(false),
        model: request.model,
    };
    answer(shared, job).await
}

async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return bad_request(&format!("Invalid completion request: {e}"), None),
    };
    let job = Job {
        kind: Kind::Completion,
        question: request.prompt.text(),
        prompt_tokens: request.prompt.tokens(),
        max_tokens: request.max_tokens,
        stream: request.stream.unwrap_or(false),
        include_usage: include_usage(request.stream_options.as_ref()),
        ignore_eos: request.ignore_eos.unwrap_or(false),
        model: request.model,
    };
    answer(shared, job).await
}

fn include_usage(options: Option<&super::wire::StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

async fn answer(shared: Arc<Shared>, job: Job) -> Response {
    if let Some(model) = job.model.as_deref()
        && model != shared.model
    {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        );
    }
    let max_tokens = match check_max_tokens(job.max_tokens, job.prompt_tokens) {
        Ok(max_tokens) => max_tokens,
        Err(message) => return bad_request(&message, Some("max_tokens")),
    };
    let injected = shared.faults.draw();
    if let Injected::Error(status) = injected {
        pause(shared.latency).await;
        shared.wait_if_hung().await;
        return injected_error(status);
    }
    let generation = text::generate(
        &job.question,
        Limits {
            max_tokens,
            natural_tokens: shared.output_tokens,
            ignore_eos: job.ignore_eos,
            leading_space: job.kind == Kind::Completion,
        },
    );
    // This request counts itself: more than one in flight means another is running.
    let cut_off = shared.cut_off_when_busy && shared.stats.in_flight() > 1;
    let generation = if cut_off { generation.emptied() } else { generation };
    let usage = Usage::new(job.prompt_tokens, generation.token_count());
    let reply = Reply {
        kind: job.kind,
        id: job.kind.new_id(),
        created: unix_now(),
        generation,
        usage,
        include_usage: job.include_usage && !shared.no_stream_usage,
        malformed: injected == Injected::Malformed,
        cut_off,
        received_unix_us: shared.stamp_chunks.then(crate::util::unix_micros),
    };
    if job.stream { stream::response(shared, reply) } else { whole_answer(shared, reply).await }
}

/// vLLM's checks: at least one token, and prompt + completion within the context length.
fn check_max_tokens(requested: Option<u32>, prompt_tokens: u32) -> Result<u32, String> {
    let Some(max_tokens) = requested else {
        return Ok(MAX_MODEL_LEN.saturating_sub(prompt_tokens).max(1));
    };
    if max_tokens == 0 {
        return Err("max_tokens must be at least 1, got 0.".into());
    }
    let total = prompt_tokens.saturating_add(max_tokens);
    if total > MAX_MODEL_LEN {
        return Err(format!(
            "This model's maximum context length is {MAX_MODEL_LEN} tokens. However, you \
             requested {total} tokens ({prompt_tokens} in the messages, {max_tokens} in the \
             completion). Please reduce the length of the messages or completion."
        ));
    }
    Ok(max_tokens)
}

/// A non-streaming answer: it takes as long as streaming the same tokens would.
async fn whole_answer(shared: Arc<Shared>, reply: Reply) -> Response {
    let tokens = reply.generation.token_count();
    let generation_time = shared.token_interval.map_or(Duration::ZERO, |gap| gap * tokens.saturating_sub(1));
    pause(shared.latency + generation_time).await;
    shared.wait_if_hung().await;
    if shared.faults.stall_after_tokens.is_some() {
        std::future::pending::<()>().await;
    }
    let text = reply.generation.text();
    let finish_reason = reply.generation.finish_reason.as_str();
    let body = match reply.kind {
        Kind::Chat => serde_json::to_vec(&Completion {
            id: &reply.id,
            object: "chat.completion",
            created: reply.created,
            model: &shared.model,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: &text },
                logprobs: None,
                finish_reason,
            }],
            usage: reply.usage,
        }),
        Kind::Completion => serde_json::to_vec(&Completion {
            id: &reply.id,
            object: "text_completion",
            created: reply.created,
            model: &shared.model,
            choices: [TextChoice { index: 0, text: &text, logprobs: None, finish_reason: Some(finish_reason) }],
            usage: reply.usage,
        }),
    };
    let mut body = match body {
        Ok(body) => body,
        Err(e) => return internal_error(&e.to_string()),
    };
    shared.stats.record_tokens(reply.usage.prompt_tokens, reply.usage.completion_tokens);
    if reply.malformed {
        body.truncate(body.len() / 2);
    }
    if shared.faults.drop_after_tokens.is_some() {
        return cut_off_response(body);
    }
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 200 with the first half of `body`, then the connection is closed mid-body.
fn cut_off_response(mut body: Vec<u8>) -> Response {
    body.truncate(body.len() / 2);
    let mut response = Response::new(stream::cut_off_body(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => internal_error(&e.to_string()),
    }
}

fn internal_error(message: &str) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, message.to_owned()).into_response()
}

pub fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    json_response(status, &ErrorEnvelope { error: ErrorBody { message, kind, param, code } })
}

fn bad_request(message: &str, param: Option<&str>) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, None)
}

fn unauthorized() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided. You can pass it as `Authorization: Bearer <key>`.",
        "invalid_request_error",
        None,
        Some("invalid_api_key"),
    )
}

/// An error chosen by `--error-rate`/`--error-mix`, worded like OpenAI's.
fn injected_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let generic = format!("{reason} (injected by mock-llm --error-rate)");
    let (message, kind, code) = match status.as_u16() {
        429 => (
            "Rate limit reached for requests. Please try again in 1s. \
             (injected by mock-llm --error-rate)",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. \
             (injected by mock-llm --error-rate)",
            "server_error",
            None,
        ),
        503 => (
            "The engine is currently overloaded, please try again later. \
             (injected by mock-llm --error-rate)",
            "server_error",
            Some("service_unavailable"),
        ),
        400..=499 => (generic.as_str(), "invalid_request_error", None),
        _ => (generic.as_str(), "server_error", None),
    };
    let mut response = error_response(status, message, kind, None, code);
    if matches!(status.as_u16(), 429 | 503) {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
