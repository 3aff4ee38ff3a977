//! CUDA out-of-memory detection in captured lines (patterns from gpu-failure-lines.md).

/// Substrings that mean the GPU ran out of memory, lower-cased (matching is case-insensitive).
const OOM_PATTERNS: &[&str] = &[
    "cuda out of memory",
    "torch.outofmemoryerror",
    "torch.cuda.outofmemoryerror",
    "cuda error: out of memory",
    "cudaerrormemoryallocation",
    "no available memory for the cache blocks",
    "larger than the available kv cache memory",
    "less than desired gpu memory utilization",
];

/// Lines that only point at a root cause printed earlier.
const POINTER_PATTERNS: &[&str] =
    &["see root cause above", "enginedeaderror", "see stack trace (above) for the root cause"];

/// How many lines back an OOM line still explains a crash.
pub const LOOKBACK_LINES: u64 = 500;

/// Whether a line is itself an out-of-memory report.
pub fn is_oom_line(line: &str) -> bool {
    // Fast path: every pattern contains "memory" or "cuda" in some case.
    let lower = line.to_ascii_lowercase();
    (lower.contains("memory") || lower.contains("cuda")) && OOM_PATTERNS.iter().any(|p| lower.contains(p))
}

/// Whether a line only points at an earlier root cause.
pub fn is_pointer_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    POINTER_PATTERNS.iter().any(|p| lower.contains(p))
}

/// The most of an OOM line kept in events, state and crash reasons: enough for the message,
/// the allocation and the totals; a multi-megabyte line (a dumped tensor) is cut.
pub const MAX_OOM_LINE_BYTES: usize = 4 << 10;

/// `line` without trailing whitespace, at most [`MAX_OOM_LINE_BYTES`] (then cut with `…`).
pub fn capped(line: &str) -> String {
    let line = line.trim_end();
    if line.len() <= MAX_OOM_LINE_BYTES {
        return line.to_owned();
    }
    let mut end = MAX_OOM_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Remembers the most recent OOM line of one process run, so the crash can be labelled.
#[derive(Debug, Default)]
pub struct OomWatch {
    lines_seen: u64,
    last_oom: Option<(u64, String)>,
}

impl OomWatch {
    /// Looks at one line; returns true if it is an OOM line.
    pub fn observe(&mut self, line: &str) -> bool {
        self.lines_seen += 1;
        if is_oom_line(line) {
            self.last_oom = Some((self.lines_seen, capped(line)));
            return true;
        }
        false
    }

    /// The OOM line that explains a crash now: one seen in the last [`LOOKBACK_LINES`] lines.
    /// Pointer lines ("see root cause above") need no special case: they are explained by the
    /// same look-back, and without an OOM line above them they do not make the crash an OOM.
    pub fn explaining_line(&self) -> Option<&str> {
        let (at, line) = self.last_oom.as_ref()?;
        (self.lines_seen - at < LOOKBACK_LINES).then_some(line.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_pattern_matches_in_context() {
        let lines = [
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)",
            "(EngineCore_DP0 pid=1234) ERROR 11-23 14:02:11 [core.py:123] torch.OutOfMemoryError: oops",
            "torch.cuda.OutOfMemoryError: something",
            "RuntimeError: CUDA error: out of memory",
            "torch.AcceleratorError: CUDA error: out of memory",
            "cudaErrorMemoryAllocation at allocator.cpp:12",
            "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
            "ValueError: To serve at least one request with max seq len (32768), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory (1.2 GiB).",
            "ValueError: Free memory on device (10.1/79.2 GiB) on startup is less than desired GPU memory utilization (0.9, 71.3 GiB).",
            "cuda OUT OF MEMORY",
        ];
        for line in lines {
            assert!(is_oom_line(line), "should match: {line}");
        }
    }

    #[test]
    fn healthy_lines_are_not_oom() {
        let lines = [
            "INFO 11-23 14:02:11 [arg_utils.py:1] gpu_memory_utilization=0.9, max_model_len=4096",
            "INFO Memory profiling takes 3.2 seconds",
            "INFO model weights take 14.99GiB; non_torch_memory takes 0.1GiB",
            "INFO # GPU blocks: 27258, # CPU blocks: 2048",
            "INFO Maximum concurrency for 4096 tokens per request: 53.2x",
        ];
        for line in lines {
            assert!(!is_oom_line(line), "should not match: {line}");
        }
    }

    #[test]
    fn pointer_lines_look_back_for_the_root_cause() {
        let mut watch = OomWatch::default();
        watch.observe("Traceback (most recent call last):");
        watch.observe("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB");
        watch.observe("  File \"x.py\", line 1");
        assert!(is_pointer_line("RuntimeError: Engine core initialization failed. See root cause above."));
        watch.observe("RuntimeError: Engine core initialization failed. See root cause above.");
        assert_eq!(
            watch.explaining_line(),
            Some("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
        );

        let mut no_oom = OomWatch::default();
        no_oom.observe("ValueError: bad model name");
        no_oom.observe("RuntimeError: Engine core initialization failed. See root cause above.");
        assert_eq!(no_oom.explaining_line(), None);
    }

    #[test]
    fn an_old_oom_line_does_not_explain_a_later_crash() {
        let mut watch = OomWatch::default();
        watch.observe("CUDA out of memory");
        for _ in 0..LOOKBACK_LINES {
            watch.observe("INFO serving");
        }
        assert_eq!(watch.explaining_line(), None);
    }

    #[test]
    fn a_huge_oom_line_is_kept_capped() {
        let huge = format!("torch.OutOfMemoryError: CUDA out of memory. {}", "é".repeat(1 << 20));
        let mut watch = OomWatch::default();
        assert!(watch.observe(&huge));
        let kept = watch.explaining_line().expect("kept");
        assert!(kept.len() <= MAX_OOM_LINE_BYTES + '…'.len_utf8(), "{}", kept.len());
        assert!(kept.starts_with("torch.OutOfMemoryError") && kept.ends_with('…'));
    }
}
