//! The cost of one Logs pane frame, with 2,000 and 20,000 lines held, on a 160x50 TestBackend.
//! A frame must cost the same however many lines are held: only visible lines are walked.
//!
//! Run: `cargo bench --bench log_frame` (needs `harness = false` for this bench in Cargo.toml).
//! Prints one row per scenario: mean, median and p99 per frame, and frames/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeZone, Utc};
use llmdeck::logs::level::parse_level;
use llmdeck::logs::{Level, LogBatch, LogLine, LogSource, Stream};
use llmdeck::tui::logs::{LevelFilter, LogView};
use llmdeck::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

const WIDTH: u16 = 160;
const HEIGHT: u16 = 50;
const WARMUP_FRAMES: usize = 200;
const FRAMES: usize = 3_000;

const SOURCES: [&str; 4] = ["qwen-7b", "llama-8b", "embed-small", "tinyllama"];

fn sample_line(i: u64) -> LogLine {
    let ts = Utc.timestamp_opt(1_732_370_531 + (i / 100) as i64, 0).single().unwrap_or_default();
    let (level, text, oom) = match i % 500 {
        0 => (
            Some(Level::Error),
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 1; 79.6 GiB total)".to_owned(),
            true,
        ),
        n if n % 50 == 7 => (
            Some(Level::Warn),
            format!("WARNING 11-23 14:02:11 [scheduler.py:1193] Sequence group {i} is preempted"),
            false,
        ),
        _ => (
            Some(Level::Info),
            format!(
                "INFO 11-23 14:02:11 [metrics.py:351] Avg prompt throughput: {}.1 tokens/s, Avg generation \
                 throughput: 812.4 tokens/s, Running: 31 reqs, Swapped: 0 reqs, Pending: 2 reqs, GPU KV cache \
                 usage: 61.2%, CPU KV cache usage: 0.0%. request id {i}",
                i % 97
            ),
            false,
        ),
    };
    LogLine { ts, stream: Stream::Stdout, level, text, truncated: false, oom }
}

/// A view holding `held` lines spread over four sources, fed in batches of 256 like the capture.
fn filled_view(held: usize) -> (LogView, u64) {
    let mut view = LogView::new(held);
    view.set_utc_offset(FixedOffset::east_opt(0));
    let mut next = 0u64;
    while (next as usize) < held {
        push_batch(&mut view, &mut next, 256);
    }
    (view, next)
}

fn push_batch(view: &mut LogView, next: &mut u64, n: u64) {
    let source = LogSource::Model(SOURCES[(*next / 256) as usize % SOURCES.len()].to_owned());
    let lines = (*next..*next + n).map(sample_line).collect();
    *next += n;
    view.push_owned(LogBatch { source, lines, dropped_before: 0 });
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Stats {
        mean: total / samples.len() as u32,
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

fn report(name: &str, held: usize, s: &Stats) {
    println!(
        "{name:<34} {held:>6} held   mean {:>7.1} µs   p50 {:>7.1} µs   p99 {:>7.1} µs   {:>7.0} frames/s",
        s.mean.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        1.0 / s.mean.as_secs_f64(),
    );
}

/// Whole frames through `Terminal::draw` (component render + TestBackend diff), with
/// `between` run untimed before each frame.
fn bench_terminal(view: &mut LogView, mut between: impl FnMut(&mut LogView)) -> Stats {
    let Ok(mut terminal) = Terminal::new(TestBackend::new(WIDTH, HEIGHT));
    let theme = Theme::new(true);
    let mut samples = Vec::with_capacity(FRAMES);
    for frame in 0..WARMUP_FRAMES + FRAMES {
        between(view);
        let started = Instant::now();
        let Ok(_) = terminal.draw(|f| view.render(f, f.area(), &theme, true));
        let took = started.elapsed();
        if frame >= WARMUP_FRAMES {
            samples.push(took);
        }
    }
    black_box(terminal.backend().buffer().area);
    stats(samples)
}

/// The component alone, drawing into a reset buffer.
fn bench_component(view: &mut LogView) -> Stats {
    let area = Rect::new(0, 0, WIDTH, HEIGHT);
    let mut buf = Buffer::empty(area);
    let theme = Theme::new(true);
    let mut samples = Vec::with_capacity(FRAMES);
    for frame in 0..WARMUP_FRAMES + FRAMES {
        buf.reset();
        let started = Instant::now();
        view.render_to(&mut buf, area, &theme, true);
        let took = started.elapsed();
        if frame >= WARMUP_FRAMES {
            samples.push(took);
        }
    }
    black_box(&buf);
    stats(samples)
}

fn press(view: &mut LogView, keys: &str) {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    for c in keys.chars() {
        let code = if c == '\n' { KeyCode::Enter } else { KeyCode::Char(c) };
        view.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    }
}

fn main() {
    println!("Logs pane frame cost, {WIDTH}x{HEIGHT} TestBackend, {FRAMES} frames per row");
    for held in [2_000, 20_000] {
        let (mut view, mut next) = filled_view(held);
        report("follow (terminal.draw)", held, &bench_terminal(&mut view, |_| {}));
        report("follow, +256 lines per frame", held, &bench_terminal(&mut view, |v| push_batch(v, &mut next, 256)));
        report("follow (component only)", held, &bench_component(&mut view));

        let (mut view, _) = filled_view(held);
        press(&mut view, "/throughput: 5\n"); // highlights on every line, paused mid-ring
        for _ in 0..10 {
            press(&mut view, "n");
        }
        report("paused + search highlights", held, &bench_terminal(&mut view, |_| {}));

        let (mut view, _) = filled_view(held);
        press(&mut view, "w");
        report("follow + wrap", held, &bench_terminal(&mut view, |_| {}));

        let (mut view, _) = filled_view(held);
        view.set_level_filter(LevelFilter::Error);
        report("errors only (1 in 500 lines)", held, &bench_terminal(&mut view, |_| {}));
        println!();
    }

    let (mut view, mut next) = filled_view(20_000);
    let lines = 2_000_000u64;
    let started = Instant::now();
    let until = next + lines;
    while next < until {
        push_batch(&mut view, &mut next, 256);
    }
    let took = started.elapsed();
    println!(
        "ingest into the view (push_owned, line construction included): {:.0} lines/s ({lines} lines in {:.2} s)",
        lines as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );

    let samples = [
        "INFO 11-23 14:02:11 [metrics.py:351] Avg prompt throughput: 4.1 tokens/s, Avg generation throughput: 812.4",
        "(EngineCore_DP0 pid=1234) WARNING 11-23 14:02:11 [scheduler.py:1193] Sequence group 7 is preempted",
        "2024-01-01 12:00:00,123 - vllm.engine.async_llm_engine - ERROR - Engine background task failed",
        "\x1b[2m2024-01-01T12:00:00.123Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mtext_generation_router\x1b[0m: ready",
        r#"INFO:     127.0.0.1:51234 - "GET /health HTTP/1.1" 200 OK"#,
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 1; 79.6 GiB total)",
        "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:03<00:03,  1.52s/it]",
        "  File \"/usr/lib/python3/site-packages/vllm/engine.py\", line 12, in run_engine_core",
    ];
    let rounds = 500_000usize;
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..rounds * samples.len() {
        found += usize::from(parse_level(black_box(samples[i % samples.len()])).is_some());
    }
    let took = started.elapsed();
    let parsed = rounds * samples.len();
    println!(
        "parse_level over {} formats: {:.1} M lines/s ({parsed} lines, {found} with a level)",
        samples.len(),
        parsed as f64 / took.as_secs_f64() / 1e6
    );
}
