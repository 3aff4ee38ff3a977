//! Log levels, parsed from the formats model servers print.
//!
//! [`parse_level`] runs on every captured line, so it only looks at the first [`SCAN_BYTES`]
//! bytes, never allocates and never runs a regex: a few byte comparisons per line.

use std::ops::Range;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    /// Short fixed-width label for the Logs pane.
    pub fn label(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERR",
            Level::Critical => "CRIT",
        }
    }
}

/// How much of a line the parser looks at. Every supported format puts its level well inside.
pub const SCAN_BYTES: usize = 96;

/// Alphabetic words looked at after a leading timestamp before giving up (Python logging puts
/// the logger name first: `2024-01-01 12:00:00,123 - vllm.engine - WARNING - msg`).
const WORDS_AFTER_TIMESTAMP: usize = 4;

/// The level of a line, from the common formats; `None` when no format matches.
///
/// Recognised (ANSI colour codes anywhere in the head are ignored):
/// - a level word first: vLLM `INFO 11-23 14:02:11 [file.py:12] msg` (also after a
///   `(EngineCore_DP0 pid=1234) ` prefix), uvicorn `INFO:     127.0.0.1 ...`, Python's default
///   `WARNING:root:msg`, `[ERROR] msg`, tracing without time ` WARN target: msg`;
/// - a timestamp, then a level among the first few words: Python `2024-01-01 12:00:00,123 - name
///   - WARNING - msg`, `[2024-01-01 12:00:00] [ERROR] msg`, Rust tracing
///   `2024-01-01T12:00:00.123Z  WARN target: msg`;
/// - logfmt / Go slog `time=... level=INFO msg=...`; glog `E1123 14:02:11.123 ...`;
/// - Python tracebacks and exception lines (`Traceback (most recent call last):`,
///   `torch.OutOfMemoryError: ...`) and Rust panics (`thread 'main' panicked at`) as errors.
///
/// A level word in the middle of a message (`loaded INFO table`) is not a level.
pub fn parse_level(line: &str) -> Option<Level> {
    let bytes = line.as_bytes();
    let head = &bytes[..bytes.len().min(SCAN_BYTES)];
    if head.contains(&0x1b) {
        // Colour codes take room: look further in the raw line, keep SCAN_BYTES visible bytes.
        let raw = &bytes[..bytes.len().min(2 * SCAN_BYTES)];
        let mut buf = [0u8; SCAN_BYTES];
        let n = strip_ansi(raw, &mut buf);
        parse_head(&buf[..n])
    } else {
        parse_head(head)
    }
}

fn parse_head(head: &[u8]) -> Option<Level> {
    let head = skip_process_prefix(head).trim_ascii_start();
    let first = *head.first()?;
    if first.is_ascii_digit() || (first == b'[' && head.get(1).is_some_and(u8::is_ascii_digit)) {
        return level_after_timestamp(head);
    }
    leading_level_word(head).or_else(|| logfmt_level(head)).or_else(|| glog_level(head)).or_else(|| error_line(head))
}

/// Copies `src` into `dst` without ANSI escape sequences (CSI `ESC [ ... final`, and two-byte
/// escapes). Returns the number of bytes written.
fn strip_ansi(src: &[u8], dst: &mut [u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < src.len() && n < dst.len() {
        if src[i] == 0x1b {
            i += 1;
            if src.get(i) == Some(&b'[') {
                i += 1;
                // Parameters and intermediates, up to and including the final byte (@ to ~).
                while i < src.len() && !(0x40..=0x7e).contains(&src[i]) {
                    i += 1;
                }
            }
            i += 1;
        } else {
            dst[n] = src[i];
            n += 1;
            i += 1;
        }
    }
    n
}

/// Skips a `(Name pid=1234) ` prefix that vLLM puts before lines from its worker processes.
fn skip_process_prefix(head: &[u8]) -> &[u8] {
    if head.first() != Some(&b'(') {
        return head;
    }
    match head.iter().position(|&b| b == b')') {
        Some(close) if head.get(close + 1) == Some(&b' ') => &head[close + 2..],
        _ => head,
    }
}

fn level_word(word: &[u8]) -> Option<Level> {
    Some(match word {
        b"TRACE" | b"TRC" => Level::Trace,
        b"DEBUG" | b"DBG" => Level::Debug,
        b"INFO" | b"INF" | b"NOTICE" => Level::Info,
        b"WARN" | b"WARNING" | b"WRN" => Level::Warn,
        b"ERROR" | b"ERR" => Level::Error,
        b"CRITICAL" | b"CRIT" | b"FATAL" | b"FTL" | b"PANIC" => Level::Critical,
        _ => return None,
    })
}

/// Bytes that end a word: whitespace and the punctuation formats put around levels.
fn is_delimiter(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'[' | b']' | b'(' | b')' | b':' | b'|' | b',' | b'-' | b'=')
}

