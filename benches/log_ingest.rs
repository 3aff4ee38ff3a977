//! Log ingestion throughput: a child writing lines as fast as it can, captured by llmdeck
//! (child → log file + in-memory ring, the supervisor's real capture path), next to the same
//! child piped into `cat > file`, in the same run.
//!
//! `cargo bench --bench log_ingest` (LINES=2000000 by default).

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use llmdeck::logs::file::RotatingFile;
use llmdeck::logs::oom::OomWatch;
use llmdeck::logs::ring::Ring;
use llmdeck::logs::{LogLine, LogSource, Stream};
use llmdeck::protocol::Event;
use llmdeck::supervisor::capture::{CaptureTarget, spawn_capture};

fn main() {
    let lines: u64 = std::env::var("LINES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    // Warm the page cache and the binary.
    let _ = baseline(&dir.path().join("warm.log"), lines / 10);

    let base = (0..3).map(|i| baseline(&dir.path().join(format!("cat-{i}.log")), lines)).fold(f64::MAX, f64::min);
    let ours = (0..3).map(|i| llmdeck_capture(dir.path(), &format!("ours-{i}"), lines)).fold(f64::MAX, f64::min);
    let (base_rate, our_rate) = (lines as f64 / base, lines as f64 / ours);
    println!("lines: {lines}");
    println!("cat > file:        {:>12.0} lines/s ({base:.3} s, best of 3)", base_rate);
    println!("llmdeck capture:   {:>12.0} lines/s ({ours:.3} s, best of 3; file + ring + OOM/level scan)", our_rate);
    println!("ratio:             {:>12.2}x (goal >= 0.5x)", our_rate / base_rate);
}

fn seq(lines: u64) -> Command {
    let mut c = Command::new("seq");
    c.arg("-f").arg("INFO 11-23 14:02:11 [engine.py:12] flood line %.0f").arg("1").arg(lines.to_string());
    c
}

fn baseline(path: &std::path::Path, lines: u64) -> f64 {
    let start = Instant::now();
    let file = std::fs::File::create(path).expect("create");
    let mut producer = seq(lines).stdout(Stdio::piped()).spawn().expect("seq");
    let mut cat = Command::new("cat").stdin(producer.stdout.take().expect("pipe")).stdout(file).spawn().expect("cat");
    producer.wait().expect("seq");
    cat.wait().expect("cat");
    start.elapsed().as_secs_f64()
}

fn llmdeck_capture(dir: &std::path::Path, name: &str, lines: u64) -> f64 {
    let start = Instant::now();
    let (events, mut rx) = tokio::sync::mpsc::channel(llmdeck::engine::EVENT_QUEUE);
    let file = RotatingFile::open(dir, name, 1 << 40, 1).expect("log file");
    let target = CaptureTarget {
        source: LogSource::Model(name.into()),
        events: events.downgrade(),
        file: Arc::new(Mutex::new(file)),
        oom: Arc::new(Mutex::new(OomWatch::default())),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let mut child = seq(lines).stdout(Stdio::piped()).spawn().expect("seq");
    let done = spawn_capture(child.stdout.take().expect("pipe"), Stream::Stdout, target).expect("capture");
    // The viewer side: a bounded ring, as the Logs pane keeps.
    let viewer = std::thread::spawn(move || {
        let mut ring: Ring<LogLine> = Ring::new(20_000);
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        while let Some(Event::Log(batch)) = rx.blocking_recv() {
            dropped += batch.dropped_before;
            delivered += batch.lines.len() as u64;
            for line in batch.lines {
                ring.push(line);
            }
        }
        (delivered, dropped, ring.len())
    });
    child.wait().expect("seq");
    let _ = done.blocking_recv();
    drop(events);
    let elapsed = start.elapsed().as_secs_f64();
    let (delivered, dropped, held) = viewer.join().expect("viewer");
    eprintln!("  {name}: {delivered} lines to the ring, {dropped} dropped from the view, {held} held");
    elapsed
}
