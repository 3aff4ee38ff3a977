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
    let mut splitter = crate::logs::split::LineSplitter::new(MAX_LINE_BYTES);
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