/// `INFO ...`, `INFO:     ...`, `WARNING:root:...`, `[ERROR] ...`: an exact upper-case level
/// word, alone at the start of the line.
fn leading_level_word(head: &[u8]) -> Option<Level> {
    let head = head.strip_prefix(b"[").unwrap_or(head);
    let end = head.iter().position(|b| !b.is_ascii_uppercase()).unwrap_or(head.len());
    match head.get(end) {
        None | Some(b' ' | b'\t' | b':' | b']' | b'|') => level_word(&head[..end]),
        _ => None,
    }
}

/// After a leading timestamp: the first level word among the first few alphabetic words.
/// Words starting with a digit (dates, times, pids) are skipped without counting.
fn level_after_timestamp(head: &[u8]) -> Option<Level> {
    let mut alphabetic_words = 0;
    for word in head.split(|&b| is_delimiter(b)).filter(|w| !w.is_empty()) {
        if !word[0].is_ascii_alphabetic() {
            continue;
        }
        if let Some(level) = level_word(word) {
            return Some(level);
        }
        alphabetic_words += 1;
        if alphabetic_words == WORDS_AFTER_TIMESTAMP {
            return None;
        }
    }
    None
}

/// `time=2024-01-01T12:00:00Z level=INFO source=... msg=...` (Go slog, logfmt), any case.
fn logfmt_level(head: &[u8]) -> Option<Level> {
    const KEY: &[u8] = b"level=";
    let at = head.windows(KEY.len()).position(|w| w == KEY)?;
    if at > 0 && head[at - 1] != b' ' {
        return None;
    }
    let value = &head[at + KEY.len()..];
    let value = value.strip_prefix(b"\"").unwrap_or(value);
    let end = value.iter().position(|b| !b.is_ascii_alphabetic()).unwrap_or(value.len());
    let mut upper = [0u8; 8];
    let word = value.get(..end).filter(|w| w.len() <= upper.len())?;
    upper[..end].copy_from_slice(word);
    upper[..end].make_ascii_uppercase();
    level_word(&upper[..end])
}

/// glog / abseil: `E1123 14:02:11.123456  1234 file.cc:12] msg` (severity letter, MMDD, space).
fn glog_level(head: &[u8]) -> Option<Level> {
    let [severity, m1, m2, d1, d2, b' ', ..] = *head else {
        return None;
    };
    if ![m1, m2, d1, d2].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match severity {
        b'I' => Some(Level::Info),
        b'W' => Some(Level::Warn),
        b'E' => Some(Level::Error),
        b'F' => Some(Level::Critical),
        _ => None,
    }
}

/// Lines that are errors by shape: Python tracebacks and exception lines, Rust panics.
fn error_line(head: &[u8]) -> Option<Level> {
    if head.starts_with(b"Traceback (most recent call last)") {
        return Some(Level::Error);
    }
    if head.starts_with(b"thread '") && contains(head, b"' panicked at") {
        return Some(Level::Error);
    }
    exception_line(head)
}

/// `RuntimeError: ...`, `torch.OutOfMemoryError: CUDA out of memory`, `KeyError` alone: a dotted
/// identifier at the very start whose last part is a class name ending in Error or Exception,
/// followed by `:` or the end of the line.
fn exception_line(head: &[u8]) -> Option<Level> {
    let end = head.iter().position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')).unwrap_or(head.len());
    if !matches!(head.get(end), None | Some(b':')) {
        return None;
    }
    let name = &head[..end];
    let class = name.rsplit(|&b| b == b'.').next()?;
    let is_class = class.first().is_some_and(u8::is_ascii_uppercase);
    (is_class && (class.ends_with(b"Error") || class.ends_with(b"Exception"))).then_some(Level::Error)
}

/// The message of a line, without the server's own time/level header and process prefix: what
/// a one-line summary has room for.
pub fn without_header(line: &str) -> &str {
    let line = line.trim();
    match redundant_header(line) {
        Some(header) => line.get(header.end..).unwrap_or(line).trim_start(),
        None => line,
    }
}

