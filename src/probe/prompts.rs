//! Prompts: the built-in smoke set with expected answers, `--prompt-file` (JSONL), and the
//! answer check.

use serde::{Deserialize, Serialize};

/// One prompt, and the answer it should contain (if it is a smoke check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl Prompt {
    pub fn new(prompt: &str, expected: Option<&str>) -> Self {
        Self { prompt: prompt.to_owned(), expected: expected.map(str::to_owned) }
    }
}

/// Short questions any instruction-tuned model answers, with the word the answer must contain.
/// `llmdeck mock-llm` knows these prompts and answers them correctly.
pub const BUILTIN: [(&str, &str); 6] = [
    ("What is 2 + 2? Answer with just the number.", "4"),
    ("What is the capital of France? Answer with one word.", "Paris"),
    ("What is 7 times 6? Answer with just the number.", "42"),
    ("What is the capital of Japan? Answer with one word.", "Tokyo"),
    ("What is 15 minus 8? Answer with just the number.", "7"),
    ("What is the capital of Italy? Answer with one word.", "Rome"),
];

pub fn builtin() -> Vec<Prompt> {
    BUILTIN.iter().map(|(prompt, expected)| Prompt::new(prompt, Some(expected))).collect()
}

/// Parses JSONL: one `{"prompt": "...", "expected": "..."}` per line (`expected` optional);
/// blank lines are skipped. Errors name the line.
pub fn parse_jsonl(text: &str) -> Result<Vec<Prompt>, String> {
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let prompt: Prompt = serde_json::from_str(line).map_err(|e| {
            format!("line {}: {e} (expected {{\"prompt\": \"...\", \"expected\": \"...\"}})", index + 1)
        })?;
        if prompt.prompt.trim().is_empty() {
            return Err(format!("line {}: the prompt is empty", index + 1));
        }
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        return Err("no prompts in the file".into());
    }
    Ok(prompts)
}

/// The answer contains the expected words as whole words, in order, ignoring case and
/// punctuation: `4` matches "The answer is 4." but not "14".
pub fn answer_matches(answer: &str, expected: &str) -> bool {
    Expected::new(expected).is_in(answer)
}

/// An expected answer prepared once (its words, lowercased), checked against many answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    words: Vec<String>,
}

impl Expected {
    pub fn new(expected: &str) -> Self {
        Self { words: words(expected).map(str::to_lowercase).collect() }
    }

    /// See [`answer_matches`].
    pub fn is_in(&self, answer: &str) -> bool {
        if self.words.is_empty() {
            return true;
        }
        let got: Vec<&str> = words(answer).collect();
        got.windows(self.words.len()).any(|window| {
            window
                .iter()
                .zip(&self.words)
                .all(|(word, want)| word.chars().flat_map(char::to_lowercase).eq(want.chars()))
        })
    }
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_whole_words_only() {
        assert!(answer_matches("4", "4"));
        assert!(answer_matches("The answer is 4.", "4"));
        assert!(answer_matches(" paris\n", "Paris"));
        assert!(answer_matches("It is New York.", "new york"));
        assert!(!answer_matches("14", "4"));
        assert!(!answer_matches("Lyon", "Paris"));
        assert!(!answer_matches("", "Paris"));
        assert!(answer_matches("anything", ""));
    }

    #[test]
    fn jsonl_parses_with_optional_expected_and_blank_lines() {
        let text = "{\"prompt\": \"hi\"}\n\n{\"prompt\": \"2+2?\", \"expected\": \"4\"}\r\n";
        let prompts = parse_jsonl(text).unwrap();
        assert_eq!(prompts, vec![Prompt::new("hi", None), Prompt::new("2+2?", Some("4"))]);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let err = parse_jsonl("{\"prompt\": \"a\"}\n{\"promt\": \"b\"}\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_jsonl("\n\n").is_err());
        assert!(parse_jsonl("{\"prompt\": \"  \"}").unwrap_err().contains("empty"));
    }

    #[test]
    fn builtin_prompts_all_have_expected_answers() {
        assert!(builtin().iter().all(|p| p.expected.is_some()));
    }
}
