//! What the mock "model" says: the smoke-answer table, deterministic filler text, token counts.

use std::borrow::Cow;

/// A prompt containing one of `patterns` (ASCII case-insensitive substring) is answered with
/// exactly `answer`.
#[derive(Debug)]
pub struct SmokeAnswer {
    pub patterns: &'static [&'static str],
    pub answer: &'static str,
}

/// The smoke prompts the mock answers correctly, so a probe can check expected answers.
/// This table is the single source of truth; the module docs of `mock_llm` list it too.
/// The first entry whose pattern occurs in the prompt wins (chat: the last user message).
pub const SMOKE_ANSWERS: &[SmokeAnswer] = &[
    SmokeAnswer { patterns: &["2+2", "2 + 2", "two plus two"], answer: "4" },
    SmokeAnswer { patterns: &["7 times 6", "6 times 7", "7*6", "7 * 6", "7x6", "7 x 6"], answer: "42" },
    SmokeAnswer { patterns: &["15 minus 8", "15-8", "15 - 8"], answer: "7" },
    SmokeAnswer { patterns: &["days are in a week", "days in a week"], answer: "7" },
    SmokeAnswer { patterns: &["capital of france"], answer: "Paris" },
    SmokeAnswer { patterns: &["capital of japan"], answer: "Tokyo" },
    SmokeAnswer { patterns: &["capital of italy"], answer: "Rome" },
    SmokeAnswer { patterns: &["capital of germany"], answer: "Berlin" },
    SmokeAnswer { patterns: &["largest planet"], answer: "Jupiter" },
    SmokeAnswer { patterns: &["color of the sky", "colour of the sky"], answer: "Blue" },
    SmokeAnswer { patterns: &["opposite of hot"], answer: "Cold" },
];

/// The known answer for `prompt`, if it is one of the smoke prompts.
pub fn smoke_answer(prompt: &str) -> Option<&'static str> {
    SMOKE_ANSWERS
        .iter()
        .find(|entry| entry.patterns.iter().any(|p| contains_ignore_ascii_case(prompt, p)))
        .map(|entry| entry.answer)
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Why generation ended, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A generated reply, token by token.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<Cow<'static, str>>,
    pub finish_reason: FinishReason,
}

impl Generation {
    /// The same answer with nothing in it (a server that cut it off).
    pub fn emptied(mut self) -> Self {
        self.tokens.clear();
        self
    }

    pub fn text(&self) -> String {
        self.tokens.concat()
    }

    pub fn token_count(&self) -> u32 {
        u32::try_from(self.tokens.len()).unwrap_or(u32::MAX)
    }
}

/// How long a reply may be and how it starts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request's `max_tokens` (already capped by the caller).
    pub max_tokens: u32,
    /// Length of a filler reply when nothing stops it earlier (`--output-tokens`).
    pub natural_tokens: u32,
    /// Keep generating until `max_tokens` (vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// Completions continue the prompt (" Paris"); chat replies start bare ("Paris").
    pub leading_space: bool,
}

/// The reply to `prompt`: the smoke answer when there is one, else deterministic filler text
/// (the same prompt always gets the same words).
pub fn generate(prompt: &str, limits: Limits) -> Generation {
    let max = usize::try_from(limits.max_tokens).unwrap_or(usize::MAX);
    let natural = usize::try_from(limits.natural_tokens).unwrap_or(usize::MAX);
    let answer = if limits.ignore_eos { None } else { smoke_answer(prompt) };
    // `wanted` is how long the reply would be without max_tokens.
    let (mut tokens, wanted) = match answer {
        Some(answer) => {
            let tokens = answer_tokens(answer, limits.leading_space);
            let len = tokens.len();
            (tokens, len)
        }
        None if limits.ignore_eos => (filler_tokens(prompt, max, limits.leading_space), max),
        None => (filler_tokens(prompt, natural.min(max), limits.leading_space), natural),
    };
    let finish_reason = if limits.ignore_eos || wanted > max { FinishReason::Length } else { FinishReason::Stop };
    tokens.truncate(max);
    Generation { tokens, finish_reason }
}

