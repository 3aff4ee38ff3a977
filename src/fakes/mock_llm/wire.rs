//! OpenAI wire types: what the mock reads from requests and writes in responses. Unknown
//! request fields (temperature, top_p, ...) are accepted and ignored, as vLLM does.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::text::{self, TOKENS_PER_MESSAGE};

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(default)]
    pub text: Option<String>,
}

impl MessageContent {
    fn text(&self) -> Cow<'_, str> {
        match self {
            MessageContent::Text(text) => Cow::Borrowed(text),
            MessageContent::Parts(parts) => {
                Cow::Owned(parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("\n"))
            }
        }
    }
}

impl ChatRequest {
    /// The text the reply answers: the last user message.
    pub fn question(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role.as_deref() == Some("user"))
            .or(self.messages.last())
            .and_then(|m| m.content.as_ref())
            .map(|content| content.text().into_owned())
            .unwrap_or_default()
    }

    pub fn prompt_tokens(&self) -> u32 {
        self.messages
            .iter()
            .map(|m| m.content.as_ref().map_or(0, |c| text::estimate_tokens(&c.text())) + TOKENS_PER_MESSAGE)
            .fold(3u32, u32::saturating_add)
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// `prompt` may be text, a list of texts, token ids, or lists of token ids. Lists of texts are
/// answered as one prompt (the mock always returns a single choice).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl Prompt {
    pub fn text(&self) -> String {
        match self {
            Prompt::Text(text) => text.clone(),
            Prompt::Texts(texts) => texts.join("\n"),
            Prompt::Tokens(_) | Prompt::TokenBatches(_) => String::new(),
        }
    }

    pub fn tokens(&self) -> u32 {
        let count = match self {
            Prompt::Text(text) => return text::estimate_tokens(text),
            Prompt::Texts(texts) => {
                return texts.iter().map(|t| text::estimate_tokens(t)).fold(0, u32::saturating_add);
            }
            Prompt::Tokens(ids) => ids.len(),
            Prompt::TokenBatches(batches) => batches.iter().map(Vec::len).sum(),
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens.saturating_add(completion_tokens) }
    }
}

/// A whole (non-streamed) answer: chat (`C` = [`ChatChoice`]) or text ([`TextChoice`]).
#[derive(Debug, Serialize)]
pub struct Completion<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [C; 1],
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice<'a> {
    pub index: u32,
    pub message: AssistantMessage<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Serialize)]
pub struct TextChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

/// A streamed chunk. `usage` is omitted unless the client asked for usage; then it is `null`
/// on every chunk but the last, as OpenAI does.
#[derive(Debug, Serialize)]
pub struct Chunk<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [C],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// `--stamp-chunks` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_unix_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_unix_us: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: [ModelCard<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: &'a str,
    pub parent: Option<()>,
    pub max_model_len: u32,
}

/// OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_accept_text_and_parts() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"What is 2+2?"}]}],
               "stream":null,"temperature":0}"#,
        )
        .unwrap();
        assert_eq!(req.question(), "What is 2+2?");
        assert!(req.prompt_tokens() > 2 * TOKENS_PER_MESSAGE);
    }

    #[test]
    fn completion_prompts_take_every_form() {
        for (body, text) in [
            (r#"{"prompt":"Hi"}"#, "Hi"),
            (r#"{"prompt":["a","b"]}"#, "a\nb"),
            (r#"{"prompt":[1,2,3]}"#, ""),
            (r#"{"prompt":[[1,2],[3]]}"#, ""),
        ] {
            let req: CompletionRequest = serde_json::from_str(body).unwrap();
            assert_eq!(req.prompt.text(), text);
        }
    }

    #[test]
    fn chunks_carry_null_usage_only_when_asked() {
        let choices: [ChatChunkChoice<'_>; 0] = [];
        let chunk = |usage| Chunk {
            id: "x",
            object: "chat.completion.chunk",
            created: 1,
            model: "m",
            choices: &choices,
            usage,
            received_unix_us: None,
            sent_unix_us: None,
        };
        let without = serde_json::to_value(chunk(None)).unwrap();
        assert!(without.get("usage").is_none());
        let with = serde_json::to_value(chunk(Some(None))).unwrap();
        assert!(with["usage"].is_null());
        assert_eq!(with["object"], "chat.completion.chunk");
    }
}
