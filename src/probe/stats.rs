//! Aggregates: exact nearest-rank percentiles, counts per class, the report and live progress.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::protocol::{
    ClientDelay, PercentileMethod, Percentiles, ProbeProgress, ProbeReport, ReportExtra, nearest_rank,
};

use super::outcome::Outcome;
use super::request::RequestRecord;

/// How many distinct error messages are kept per class.
pub const ERRORS_PER_CLASS: usize = 5;
/// Error messages longer than this are cut (a server may echo a whole HTML page).
const ERROR_MESSAGE_CHARS: usize = 300;

pub(crate) fn micros_to_ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// Saturating: 71 minutes is far beyond any request timeout.
pub fn to_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Samples kept exactly per figure (4 bytes each); past it, a histogram.
pub const EXACT_SAMPLES: usize = 250_000;

/// The samples of one figure (µs): every one kept while there are at most [`EXACT_SAMPLES`],
/// so percentiles are exact; past it an HDR histogram (3 significant digits: within 0.1%), so
/// a long run's memory stays bounded.
#[derive(Debug)]
pub enum Samples {
    Exact(Vec<u32>),
    Hdr(Box<hdrhistogram::Histogram<u32>>),
}

impl Default for Samples {
    fn default() -> Self {
        Samples::Exact(Vec::new())
    }
}

impl Samples {
    pub fn push(&mut self, us: u32) {
        if let Samples::Exact(all) = self {
            if all.len() < EXACT_SAMPLES {
                all.push(us);
                return;
            }
            *self = Samples::Hdr(Box::new(histogram_of(all)));
        }
        if let Samples::Hdr(h) = self {
            h.saturating_record(u64::from(us));
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Samples::Exact(_))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Samples::Exact(all) => all.is_empty(),
            Samples::Hdr(h) => h.is_empty(),
        }
    }

    fn median_ms(&self) -> Option<f64> {
        match self {
            Samples::Exact(all) => median_ms(all),
            Samples::Hdr(h) => (!h.is_empty()).then(|| hdr_ms(h.value_at_quantile(0.5))),
        }
    }

    fn percentiles(self) -> Percentiles {
        match self {
            Samples::Exact(mut all) => Percentiles::of_micros(&mut all),
            Samples::Hdr(h) if h.is_empty() => Percentiles::default(),
            Samples::Hdr(h) => {
                let at = |q: f64| Some(hdr_ms(h.value_at_quantile(q)));
                Percentiles { p50: at(0.5), p90: at(0.9), p95: at(0.95), p99: at(0.99), max: Some(hdr_ms(h.max())) }
            }
        }
    }
}

/// A histogram of 1 µs to 71 minutes (any u32 of µs) at 3 significant digits, holding `all`.
fn histogram_of(all: &[u32]) -> hdrhistogram::Histogram<u32> {
    let mut h = hdrhistogram::Histogram::<u32>::new_with_bounds(1, u64::from(u32::MAX), 3).unwrap_or_else(|_| {
        hdrhistogram::Histogram::<u32>::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid"))
    });
    for us in all {
        h.saturating_record(u64::from(*us));
    }
    h
}