/// An answer as tokens, with a leading space when it continues a prompt.
fn answer_tokens(answer: &'static str, leading_space: bool) -> Vec<Cow<'static, str>> {
    let mut tokens: Vec<Cow<'static, str>> = word_tokens(answer).map(Cow::Borrowed).collect();
    if leading_space && let Some(first) = tokens.first_mut() {
        *first = Cow::Owned(format!(" {first}"));
    }
    tokens
}

/// Filler sentences, each with a leading space (sliced off for the very first token).
const SENTENCES: &[&str] = &[
    " The model server keeps every GPU busy while new requests wait in the queue.",
    " Continuous batching lets short answers finish early and frees their cache blocks.",
    " Each request is split into a prefill step and a sequence of decode steps.",
    " Throughput grows with the batch size until the key-value cache is full.",
    " A longer prompt raises the time to the first token but not the pace after it.",
    " Streaming sends every token as soon as the scheduler has produced it.",
    " When memory runs short the scheduler preempts the youngest requests first.",
    " Operators watch latency percentiles because averages hide the slow tail.",
    " Tensor parallelism spreads the weights of one model over several GPUs.",
    " Quantised weights leave more memory for the cache and therefore more room for users.",
    " A health check that answers quickly says little about the quality of the answers.",
    " Smoke tests ask questions whose answers are known before the first token arrives.",
];

/// `count` tokens of plausible text, seeded by the prompt so replies are reproducible.
/// A token is a word with its leading space, as in real BPE vocabularies.
fn filler_tokens(prompt: &str, count: usize, leading_space: bool) -> Vec<Cow<'static, str>> {
    let mut rng = SplitMix(fnv1a(prompt.as_bytes()));
    let mut tokens: Vec<Cow<'static, str>> = Vec::with_capacity(count);
    while tokens.len() < count {
        let sentence = SENTENCES[rng.below(SENTENCES.len())];
        let sentence = if tokens.is_empty() && !leading_space { &sentence[1..] } else { sentence };
        let room = count - tokens.len();
        tokens.extend(word_tokens(sentence).take(room).map(Cow::Borrowed));
    }
    tokens
}

/// Splits before each space: " The model" → [" The", " model"]; "New York" → ["New", " York"].
fn word_tokens(text: &'static str) -> impl Iterator<Item = &'static str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.char_indices().skip(1).find(|(_, c)| *c == ' ').map_or(rest.len(), |(i, _)| i);
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

/// Rough prompt token count (about four characters a token, at least one).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// Chat template overhead per message, roughly what OpenAI documents.
pub const TOKENS_PER_MESSAGE: u32 = 4;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A tiny deterministic generator (SplitMix64); also used to draw faults reproducibly.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is a small table length: the modulo bias is irrelevant here.
        (self.next() % n as u64) as usize
    }
}

/// SplitMix64's finaliser: a good 64-bit hash of `z`.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_tokens: u32) -> Limits {
        Limits { max_tokens, natural_tokens: 32, ignore_eos: false, leading_space: false }
    }

    #[test]
    fn smoke_prompts_get_their_answers() {
        assert_eq!(smoke_answer("What is 2+2?"), Some("4"));
        assert_eq!(smoke_answer("What is 2 + 2? Answer with just the number."), Some("4"));
        assert_eq!(smoke_answer("What is the CAPITAL of France?"), Some("Paris"));
        assert_eq!(smoke_answer("What is 7 times 6?"), Some("42"));
        assert_eq!(smoke_answer("What is 15 minus 8?"), Some("7"));
        assert_eq!(smoke_answer("capital of Japan"), Some("Tokyo"));
        assert_eq!(smoke_answer("capital of Italy"), Some("Rome"));
        assert_eq!(smoke_answer("Tell me a story"), None);
    }

    #[test]
    fn probe_builtin_prompts_are_all_known() {
        for (prompt, expected) in crate::probe::prompts::BUILTIN {
            assert_eq!(smoke_answer(prompt), Some(expected), "{prompt}");
        }
    }

    #[test]
    fn chat_answers_are_bare_and_completions_continue_with_a_space() {
        let chat = generate("What is the capital of France?", limits(16));
        assert_eq!(chat.text(), "Paris");
        assert_eq!(chat.finish_reason, FinishReason::Stop);
        let completion = generate("The capital of France is", Limits { leading_space: true, ..limits(16) });
        assert_eq!(completion.text(), " Paris");
    }

    #[test]
    fn filler_is_deterministic_and_bounded_by_max_tokens() {
        let a = generate("Tell me a story", limits(10));
        let b = generate("Tell me a story", limits(10));
        assert_eq!(a, b);
        assert_eq!(a.token_count(), 10);
        assert_eq!(a.finish_reason, FinishReason::Length);
        assert!(a.text().starts_with(|c: char| c.is_ascii_uppercase()));
        let long = generate("Tell me a story", limits(1000));
        assert!(long.text().contains(". "), "{}", long.text());
    }

    #[test]
    fn filler_stops_at_its_natural_length() {
        let g = generate("Tell me a story", limits(1000));
        assert_eq!(g.token_count(), 32);
        assert_eq!(g.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn ignore_eos_generates_exactly_max_tokens() {
        let g = generate("What is 2+2?", Limits { ignore_eos: true, ..limits(100) });
        assert_eq!(g.token_count(), 100);
        assert_eq!(g.finish_reason, FinishReason::Length);
    }

    #[test]
    fn answers_split_into_word_tokens() {
        let tokens = answer_tokens("New York City", false);
        assert_eq!(tokens, ["New", " York", " City"]);
    }

    #[test]
    fn prompt_tokens_are_estimated() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