/// The header of a line that repeats what the Logs pane's time and level columns already show,
/// for the formats where it is one contiguous run: vLLM `INFO 11-23 14:02:11 [file.py:12] `
/// (after any `(EngineCore_DP0 pid=1) ` prefix, which is kept), uvicorn `INFO:     ` and Rust
/// tracing `2024-01-01T12:00:00.123Z  WARN `. Its byte range, for a compact display; `None` when
/// the line has no such header. Expects text without escape sequences.
pub fn redundant_header(line: &str) -> Option<Range<usize>> {
    let bytes = line.as_bytes();
    let head = &bytes[..bytes.len().min(SCAN_BYTES)];
    let at = head.len() - skip_process_prefix(head).len();
    let rest = &head[at..];
    let len = vllm_header(rest).or_else(|| uvicorn_header(rest)).or_else(|| tracing_header(rest))?;
    (len < bytes.len() - at).then_some(at..at + len)
}

/// Length of a leading upper-case level word, if it is one.
fn level_word_len(head: &[u8]) -> Option<usize> {
    let end = head.iter().position(|b| !b.is_ascii_uppercase()).unwrap_or(head.len());
    level_word(&head[..end]).map(|_| end)
}

/// Whether `head` starts with `pattern`, where `9` stands for any digit.
fn starts_with_shape(head: &[u8], pattern: &[u8]) -> bool {
    head.len() >= pattern.len()
        && head.iter().zip(pattern).all(|(&b, &p)| if p == b'9' { b.is_ascii_digit() } else { b == p })
}

/// `INFO 11-23 14:02:11 [file.py:12] `: level, date, time, optional `[location]`, one space.
fn vllm_header(head: &[u8]) -> Option<usize> {
    let mut at = level_word_len(head)?;
    if !starts_with_shape(&head[at..], b" 99-99 99:99:99 ") {
        return None;
    }
    at += b" 99-99 99:99:99 ".len();
    if head.get(at) == Some(&b'[') {
        let close = head[at..].iter().position(|&b| b == b']')?;
        at += close + 1;
        if head.get(at) != Some(&b' ') {
            return None;
        }
        at += 1;
    }
    Some(at)
}

/// `INFO:     `: level, colon, the padding spaces.
fn uvicorn_header(head: &[u8]) -> Option<usize> {
    let at = level_word_len(head)?;
    if head.get(at) != Some(&b':') || head.get(at + 1) != Some(&b' ') {
        return None;
    }
    let spaces = head[at + 1..].iter().take_while(|&&b| b == b' ').count();
    Some(at + 1 + spaces)
}

