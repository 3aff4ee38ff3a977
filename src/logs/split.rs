//! Splitting a byte stream into lines: what every captured output (a model's, a remote
//! command's over SSH) goes through, so they agree on what a line is.

/// Splits a byte stream into lines at `\n`, `\r\n` or a lone `\r` (progress bars redraw with
/// it while a model loads), capping each line at a byte budget: the head of an over-long line
/// is kept (marked truncated), the rest skipped up to its end.
pub struct LineSplitter {
    max_line_bytes: usize,
    pending: Vec<u8>,
    /// Inside an over-long line whose head was already emitted.
    skipping: bool,
    /// The last byte seen was a `\r` that ended a line: a `\n` right after it ends nothing.
    after_cr: bool,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter { max_line_bytes, pending: Vec::new(), skipping: false, after_cr: false }
    }

    /// Feeds bytes; complete lines go to `out` with their truncation flag.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<(Vec<u8>, bool)>) {
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            let (head, terminator, rest) = (&bytes[..end], bytes[end], &bytes[end + 1..]);
            let crlf_tail = self.after_cr && end == 0 && terminator == b'\n';
            self.after_cr = terminator == b'\r';
            bytes = rest;
            if crlf_tail {
                continue;
            }
            if self.skipping {
                self.skipping = false;
            } else {
                self.pending.extend_from_slice(head);
                let mut line = std::mem::take(&mut self.pending);
                let truncated = line.len() > self.max_line_bytes;
                line.truncate(self.max_line_bytes);
                out.push((line, truncated));
            }
        }
        if !bytes.is_empty() {
            self.after_cr = false;
        }
        if self.skipping {
            return;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > self.max_line_bytes {
            let mut head = std::mem::take(&mut self.pending);
            head.truncate(self.max_line_bytes);
            out.push((head, true));
            self.skipping = true;
        }
    }

    /// The last line, if the stream ended without a line end.
    pub fn finish(&mut self, out: &mut Vec<(Vec<u8>, bool)>) {
        if !self.pending.is_empty() && !self.skipping {
            out.push((std::mem::take(&mut self.pending), false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(max: usize, parts: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for p in parts {
            s.feed(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    /// The same split, written the obvious way over the whole input at once.
    fn reference(max: usize, input: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Vec::new();
        let mut current = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' | b'\n' => {
                    if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    lines.push(std::mem::take(&mut current));
                }
                b => current.push(b),
            }
            i += 1;
        }
        if !current.is_empty() {
            lines.push(current);
        }
        lines
            .into_iter()
            .map(|mut l| {
                let cut = l.len() > max;
                l.truncate(max);
                (l, cut)
            })
            .collect()
    }

    #[test]
    fn joins_partial_lines_and_strips_crlf() {
        let out = split(1024, &[b"hel", b"lo\r", b"\nwor", b"ld\n", b"10%\r50%\r100%\n", b"tail"]);
        let texts: Vec<&[u8]> = out.iter().map(|(l, _)| l.as_slice()).collect();
        assert_eq!(texts, [b"hello".as_slice(), b"world", b"10%", b"50%", b"100%", b"tail"]);
        assert!(out.iter().all(|(_, t)| !t));
    }

    #[test]
    fn caps_long_lines_and_resumes_after_them() {
        let long = [b'x'; 110];
        let out = split(100, &[&long[..50], &long[50..], b"\nnext\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.len(), 100);
        assert!(out[0].1, "marked truncated");
        assert_eq!(out[1], (b"next".to_vec(), false));
    }

    proptest! {
        /// However the bytes arrive, the lines are those of the whole input: every byte is a
        /// line's byte, a line end, or past a line's cap (and that line says it was cut).
        #[test]
        fn chunking_never_changes_the_lines(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max in 1usize..40,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for c in cuts {
                parts.push(&input[from..c]);
                from = c;
            }
            parts.push(&input[from..]);
            let got = split(max, &parts);
            prop_assert_eq!(&got, &reference(max, &input));
            for (line, cut) in &got {
                prop_assert!(line.len() <= max);
                prop_assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
                prop_assert!(*cut || line.len() < max || line.len() == max);
            }
        }
    }
}
