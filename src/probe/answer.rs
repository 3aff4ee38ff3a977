//! Parsing answers: non-streaming JSON bodies, streamed chunks, error bodies. Pure functions, so
//! the classification of broken answers is tested without a network.

use serde::Deserialize;

use super::Endpoint;
use super::outcome::{Failure, Outcome};

/// Token counts as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

/// What one streamed chunk carried.
#[derive(Debug, Default, PartialEq)]
pub struct ChunkContent {
    /// Generated text (answer or reasoning) in this chunk; empty for role-only or usage chunks.
    pub text: String,
    /// Only the answer part (reasoning excluded), for the expected-answer check.
    pub answer: String,
    pub usage: Option<Usage>,
    /// The chunk said why generation stopped.
    pub finished: bool,
    /// The server's stamps, when it sends them (`mock-llm --stamp-chunks`).
    pub stamp: Option<Stamp>,
}

/// When the server got the request and when it sent this chunk (µs since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub received_unix_us: u64,
    pub sent_unix_us: u64,
}

/// A whole non-streaming answer.
#[derive(Debug, Default, PartialEq)]
pub struct FullAnswer {
    pub answer: String,
    /// Answer plus reasoning, for token estimates.
    pub generated: String,
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Option<Vec<FullChoice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FullChoice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    /// Only its presence matters: a tool call is an answer without content.
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Option<Vec<StreamChoice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    received_unix_us: Option<u64>,
    #[serde(default)]
    sent_unix_us: Option<u64>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<Message>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Parses a 2xx non-streaming body.
pub fn parse_full(body: &[u8], endpoint: Endpoint) -> Result<FullAnswer, Failure> {
    let parsed: Completion =
        serde_json::from_slice(body).map_err(|e| Failure::malformed(format!("the body is not valid JSON: {e}")))?;
    if let Some(error) = parsed.error {
        return Err(embedded_error(&error));
    }
    let choices = parsed.choices.ok_or_else(|| Failure::malformed("the answer has no `choices`"))?;
    let choice = choices.into_iter().next().ok_or_else(|| Failure::malformed("the answer's `choices` is empty"))?;
    let (answer, reasoning) = match endpoint {
        Endpoint::Chat => {
            let message = choice.message.ok_or_else(|| Failure::malformed("the choice has no `message`"))?;
            let content = message.content.unwrap_or_default();
            let reasoning = message.reasoning_content.unwrap_or_default();
            let tool_calls = message.tool_calls.as_ref().is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
            if content.is_empty() && reasoning.is_empty() && !tool_calls {
                return Err(Failure::new(Outcome::Incomplete, "the answer has no content and no tool calls"));
            }
            // `content` may be null (e.g. a reasoning model cut off by max_tokens).
            (content, reasoning)
        }
        Endpoint::Completions => {
            (choice.text.ok_or_else(|| Failure::malformed("the choice has no `text`"))?, String::new())
        }
    };
    Ok(FullAnswer { generated: format!("{reasoning}{answer}"), answer, usage: parsed.usage })
}

/// Parses the `data:` of one streamed event (not `[DONE]`).
pub fn parse_chunk(data: &str, endpoint: Endpoint) -> Result<ChunkContent, Failure> {
    let chunk: StreamChunk =
        serde_json::from_str(data).map_err(|e| Failure::malformed(format!("a stream chunk is not valid JSON: {e}")))?;
    if let Some(error) = chunk.error {
        return Err(embedded_error(&error));
    }
    let Some(choices) = chunk.choices else {
        if chunk.usage.is_some() {
            return Ok(ChunkContent { usage: chunk.usage, ..ChunkContent::default() });
        }
        return Err(Failure::malformed("a stream chunk has no `choices`"));
    };
    let stamp = chunk
        .received_unix_us
        .zip(chunk.sent_unix_us)
        .map(|(received_unix_us, sent_unix_us)| Stamp { received_unix_us, sent_unix_us });
    let mut content = ChunkContent { usage: chunk.usage, stamp, ..ChunkContent::default() };
    // A usage-only final chunk has `choices: []`.
    if let Some(choice) = choices.into_iter().next() {
        content.finished = choice.finish_reason.as_deref().is_some_and(|r| !r.is_empty());
        match endpoint {
            Endpoint::Chat => {
                let delta = choice.delta.ok_or_else(|| Failure::malformed("a stream chunk's choice has no `delta`"))?;
                let answer = delta.content.unwrap_or_default();
                let reasoning = delta.reasoning_content.unwrap_or_default();
                content.text = format!("{reasoning}{answer}");
                content.answer = answer;
            }
            Endpoint::Completions => {
                let text = choice.text.ok_or_else(|| Failure::malformed("a stream chunk's choice has no `text`"))?;
                content.text = text.clone();
                content.answer = text;
            }
        }
    }
    Ok(content)
}

/// An `error` object inside a 200 answer: the server reports a failure it hit after starting.
/// Its class follows a numeric `code` when there is one, else it is a server error.
fn embedded_error(error: &serde_json::Value) -> Failure {
    let outcome = error
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .map_or(Outcome::ServerError, Outcome::of_status);
    Failure::new(outcome, format!("error in the answer: {}", error_text(error).unwrap_or_default()))
}

/// The human message of an error body: OpenAI's envelope, FastAPI's `detail`, or the text.
pub fn error_body_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = value
            .get("error")
            .and_then(error_text)
            .or_else(|| value.get("message").and_then(error_text))
            .or_else(|| value.get("detail").map(|d| error_text(d).unwrap_or(d.to_string())));
        if let Some(message) = found {
            return message;
        }
    }
    let text = String::from_utf8_lossy(body);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn error_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => {
            map.get("message").and_then(|m| m.as_str()).map(str::to_owned).or_else(|| Some(value.to_string()))
        }
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(result: Result<impl std::fmt::Debug, Failure>) -> String {
        match result {
            Err(f) if f.outcome == Outcome::Malformed => f.message,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn full_chat_answer_with_usage() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"}}],
            "usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#;
        let a = parse_full(body, Endpoint::Chat).unwrap();
        assert_eq!(a.answer, "Paris");
        assert_eq!(a.usage, Some(Usage { prompt_tokens: Some(12), completion_tokens: Some(2) }));
    }

    #[test]
    fn full_completions_answer_and_null_chat_content() {
        let a = parse_full(br#"{"choices":[{"text":" 4"}]}"#, Endpoint::Completions).unwrap();
        assert_eq!(a.answer, " 4");
        assert_eq!(a.usage, None);
        let b = parse_full(br#"{"choices":[{"message":{"content":null,"reasoning_content":"hmm"}}]}"#, Endpoint::Chat)
            .unwrap();
        assert_eq!(b.answer, "");
        assert_eq!(b.generated, "hmm");
    }

    #[test]
    fn broken_full_answers_are_malformed() {
        assert!(malformed(parse_full(b"<html>", Endpoint::Chat)).contains("not valid JSON"));
        assert!(malformed(parse_full(br#"{"choices":[]}"#, Endpoint::Chat)).contains("empty"));
        assert!(malformed(parse_full(br#"{"id":"x"}"#, Endpoint::Chat)).contains("`choices`"));
        assert!(malformed(parse_full(br#"{"choices":[{"text":"a"}]}"#, Endpoint::Chat)).contains("`message`"));
        assert!(
            malformed(parse_full(br#"{"choices":[{"message":{"content":"a"}}]}"#, Endpoint::Completions))
                .contains("`text`")
        );
        // Cut off mid-body.
        malformed(parse_full(br#"{"choices":[{"message":{"content":"Pa"#, Endpoint::Chat));
    }

    #[test]
    fn an_error_object_in_a_200_is_classified_by_its_code() {
        let f = parse_full(br#"{"error":{"message":"boom","code":503}}"#, Endpoint::Chat).unwrap_err();
        assert_eq!(f.outcome, Outcome::ServerError);
        assert!(f.message.contains("boom"));
        let f = parse_chunk(r#"{"error":{"message":"too long","code":400}}"#, Endpoint::Chat).unwrap_err();
        assert_eq!(f.outcome, Outcome::ClientError);
        let f = parse_chunk(r#"{"error":"oops"}"#, Endpoint::Chat).unwrap_err();
        assert_eq!(f.outcome, Outcome::ServerError);
    }

    #[test]
    fn stream_chunks_carry_text_and_usage() {
        let role =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#, Endpoint::Chat)
                .unwrap();
        assert_eq!(role, ChunkContent::default());
        let token = parse_chunk(r#"{"choices":[{"delta":{"content":"Par"}}]}"#, Endpoint::Chat).unwrap();
        assert_eq!(token.text, "Par");
        assert_eq!(token.answer, "Par");
        let reasoning =
            parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"think"}}]}"#, Endpoint::Chat).unwrap();
        assert_eq!(reasoning.text, "think");
        assert_eq!(reasoning.answer, "");
        let usage =
            parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#, Endpoint::Chat).unwrap();
        assert_eq!(usage.usage.and_then(|u| u.completion_tokens), Some(9));
        let text = parse_chunk(r#"{"choices":[{"text":"4"}]}"#, Endpoint::Completions).unwrap();
        assert_eq!(text.text, "4");
    }

    #[test]
    fn broken_stream_chunks_are_malformed() {
        malformed(parse_chunk("{\"choices\":[{\"delta\":", Endpoint::Chat));
        malformed(parse_chunk(r#"{"id":"x"}"#, Endpoint::Chat));
        malformed(parse_chunk(r#"{"choices":[{"index":0}]}"#, Endpoint::Chat));
        malformed(parse_chunk(r#"{"choices":[{"delta":{}}]}"#, Endpoint::Completions));
    }

    #[test]
    fn error_bodies_yield_their_message() {
        let openai = br#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","code":429}}"#;
        assert_eq!(error_body_message(openai), "Rate limit exceeded");
        assert_eq!(error_body_message(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_body_message(br#"{"object":"error","message":"bad model"}"#), "bad model");
        assert_eq!(error_body_message(b"<html>\n  Bad   Gateway\n</html>"), "<html> Bad Gateway </html>");
        assert_eq!(error_body_message(b""), "");
    }
}