fn hdr_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Folds request records into counts and samples (see [`Samples`] for how percentiles are
/// kept).
#[derive(Debug, Default)]
pub struct Aggregator {
    requests: u64,
    outcomes: BTreeMap<Outcome, u64>,
    latency_us: Samples,
    ttft_us: Samples,
    itl_us: Samples,
    /// Against a server that stamps its chunks only (see [`ClientDelay`]).
    ttft_error_us: Samples,
    itl_error_us: Samples,
    delivery_us: Samples,
    errors: BTreeMap<Outcome, Vec<String>>,
    extra: ReportExtra,
}

impl Aggregator {
    pub fn add(&mut self, record: &RequestRecord) {
        self.requests += 1;
        *self.outcomes.entry(record.outcome).or_default() += 1;
        if let Some(message) = &record.error {
            self.note_error(record.outcome, message);
        }
        if record.outcome != Outcome::Success {
            return;
        }
        self.latency_us.push(to_micros(record.latency));
        if let Some(ttft) = record.ttft {
            self.ttft_us.push(to_micros(ttft));
        }
        for gap in &record.itl {
            self.itl_us.push(to_micros(*gap));
        }
        self.add_client_delay(record);
        // Counts come from the server: a nonsense one saturates instead of overflowing.
        self.extra.output_tokens = self.extra.output_tokens.saturating_add(record.completion_tokens);
        self.extra.output_tokens_estimated |= record.tokens_estimated;
        self.extra.prompt_tokens = self.extra.prompt_tokens.saturating_add(record.prompt_tokens.unwrap_or(0));
        if let Some(matched) = record.answer_matched {
            self.extra.answers_checked += 1;
            self.extra.answers_matched += u64::from(matched);
        }
    }

    fn add_client_delay(&mut self, record: &RequestRecord) {
        if let Some(error) = record.ttft_error {
            self.ttft_error_us.push(to_micros(error));
        }
        for delay in &record.delivery {
            self.delivery_us.push(to_micros(*delay));
        }
        // The gap measured here minus the server's is the change in delivery delay.
        for pair in record.delivery.windows(2) {
            self.itl_error_us.push(to_micros(pair[1].abs_diff(pair[0])));
        }
    }

    fn note_error(&mut self, outcome: Outcome, message: &str) {
        let list = self.errors.entry(outcome).or_default();
        if list.len() >= ERRORS_PER_CLASS {
            return;
        }
        let message: String = if message.chars().count() > ERROR_MESSAGE_CHARS {
            let cut: String = message.chars().take(ERROR_MESSAGE_CHARS).collect();
            format!("{cut}…")
        } else {
            message.to_owned()
        };
        if !list.contains(&message) {
            list.push(message);
        }
    }

    pub fn done(&self) -> u64 {
        self.requests
    }

    pub fn progress(&self, elapsed: Duration, planned: Option<u64>, in_flight: u64) -> ProbeProgress {
        let secs = elapsed.as_secs_f64();
        ProbeProgress {
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            done: self.requests,
            planned,
            in_flight,
            outcomes: self.outcomes.clone(),
            ttft_p50_ms: self.ttft_us.median_ms(),
            requests_per_s: per_second(self.requests, secs),
            output_tokens_per_s: per_second(self.extra.output_tokens, secs),
            finished: false,
        }
    }

    pub fn report(self, target: String, model: String, duration: Duration) -> ProbeReport {
        let secs = duration.as_secs_f64();
        let mut outcomes: BTreeMap<Outcome, u64> = Outcome::ALL.iter().map(|o| (*o, 0)).collect();
        outcomes.extend(self.outcomes);
        let extra = self.extra;
        let percentiles = if [
            &self.latency_us,
            &self.ttft_us,
            &self.itl_us,
            &self.ttft_error_us,
            &self.itl_error_us,
            &self.delivery_us,
        ]
        .iter()
        .all(|s| s.is_exact())
        {
            PercentileMethod::Exact
        } else {
            PercentileMethod::Hdr
        };
        ProbeReport {
            target,
            model,
            requests: self.requests,
            duration_s: secs,
            outcomes,
            client_delay: (!self.delivery_us.is_empty()).then(|| ClientDelay {
                ttft_error_ms: self.ttft_error_us.percentiles(),
                itl_error_ms: self.itl_error_us.percentiles(),
                delivery_ms: self.delivery_us.percentiles(),
            }),
            percentiles,
            latency_ms: self.latency_us.percentiles(),
            ttft_ms: self.ttft_us.percentiles(),
            itl_ms: self.itl_us.percentiles(),
            requests_per_s: per_second(self.requests, secs),
            output_tokens_per_s: per_second(extra.output_tokens, secs),
            expected_answer_rate: (extra.answers_checked > 0)
                .then(|| extra.answers_matched as f64 / extra.answers_checked as f64),
            errors: self.errors,
            extra,
        }
    }
}

fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The nearest-rank median without sorting everything (selection on a copy).
fn median_ms(samples: &[u32]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut copy = samples.to_vec();
    let rank = (copy.len() as f64 * 0.5).ceil() as usize;
    let (_, median, _) = copy.select_nth_unstable(rank.max(1) - 1);
    Some(micros_to_ms(*median))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome, latency_ms: u64) -> RequestRecord {
        RequestRecord { outcome, latency: Duration::from_millis(latency_ms), ..RequestRecord::default() }
    }

    #[test]
    fn client_delay_comes_from_stamped_chunks_only() {
        let ms = Duration::from_millis;
        let mut plain = Aggregator::default();
        plain.add(&record(Outcome::Success, 10));
        assert!(plain.report("t".into(), "m".into(), ms(1000)).client_delay.is_none());

        let mut stamped = Aggregator::default();
        stamped.add(&RequestRecord {
            delivery: vec![ms(1), ms(3), ms(2)],
            ttft_error: Some(ms(4)),
            ..record(Outcome::Success, 10)
        });
        let delay = stamped.report("t".into(), "m".into(), ms(1000)).client_delay.expect("stamped");
        // Gaps measured here differ from the server's by the change in delivery delay: 2, 1.
        assert_eq!((delay.itl_error_ms.p50, delay.itl_error_ms.max), (Some(1.0), Some(2.0)));
        assert_eq!((delay.delivery_ms.p50, delay.delivery_ms.max), (Some(2.0), Some(3.0)));
        assert_eq!(delay.ttft_error_ms.p50, Some(4.0));
    }

    #[test]
    fn nearest_rank_on_one_to_ten() {
        let s: Vec<u32> = (1..=10).collect();
        assert_eq!(nearest_rank(&s, 0.0), Some(1));
        assert_eq!(nearest_rank(&s, 10.0), Some(1));
        assert_eq!(nearest_rank(&s, 11.0), Some(2));
        assert_eq!(nearest_rank(&s, 50.0), Some(5));
        assert_eq!(nearest_rank(&s, 90.0), Some(9));
        assert_eq!(nearest_rank(&s, 95.0), Some(10));
        assert_eq!(nearest_rank(&s, 99.0), Some(10));
        assert_eq!(nearest_rank(&s, 100.0), Some(10));
    }

    #[test]
    fn nearest_rank_on_small_and_empty_sets() {
        assert_eq!(nearest_rank(&[], 50.0), None);
        assert_eq!(nearest_rank(&[7], 50.0), Some(7));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
        // Wikipedia's example: {15, 20, 35, 40, 50}.
        let w = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&w, 5.0), Some(15));
        assert_eq!(nearest_rank(&w, 30.0), Some(20));
        assert_eq!(nearest_rank(&w, 40.0), Some(20));
        assert_eq!(nearest_rank(&w, 50.0), Some(35));
        assert_eq!(nearest_rank(&w, 100.0), Some(50));
        // An even count: the median is the lower middle value, never an interpolation.
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 50.0), Some(2));
    }

    #[test]
    fn percentiles_of_a_hundred_samples_pick_exact_ranks() {
        // 1..=100 ms in shuffled order.
        let mut us: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let p = Percentiles::of_micros(&mut us);
        assert_eq!(p.p50, Some(50.0));
        assert_eq!(p.p90, Some(90.0));
        assert_eq!(p.p95, Some(95.0));
        assert_eq!(p.p99, Some(99.0));
        assert_eq!(p.max, Some(100.0));
        assert_eq!(Percentiles::of_micros(&mut []), Percentiles::default());
    }

    #[test]
    fn median_selection_agrees_with_nearest_rank() {
        let samples = [9, 1, 8, 2, 7, 3, 6, 4, 5, 10];
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        assert_eq!(median_ms(&samples), nearest_rank(&sorted, 50.0).map(micros_to_ms));
        assert_eq!(median_ms(&[]), None);
    }

    #[test]
    fn report_counts_every_class_and_takes_latency_from_successes_only() {
        let mut agg = Aggregator::default();
        for ms in [10, 20, 30, 40] {
            agg.add(&record(Outcome::Success, ms));
        }
        let mut limited = record(Outcome::RateLimited, 1);
        limited.error = Some("HTTP 429: slow down".into());
        agg.add(&limited.clone());
        agg.add(&limited);
        let mut timeout = record(Outcome::TimeoutTotal, 5000);
        timeout.error = Some("no answer within 5s".into());
        agg.add(&timeout);

        let report = agg.report("http://x".into(), "m".into(), Duration::from_secs(2));
        assert_eq!(report.requests, 7);
        assert_eq!(report.outcomes.len(), Outcome::ALL.len());
        assert_eq!(report.count(Outcome::Success), 4);
        assert_eq!(report.count(Outcome::RateLimited), 2);
        assert_eq!(report.count(Outcome::TimeoutTotal), 1);
        assert_eq!(report.count(Outcome::Malformed), 0);
        assert_eq!(report.latency_ms.max, Some(40.0));
        assert_eq!(report.latency_ms.p50, Some(20.0));
        assert_eq!(report.requests_per_s, 3.5);
        assert_eq!(report.errors[&Outcome::RateLimited], vec!["HTTP 429: slow down".to_string()]);
        assert!(!report.all_succeeded());
        assert_eq!(report.expected_answer_rate, None);
    }

    #[test]
    fn distinct_errors_are_capped_per_class() {
        let mut agg = Aggregator::default();
        for i in 0..20 {
            let mut r = record(Outcome::ServerError, 1);
            r.error = Some(format!("HTTP 500: boom {}", i % 8));
            agg.add(&r);
        }
        let report = agg.report(String::new(), String::new(), Duration::from_secs(1));
        assert_eq!(report.errors[&Outcome::ServerError].len(), ERRORS_PER_CLASS);
        assert_eq!(report.errors[&Outcome::ServerError][0], "HTTP 500: boom 0");
    }

    #[test]
    fn expected_answer_rate_counts_successful_checked_answers() {
        let mut agg = Aggregator::default();
        for matched in [Some(true), Some(true), Some(false), None] {
            let mut r = record(Outcome::Success, 5);
            r.answer_matched = matched;
            r.completion_tokens = 10;
            agg.add(&r);
        }
        let report = agg.report(String::new(), String::new(), Duration::from_secs(4));
        assert_eq!(report.expected_answer_rate, Some(2.0 / 3.0));
        assert_eq!(report.output_tokens_per_s, 10.0);
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let report = Aggregator::default().report("t".into(), "m".into(), Duration::ZERO);
        let json = serde_json::to_value(&report).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "duration_s",
                "errors",
                "expected_answer_rate",
                "itl_ms",
                "latency_ms",
                "model",
                "outcomes",
                "output_tokens_per_s",
                "percentiles",
                "requests",
                "requests_per_s",
                "target",
                "ttft_ms"
            ]
        );
        let mut pct: Vec<&str> = json["latency_ms"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
        pct.sort_unstable();
        assert_eq!(pct, ["max", "p50", "p90", "p95", "p99"]);
        assert_eq!(json["outcomes"]["timeout_first_token"], 0);
        assert_eq!(json["requests_per_s"], 0.0);
    }

    #[test]
    fn past_the_exact_bound_percentiles_come_from_a_histogram_within_a_tenth_of_a_percent() {
        let mut samples = Samples::default();
        // 1..=EXACT_SAMPLES+50_000 ms-scale values, shuffled by a stride.
        let n = EXACT_SAMPLES as u32 + 50_000;
        let mut exact: Vec<u32> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let us = 1_000 + (i.wrapping_mul(7919) % n) * 3;
            samples.push(us);
            exact.push(us);
        }
        assert!(!samples.is_exact(), "past the bound");
        let hdr = samples.percentiles();
        let want = Percentiles::of_micros(&mut exact);
        for (got, want) in [(hdr.p50, want.p50), (hdr.p90, want.p90), (hdr.p99, want.p99), (hdr.max, want.max)] {
            let (got, want) = (got.expect("a value"), want.expect("a value"));
            assert!((got - want).abs() <= want * 0.001 + 0.001, "{got} vs {want}");
        }
    }
}
