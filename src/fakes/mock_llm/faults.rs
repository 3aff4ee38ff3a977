//! Fault injection: per-request draws (errors, malformed bodies) and the process-wide timers
//! (crash, OOM, hang).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr};

use super::console;
use super::text::mix64;

/// Weighted HTTP error statuses, parsed from `429:1,500:1,503:1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorMix {
    /// (status, cumulative weight), ascending.
    cumulative: Vec<(u16, f64)>,
}

impl ErrorMix {
    /// `STATUS[:WEIGHT],...`; a missing weight is 1. Statuses must be 4xx or 5xx.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut cumulative: Vec<(u16, f64)> = Vec::new();
        let mut total = 0.0;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (status, weight) = match entry.split_once(':') {
                Some((status, weight)) => (status.trim(), weight.trim()),
                None => (entry, "1"),
            };
            let status: u16 = status
                .parse()
                .ok()
                .filter(|s| (400..=599).contains(s))
                .ok_or_else(|| format!("`{status}` in `{spec}` is not an HTTP error status (400-599)"))?;
            let weight: f64 = weight
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w > 0.0)
                .ok_or_else(|| format!("weight `{weight}` in `{spec}` is not a positive number"))?;
            if cumulative.iter().any(|(s, _)| *s == status) {
                return Err(format!("status {status} is listed twice in `{spec}`"));
            }
            total += weight;
            cumulative.push((status, total));
        }
        if cumulative.is_empty() {
            return Err("the error mix is empty; try `429:1,500:1,503:1`".into());
        }
        Ok(Self { cumulative })
    }

    /// The status for a uniform draw `u` in [0, 1).
    pub fn pick(&self, u: f64) -> u16 {
        let total = self.cumulative.last().map_or(1.0, |(_, w)| *w);
        let target = u * total;
        self.cumulative.iter().find(|(_, w)| target < *w).or(self.cumulative.last()).map_or(500, |(s, _)| *s)
    }
}

/// `0.25` → 0.25; a probability in [0, 1].
pub fn parse_probability(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| format!("`{s}` is not a probability between 0 and 1"))
}

/// A finite, non-negative rate (tokens/s, lines/s).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| format!("`{s}` is not a non-negative number"))
}

/// What happens to one completion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Nothing,
    /// Answer with this HTTP error status in OpenAI's error envelope.
    Error(u16),
    /// Answer 200 with a broken JSON body (or a broken SSE chunk).
    Malformed,
}

/// Per-request fault settings and the process-wide "hung" flag. Lock-free: draws hash the
/// request's sequence number with the seed, so a given seed reproduces the same pattern by
/// arrival order.
#[derive(Debug)]
pub struct Faults {
    pub seed: u64,
    sequence: AtomicU64,
    pub error_rate: f64,
    pub error_mix: ErrorMix,
    pub malformed_rate: f64,
    /// Streams stall for ever after this many content tokens (non-streaming: never answer).
    pub stall_after_tokens: Option<u32>,
    /// Streams are cut (connection closed, no `[DONE]`) after this many content tokens
    /// (non-streaming: the body is cut off half-way).
    pub drop_after_tokens: Option<u32>,
    hung: AtomicBool,
}

impl Faults {
    pub fn new(
        seed: u64,
        error_rate: f64,
        error_mix: ErrorMix,
        malformed_rate: f64,
        stall_after_tokens: Option<u32>,
        drop_after_tokens: Option<u32>,
    ) -> Self {
        Self {
            seed,
            sequence: AtomicU64::new(0),
            error_rate,
            error_mix,
            malformed_rate,
            stall_after_tokens,
            drop_after_tokens,
            hung: AtomicBool::new(false),
        }
    }

    /// Decides the fate of the next completion request.
    pub fn draw(&self) -> Injected {
        if self.error_rate <= 0.0 && self.malformed_rate <= 0.0 {
            return Injected::Nothing;
        }
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        if self.unit(n, 1) < self.error_rate {
            return Injected::Error(self.error_mix.pick(self.unit(n, 2)));
        }
        if self.unit(n, 3) < self.malformed_rate {
            return Injected::Malformed;
        }
        Injected::Nothing
    }

