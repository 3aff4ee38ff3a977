//! llmdeck's own tracing events (info and above) as a log source in the Logs pane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event as TracingEvent, Level as TracingLevel, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::{Level, LogBatch, LogLine, LogSource};

/// Takes one batch without waiting; false if it could not (queue full, or nobody listens).
pub type Deliver = Box<dyn Fn(LogBatch) -> bool + Send + Sync>;

/// llmdeck's own lines that found the event queue full since the last one got through.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SINK: OnceLock<Mutex<Option<Deliver>>> = OnceLock::new();

/// Routes llmdeck's own log lines to `deliver` from now on (the engine passes a weak handle on
/// its event channel, so logging never keeps that channel open).
pub fn connect(deliver: Deliver) {
    let slot = SINK.get_or_init(|| Mutex::new(None));
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(deliver);
}

/// The tracing layer; events before [`connect`] only go to the file.
pub struct AppLogLayer;

impl<S: Subscriber> Layer<S> for AppLogLayer {
    fn on_event(&self, event: &TracingEvent<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            TracingLevel::ERROR => Level::Error,
            TracingLevel::WARN => Level::Warn,
            TracingLevel::INFO => Level::Info,
            _ => return,
        };
        let Some(slot) = SINK.get() else { return };
        let Ok(sink) = slot.lock() else { return };
        let Some(deliver) = sink.as_ref() else { return };
        let mut text = String::new();
        event.record(&mut MessageVisitor(&mut text));
        let line = LogLine::internal(level, text);
        // Never wait: logging must not slow anything down. A line that finds the queue full
        // is counted, and the count travels with the next line that gets through.
        let carried = DROPPED.swap(0, Ordering::Relaxed);
        let batch = LogBatch { dropped_before: carried, ..LogBatch::single(LogSource::App, line) };
        if !deliver(batch) {
            DROPPED.fetch_add(carried + 1, Ordering::Relaxed);
        }
    }
}

struct MessageVisitor<'a>(&'a mut String);

impl Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}