/// `2024-01-01T12:00:00.123Z  WARN `: an RFC 3339 timestamp, spaces, level, one space.
fn tracing_header(head: &[u8]) -> Option<usize> {
    if !starts_with_shape(head, b"9999-99-99T99:99:99") {
        return None;
    }
    let mut at = head.iter().position(|&b| b == b' ')?;
    at += head[at..].iter().take_while(|&&b| b == b' ').count();
    at += level_word_len(&head[at..])?;
    (head.get(at) == Some(&b' ')).then_some(at + 1)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_header_keeps_the_message_only() {
        let vllm =
            "(EngineCore_DP0 pid=17822) ERROR 11-23 16:52:48 [core.py:708] torch.OutOfMemoryError: CUDA out of memory.";
        assert_eq!(without_header(vllm), "torch.OutOfMemoryError: CUDA out of memory.");
        assert_eq!(without_header("  plain message "), "plain message");
    }

    use super::*;

    fn lvl(line: &str) -> Option<Level> {
        parse_level(line)
    }

    fn compact(line: &str) -> String {
        match redundant_header(line) {
            Some(r) => format!("{}{}", &line[..r.start], &line[r.end..]),
            None => line.to_owned(),
        }
    }

    #[test]
    fn redundant_headers() {
        assert_eq!(compact("INFO 11-23 14:02:11 [loggers.py:127] Engine 000: Avg"), "Engine 000: Avg");
        assert_eq!(compact("WARNING 11-23 14:02:11 no location"), "no location");
        assert_eq!(
            compact("(EngineCore_DP0 pid=1234) ERROR 11-23 14:02:11 [core.py:1] died"),
            "(EngineCore_DP0 pid=1234) died"
        );
        assert_eq!(
            compact(r#"INFO:     127.0.0.1:1234 - "GET /health HTTP/1.1" 200 OK"#),
            r#"127.0.0.1:1234 - "GET /health HTTP/1.1" 200 OK"#
        );
        assert_eq!(compact("2024-01-01T12:00:00.123Z  WARN target: msg"), "target: msg");
        assert_eq!(compact("2024-01-01T12:00:00.123456Z ERROR router: oops"), "router: oops");
        // Kept whole: no header, an informative one, or nothing after it.
        for line in [
            "WARNING:root:msg",
            "2024-01-01 12:00:00,123 - name - WARNING - msg",
            "INFO 11-23 14:02:11 [never closed",
            "INFO 11-23 14:02:11 ",
            "INFO:     ",
            "INFORMATION: x",
            "Loading safetensors checkpoint shards",
            "",
        ] {
            assert_eq!(compact(line), line);
        }
    }

    #[test]
    fn vllm() {
        assert_eq!(lvl("INFO 11-23 14:02:11 [api_server.py:12] Started server"), Some(Level::Info));
        assert_eq!(lvl("WARNING 11-23 14:02:11 [config.py:1] Casting torch.bfloat16"), Some(Level::Warn));
        assert_eq!(lvl("ERROR 11-23 14:02:11 [core.py:40] EngineCore failed to start."), Some(Level::Error));
        assert_eq!(lvl("DEBUG 11-23 14:02:11 [x.py:1] y"), Some(Level::Debug));
        assert_eq!(lvl("(EngineCore_DP0 pid=1234) INFO 11-23 14:02:11 [core.py:12] msg"), Some(Level::Info));
        assert_eq!(lvl("(VllmWorker rank=0 pid=99) ERROR 11-23 14:02:11 [worker.py:1] boom"), Some(Level::Error));
        assert_eq!(lvl("(EngineCore_DP0 pid=1234) torch.OutOfMemoryError: CUDA out of memory."), Some(Level::Error));
    }

    #[test]
    fn python_logging() {
        assert_eq!(lvl("2024-01-01 12:00:00,123 - name - WARNING - msg"), Some(Level::Warn));
        assert_eq!(lvl("2024-01-01 12:00:00,123 - vllm.engine.async_llm_engine - ERROR - died"), Some(Level::Error));
        assert_eq!(lvl("WARNING:root:msg"), Some(Level::Warn));
        assert_eq!(lvl("CRITICAL:my.module:disk full"), Some(Level::Critical));
        assert_eq!(lvl("INFO:root:started"), Some(Level::Info));
        assert_eq!(lvl("[2024-01-01 12:00:00,123] [ERROR] something broke"), Some(Level::Error));
        assert_eq!(lvl("[ERROR] something broke"), Some(Level::Error));
        assert_eq!(lvl("[2024-01-01 12:00:00] INFO server: ready"), Some(Level::Info));
    }

    #[test]
    fn rust_tracing() {
        assert_eq!(lvl("2024-01-01T12:00:00.123Z  WARN target: msg"), Some(Level::Warn));
        assert_eq!(lvl("2024-01-01T12:00:00.123456Z ERROR text_generation_router: oops"), Some(Level::Error));
        assert_eq!(lvl("2024-01-01T12:00:00.123Z  INFO request{id=1}: router: done"), Some(Level::Info));
        assert_eq!(lvl(" WARN llmdeck::engine: slow"), Some(Level::Warn));
        assert_eq!(lvl("TRACE llmdeck::engine: tick"), Some(Level::Trace));
    }

    #[test]
    fn rust_tracing_with_ansi_colours() {
        let line =
            "\x1b[2m2024-01-01T12:00:00.123Z\x1b[0m \x1b[33m WARN\x1b[0m \x1b[2mtarget\x1b[0m\x1b[2m:\x1b[0m msg";
        assert_eq!(lvl(line), Some(Level::Warn));
        let line = "\x1b[2m2024-01-01T12:00:00.123Z\x1b[0m \x1b[31mERROR\x1b[0m target: msg";
        assert_eq!(lvl(line), Some(Level::Error));
        assert_eq!(lvl("\x1b[32mINFO\x1b[0m:     started"), Some(Level::Info));
    }

    #[test]
    fn uvicorn() {
        assert_eq!(lvl(r#"INFO:     127.0.0.1:1234 - "GET /health HTTP/1.1" 200 OK"#), Some(Level::Info));
        assert_eq!(lvl("ERROR:    Exception in ASGI application"), Some(Level::Error));
        assert_eq!(lvl("WARNING:  Invalid HTTP request received."), Some(Level::Warn));
    }

    #[test]
    fn tracebacks_and_exceptions() {
        assert_eq!(lvl("Traceback (most recent call last):"), Some(Level::Error));
        assert_eq!(lvl("RuntimeError: CUDA error"), Some(Level::Error));
        assert_eq!(lvl("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"), Some(Level::Error));
        assert_eq!(lvl("torch.cuda.OutOfMemoryError: CUDA out of memory."), Some(Level::Error));
        assert_eq!(lvl("KeyError"), Some(Level::Error));
        assert_eq!(lvl("asyncio.exceptions.CancelledError"), Some(Level::Error));
        assert_eq!(lvl("ValueException: bad"), Some(Level::Error));
        assert_eq!(lvl("thread 'main' panicked at src/main.rs:2:5:"), Some(Level::Error));
    }

    #[test]
    fn other_common_formats() {
        assert_eq!(
            lvl(r#"time=2024-01-01T12:00:00.000Z level=INFO source=server.go:1 msg="listening""#),
            Some(Level::Info)
        );
        assert_eq!(lvl("level=warn msg=slow"), Some(Level::Warn));
        assert_eq!(lvl(r#"ts=1 level="error" msg="x""#), Some(Level::Error));
        assert_eq!(lvl("E1123 14:02:11.123456  1234 server.cc:12] bind failed"), Some(Level::Error));
        assert_eq!(lvl("I1123 14:02:11.123456  1234 server.cc:12] ok"), Some(Level::Info));
        assert_eq!(lvl("2024-01-01T12:00:00Z WRN slow disk"), Some(Level::Warn));
    }

    #[test]
    fn no_false_positives() {
        assert_eq!(lvl("Loading model INFO table from disk"), None);
        assert_eq!(lvl("the server printed ERROR once"), None);
        assert_eq!(lvl("INFORMATION: not a level"), None);
        assert_eq!(lvl("Info: mixed case is a message"), None);
        assert_eq!(lvl("ERRORS: 0"), None);
        assert_eq!(lvl("  File \"/x.py\", line 12, in <module>"), None);
        assert_eq!(lvl("    raise RuntimeError(\"x\")"), None);
        assert_eq!(lvl("error: lowercase tool output"), None);
        assert_eq!(lvl("MyErrorHandler started"), None);
        assert_eq!(lvl("Loading safetensors checkpoint shards:  50% 2/4"), None);
        assert_eq!(lvl("Avg prompt throughput: 4.1 tokens/s, ERROR rate 0"), None);
        assert_eq!(lvl("B1123 14:02:11 not glog"), None);
        assert_eq!(lvl("2024-01-01 12:00:00 request served in 3ms, no ERROR"), None);
        assert_eq!(lvl("(not a prefix)INFO x"), None);
        assert_eq!(lvl("msg=x loglevel=error"), None);
        assert_eq!(lvl(""), None);
        assert_eq!(lvl("   "), None);
    }

    #[test]
    fn only_the_head_is_scanned() {
        let far = format!("{} ERROR", "x".repeat(200));
        assert_eq!(lvl(&far), None);
        // A multi-byte character cut at the scan boundary is harmless.
        let wide = format!("INFO {}", "é".repeat(100));
        assert_eq!(lvl(&wide), Some(Level::Info));
    }

    #[test]
    fn ansi_stripping_handles_truncated_sequences() {
        assert_eq!(lvl("\x1b["), None);
        assert_eq!(lvl("\x1b[31"), None);
        assert_eq!(lvl("\x1b"), None);
    }

    proptest::proptest! {
        /// Any line: a level or none, and a header range inside the line on character
        /// boundaries that leaves text after it — never a panic.
        #[test]
        fn arbitrary_lines_never_panic_and_headers_stay_inside(line in "(INFO|WARN|ERROR|DEBUG|\\(E pid=1\\) |[0-9:T. Z-]|.){0,60}") {
            let _ = parse_level(&line);
            if let Some(r) = redundant_header(&line) {
                proptest::prop_assert!(r.start < r.end && r.end < line.len());
                proptest::prop_assert!(line.is_char_boundary(r.start) && line.is_char_boundary(r.end));
            }
            let _ = without_header(&line);
        }
    }
}