    /// A uniform number in [0, 1) for request `n` and purpose `salt`.
    fn unit(&self, n: u64, salt: u64) -> f64 {
        let bits = mix64(self.seed ^ mix64(n.wrapping_mul(4).wrapping_add(salt)));
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn is_hung(&self) -> bool {
        self.hung.load(Ordering::Relaxed)
    }

    pub fn hang(&self) {
        self.hung.store(true, Ordering::Relaxed);
    }
}

/// The process-wide faults, timed from process start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    pub crash_after: Option<Duration>,
    pub exit_code: u8,
    pub oom_after: Option<Duration>,
    pub hang_after: Option<Duration>,
}

/// Starts one OS thread per armed timer: they fire even if the async runtime is busy or hung,
/// and exiting from them needs no cooperation from the server.
pub fn spawn_timers(timers: Timers, faults: Arc<Faults>, started: Instant) -> Result<()> {
    if let Some(after) = timers.crash_after {
        let code = timers.exit_code;
        spawn_at(started + after, "mock-llm-crash", move || {
            console::crash_line(code);
            std::process::exit(i32::from(code));
        })?;
    }
    if let Some(after) = timers.oom_after {
        spawn_at(started + after, "mock-llm-oom", || {
            let mut stderr = std::io::stderr().lock();
            // Nothing useful to do if stderr is gone: we exit either way.
            let _ = stderr.write_all(console::oom_traceback(std::process::id()).as_bytes());
            let _ = stderr.flush();
            std::process::exit(1);
        })?;
    }
    if let Some(after) = timers.hang_after {
        spawn_at(started + after, "mock-llm-hang", move || faults.hang())?;
    }
    Ok(())
}

fn spawn_at(deadline: Instant, name: &str, action: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            action();
        })
        .wrap_err_with(|| format!("starting the {name} timer thread"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mix_parses_weights_and_defaults() {
        let mix = ErrorMix::parse("429:1,500:1,503:2").unwrap();
        assert_eq!(mix.pick(0.0), 429);
        assert_eq!(mix.pick(0.3), 500);
        assert_eq!(mix.pick(0.5), 503);
        assert_eq!(mix.pick(0.999), 503);
        assert_eq!(ErrorMix::parse("503").unwrap().pick(0.7), 503);
    }

    #[test]
    fn error_mix_rejects_nonsense() {
        assert!(ErrorMix::parse("").is_err());
        assert!(ErrorMix::parse("200:1").is_err());
        assert!(ErrorMix::parse("429:0").is_err());
        assert!(ErrorMix::parse("429:x").is_err());
        assert!(ErrorMix::parse("429,429").is_err());
    }

    #[test]
    fn probabilities_and_rates_are_validated() {
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("NaN").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
        assert_eq!(parse_rate("20"), Ok(20.0));
    }

    fn faults(seed: u64, error_rate: f64, malformed_rate: f64) -> Faults {
        let mix = ErrorMix::parse("429:1,500:1,503:1").unwrap();
        Faults::new(seed, error_rate, mix, malformed_rate, None, None)
    }

    #[test]
    fn draws_follow_the_rates_roughly() {
        let f = faults(7, 0.3, 0.0);
        let errors = (0..10_000).filter(|_| matches!(f.draw(), Injected::Error(_))).count();
        assert!((2_700..3_300).contains(&errors), "{errors}");
    }

    #[test]
    fn draws_use_every_status_of_the_mix() {
        let f = faults(1, 1.0, 0.0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            if let Injected::Error(status) = f.draw() {
                seen.insert(status);
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [429, 500, 503]);
    }

    #[test]
    fn the_same_seed_gives_the_same_pattern() {
        let (a, b) = (faults(42, 0.5, 0.2), faults(42, 0.5, 0.2));
        let pattern_a: Vec<Injected> = (0..100).map(|_| a.draw()).collect();
        let pattern_b: Vec<Injected> = (0..100).map(|_| b.draw()).collect();
        assert_eq!(pattern_a, pattern_b);
        assert!(pattern_a.contains(&Injected::Malformed));
    }
}
