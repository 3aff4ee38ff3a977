//! Reading a model's stdout and stderr: line by line on dedicated threads (never on the async
//! runtime), every line to the log file in order, and batches to the engine. When the engine
//! cannot keep up, lines are dropped from the in-memory view only and counted.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::oneshot;

use crate::logs::file::RotatingFile;
use crate::logs::level::parse_level;
use crate::logs::oom::OomWatch;
use crate::logs::{LogBatch, LogLine, LogSource, Stream};
use crate::protocol::Event;

/// Longest line kept; the rest is cut and the line marked truncated.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest line kept in memory (the file keeps up to [`MAX_LINE_BYTES`]): with the line-count
/// bounds of queues and rings, this bounds their bytes too.
pub const MAX_VIEW_LINE_BYTES: usize = 16 * 1024;
/// Most lines sent in one event (bounds the memory a queued event can hold).
pub const MAX_BATCH_LINES: usize = 256;
const READ_CHUNK: usize = 64 * 1024;
const TRUNCATION_MARK: &[u8] = b" [truncated by llmdeck]";

/// What the capture threads of one model share.
#[derive(Clone)]
pub struct CaptureTarget {
    pub source: LogSource,
    /// Weak: a capture thread stuck on a pipe that some escaped grandchild holds open must not
    /// keep the engine's event channel alive.
    pub events: tokio::sync::mpsc::WeakSender<Event>,
    pub file: Arc<Mutex<RotatingFile>>,
    pub oom: Arc<Mutex<OomWatch>>,
    /// Lines not delivered to viewers since the last batch that got through.
    pub dropped: Arc<AtomicU64>,
}

impl CaptureTarget {
    /// Writes lines to the file, then offers them to the engine without ever waiting.
    pub fn deliver(&self, raw_lines: &[(Vec<u8>, bool)], stream: Stream) {
        if raw_lines.is_empty() {
            return;
        }
        {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            for (raw, truncated) in raw_lines {
                let result = if *truncated {
                    file.write_line(&[raw.as_slice(), TRUNCATION_MARK].concat())
                } else {
                    file.write_line(raw)
                };
                if let Err(e) = result {
                    tracing::warn!("writing the log of {}: {e}", self.source);
                    break;
                }
            }
            if let Err(e) = file.flush() {
                tracing::warn!("flushing the log of {}: {e}", self.source);
            }
        }
        let ts = Utc::now();
        let mut oom = self.oom.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<LogLine> = raw_lines
            .iter()
            .map(|(raw, truncated)| {
                let text = String::from_utf8_lossy(raw);
                let is_oom = stream != Stream::Internal && oom.observe(&text);
                let (text, cut) = cap_for_view(text.into_owned());
                LogLine { ts, stream, level: parse_level(&text), text, truncated: *truncated || cut, oom: is_oom }
            })
            .collect();
        drop(oom);
        self.offer(lines);
    }

    fn offer(&self, lines: Vec<LogLine>) {
        let count = lines.len() as u64;
        let dropped_before = self.dropped.swap(0, Ordering::Relaxed);
        let batch = LogBatch { source: self.source.clone(), lines, dropped_before };
        let sent = self.events.upgrade().is_some_and(|events| events.try_send(Event::Log(batch)).is_ok());
        if !sent {
            self.dropped.fetch_add(dropped_before + count, Ordering::Relaxed);
        }
    }
}

/// Cuts a line to [`MAX_VIEW_LINE_BYTES`] at a character boundary; true if it was cut.
fn cap_for_view(mut text: String) -> (String, bool) {
    if text.len() <= MAX_VIEW_LINE_BYTES {
        return (text, false);
    }
    let mut end = MAX_VIEW_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// Splits a byte stream into lines, capping each at [`MAX_LINE_BYTES`].
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// Inside an over-long line whose head was already emitted.
    skipping: bool,
    /// The last byte seen was a `\r` that ended a line: a `\n` right after it ends nothing.
    after_cr: bool,
}

impl LineSplitter {
    /// Feeds bytes; complete lines go to `out` with their truncation flag. Lines end at `\n`,
    /// `\r\n`, or a lone `\r` (progress bars redraw with it while a model loads).
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
                let truncated = line.len() > MAX_LINE_BYTES;
                line.truncate(MAX_LINE_BYTES);
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
        if self.pending.len() > MAX_LINE_BYTES {
            let mut head = std::mem::take(&mut self.pending);
            head.truncate(MAX_LINE_BYTES);
            out.push((head, true));
            self.skipping = true;
        }
    }

    /// The last line, if the stream ended without a newline.
    pub fn finish(&mut self, out: &mut Vec<(Vec<u8>, bool)>) {
        if !self.pending.is_empty() && !self.skipping {
            out.push((std::mem::take(&mut self.pending), false));
        }
    }
}

/// Starts a thread that captures one stream until EOF; `done` fires when every line is delivered.
pub fn spawn_capture(
    reader: impl Read + Send + 'static,
    stream: Stream,
    target: CaptureTarget,
) -> io::Result<oneshot::Receiver<()>> {
    let (done_tx, done) = oneshot::channel();
    let name = format!("llmdeck-capture-{}", target.source.name());
    std::thread::Builder::new().name(name).spawn(move || {
        capture(reader, stream, &target);
        let _ = done_tx.send(());
    })?;
    Ok(done)
}

fn capture(mut reader: impl Read, stream: Stream, target: &CaptureTarget) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading {stream:?} of {}: {e}", target.source);
                break;
            }
        };
        splitter.feed(&buf[..n], &mut lines);
        for chunk in lines.chunks(MAX_BATCH_LINES) {
            target.deliver(chunk, stream);
        }
        lines.clear();
    }
    splitter.finish(&mut lines);
    target.deliver(&lines, stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for p in parts {
            s.feed(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn joins_partial_lines_and_strips_crlf() {
        let out = split(&[b"hel", b"lo\r", b"\nwor", b"ld\n", b"10%\r50%\r100%\n", b"tail"]);
        let texts: Vec<&[u8]> = out.iter().map(|(l, _)| l.as_slice()).collect();
        assert_eq!(texts, [b"hello".as_slice(), b"world", b"10%", b"50%", b"100%", b"tail"]);
        assert!(out.iter().all(|(_, t)| !t));
    }

    #[test]
    fn caps_long_lines_and_resumes_after_them() {
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let out = split(&[&long[..MAX_LINE_BYTES / 2], &long[MAX_LINE_BYTES / 2..], b"\nnext\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.len(), MAX_LINE_BYTES);
        assert!(out[0].1, "marked truncated");
        assert_eq!(out[1], (b"next".to_vec(), false));
    }
}
