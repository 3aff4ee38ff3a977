//! The terminal UI: event loop, panes, keymap, theme, help. Components only draw and handle
//! keys; all work happens in the engine, which the loop reaches through a [`Link`] — the engine
//! in this process, or a daemon over a WebSocket — and never through its internals.
//!
//! The loop blocks on one `select!` over terminal input, engine events, the link's status,
//! command answers, signals and timers, and redraws only when something changed — a key at
//! once, a state change within 100 ms, streaming data (logs, samples) at most twice a second —
//! or when a clock or spinner on screen moves.

pub mod app;
pub mod gpus;
pub mod keymap;
pub mod logs;
pub mod models_pane;
pub mod sessions_view;
pub mod terminal;
mod tests_pane;
pub mod theme;
pub mod view;
pub mod widgets;

use std::path::PathBuf;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::{FutureExt, StreamExt};
use tokio::signal::unix::Signal;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};

use crate::logs::LogSource;
use crate::protocol::{Ack, CommandError, Event, GpuEvent, LinkStatus, Severity, SharedLink, Subscription};
use crate::util::signals::Signals;
use app::{App, Effect, Origin};
use logs::LogEffect;
use terminal::TerminalGuard;
use theme::Theme;
use view::ViewCtx;

/// Shortest time between two frames drawn for engine events that change what a model, a
/// test or an alert is (at most ten a second). A key is answered at once.
const FRAME_BUDGET: Duration = Duration::from_millis(100);
/// Streaming data — log lines, GPU samples, shopper polls — arrives every few hundred
/// milliseconds from each source; each drawn alone made five frames a second in the demo, more
/// CPU than htop. Coalesced, they draw at most two frames a second (the first after a quiet
/// spell at once), about the refresh of htop, btop or nvitop.
const DATA_FRAME_BUDGET: Duration = Duration::from_millis(500);
/// Spinner speed while something is starting or counting down.
const SPINNER_TICK: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct TuiOptions {
    pub mouse: bool,
    pub color: bool,
    /// Clock and countdown refresh.
    pub refresh: Duration,
    pub ring_lines: usize,
    /// What the Logs pane may hold in memory (`logs.memory_mb`), in bytes.
    pub log_memory_bytes: usize,
    /// Where model log files are, for `o` (open in $PAGER).
    pub log_dir: PathBuf,
    /// llmdeck's own log file.
    pub app_log: PathBuf,
    /// For a viewer attached to a daemon: fetches a source's log from it (the files are on
    /// the daemon's machine).
    pub fetch_log: Option<FetchLog>,
}

/// Fetches the end of a source's log file from wherever the engine runs.
pub type FetchLog =
    std::sync::Arc<dyn Fn(LogSource) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// Why the TUI ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The operator quit.
    Quit,
    /// A signal asked us to stop (its name).
    Signal(&'static str),
}

/// Whether colours should be used: `--no-color`, `NO_COLOR` and `ui.theme: monochrome` turn
/// them off.
pub fn colors_enabled(no_color_flag: bool, monochrome_theme: bool) -> bool {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !(no_color_flag || no_color_env || monochrome_theme)
}

/// Runs the TUI on `link` until the operator quits or a signal says so. Quitting an engine in
/// this process first waits, on screen, for the cleanups of running tests. `signals` were
/// installed by the caller before anything started.
pub async fn run(link: SharedLink, opts: TuiOptions, signals: &mut Signals) -> Result<Exit> {
    let mut guard = TerminalGuard::take(opts.mouse)?;
    let result = event_loop(&mut guard, link, &opts, signals).await;
    drop(guard);
    result
}

/// The link's feed: events after a snapshot, numbered; a gap means a resubscription.
struct Feed {
    events: broadcast::Receiver<std::sync::Arc<crate::protocol::Sequenced>>,
    last_seq: u64,
    open: bool,
}

impl Feed {
    fn of(sub: Subscription, app: &mut App, fresh: bool) -> Self {
        let last_seq = sub.snapshot.seq;
        if fresh {
            app.resync(sub.snapshot);
        }
        Self { events: sub.events, last_seq, open: true }
    }
}

async fn event_loop(
    guard: &mut TerminalGuard,
    link: SharedLink,
    opts: &TuiOptions,
    signals: &mut Signals,
) -> Result<Exit> {
    let theme = Theme::new(opts.color);
    let sub = link.subscribe();
    let mut app = App::new(sub.snapshot.clone(), Origin { mode: link.describe() }, opts.ring_lines);
    app.logs.set_memory_budget(opts.log_memory_bytes);
    app.quitting_stops_engine = link.quitting_stops_engine();
    let mut feed = Feed::of(sub, &mut app, false);
    let mut status = link.status();
    app.link = status.borrow().clone();
    let mut input = EventStream::new();
    let (answers_tx, mut answers) = mpsc::channel::<Result<Ack, CommandError>>(32);

    let mut spinner = 0usize;
    // When the next frame is due (`None`: nothing changed on screen).
    let mut due: Option<Instant> = Some(Instant::now());
    let mut last_frame = Instant::now() - FRAME_BUDGET;
    let mut next_tick = Instant::now() + opts.refresh;
    let mut next_spin = Instant::now() + SPINNER_TICK;

    loop {
        if let Some(exit) = app.finished_shutdown() {
            return Ok(exit);
        }
        if due.is_some_and(|d| d <= Instant::now()) {
            app.expire_toast();
            let ctx =
                ViewCtx { now: std::time::Instant::now(), wall: chrono::Local::now().fixed_offset(), theme, spinner };
            guard.terminal.draw(|f| view::draw(f, &mut app, &ctx)).wrap_err("drawing the screen")?;
            last_frame = Instant::now();
            due = None;
            // The frame just drawn showed the clock: the next tick is a refresh after it.
            next_tick = last_frame + opts.refresh;
        }
        // A change the engine reported: drawn within the frame budget, together with the
        // others that arrive meanwhile.
        let within = |budget: Duration, due: Option<Instant>| {
            let by = last_frame + budget;
            Some(due.map_or(by, |due| due.min(by)))
        };
        let soon = |due: Option<Instant>| within(FRAME_BUDGET, due);
        let now = |_: Option<Instant>| Some(Instant::now());
        let frame_due = due;
        let spin_due = app.has_live_timers().then_some(next_spin);

        tokio::select! {
            maybe = input.next() => match maybe {
                Some(Ok(TermEvent::Key(key))) => {
                    let effects = app.on_key(key);
                    due = now(due);
                    for effect in effects {
                        match effect {
                            Effect::Quit(exit) => {
                                if let Some(exit) = quit(&link, &mut app, exit) {
                                    return Ok(exit);
                                }
                            }
                            Effect::AbandonCleanups => link.abandon_cleanups(),
                            Effect::Send(command) => match link.submit(command) {
                                // Submitted in key order; only the answer is awaited aside.
                                Ok(answer) => {
                                    let tx = answers_tx.clone();
                                    tokio::spawn(async move {
                                        let _ = tx.send(crate::protocol::answered(answer).await).await;
                                    });
                                }
                                Err(e) => app.show_toast(e.message, Severity::Error),
                            },
                            Effect::Log(LogEffect::OpenInPager(source)) => {
                                drop(input);
                                let pager_signals = (&mut signals.term, &mut signals.hup);
                                if let Some(exit) = open_in_pager(guard, opts, &source, &mut app, pager_signals).await {
                                    return Ok(exit);
                                }
                                input = EventStream::new();
                                // The pager shares our terminal: Ctrl-C in it (leaving `less +F`)
                                // reached us too, and is not a request to quit llmdeck.
                                while signals.int.recv().now_or_never().flatten().is_some() {}
                            }
                            Effect::Log(LogEffect::Clipboard(sequence)) => {
                                if let Err(e) = terminal::write_raw(sequence.as_bytes()) {
                                    app.show_toast(format!("copy failed: {e}"), Severity::Error);
                                } else {
                                    app.show_toast("copied the line to the clipboard (OSC 52)", Severity::Info);
                                }
                            }
                        }
                    }
                }
                Some(Ok(TermEvent::Resize(..) | TermEvent::FocusGained)) => due = now(due),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).wrap_err("reading the terminal"),
                None => return Ok(Exit::Quit),
            },
            received = feed.events.recv(), if feed.open => {
                match received {
                    Ok(event) if event.seq == feed.last_seq + 1 => {
                        feed.last_seq = event.seq;
                        app.on_event(&event.event);
                        let budget = if is_streaming_data(&event.event) { DATA_FRAME_BUDGET } else { FRAME_BUDGET };
                        due = within(budget, due);
                    }
                    // A gap (or a restarted engine's numbering): start again from a snapshot.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        feed = Feed::of(link.subscribe(), &mut app, true);
                        due = soon(due);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        due = soon(due);
                        feed.open = false;
                        app.link = LinkStatus::Disconnected { reason: "the engine closed the link".into(), retry_in_s: None };
                    }
                }
            }
            changed = status.changed() => {
                due = now(due);
                if changed.is_err() {
                    app.link = LinkStatus::Disconnected { reason: "the engine is gone".into(), retry_in_s: None };
                    // Nothing more will come from this watch; stop polling it.
                    status = tokio::sync::watch::channel(app.link.clone()).1;
                } else {
                    let now = status.borrow_and_update().clone();
                    let reconnected = now == LinkStatus::Connected && app.link != LinkStatus::Connected;
                    app.link = now;
                    if reconnected {
                        feed = Feed::of(link.subscribe(), &mut app, true);
                    }
                }
            }
            Some(answer) = answers.recv() => {
                match answer {
                    Ok(ack) => app.show_toast(ack.message, Severity::Info),
                    Err(e) => app.show_toast(e.message, Severity::Error),
                }
                due = now(due);
            }
            _ = signals.int.recv() => {
                due = now(due);
                if let Some(exit) = app.on_signal("SIGINT").and_then(|exit| quit(&link, &mut app, exit)) {
                    return Ok(exit);
                }
            }
            _ = signals.term.recv() => {
                due = now(due);
                if let Some(exit) = app.on_signal("SIGTERM").and_then(|exit| quit(&link, &mut app, exit)) {
                    return Ok(exit);
                }
            }
            // The terminal is gone: nothing can be shown. Shutdown (cleanups included) goes on
            // without a screen.
            _ = signals.hup.recv() => return Ok(Exit::Signal("SIGHUP")),
            () = sleep_until(next_tick) => {
                next_tick = Instant::now() + opts.refresh;
                due = soon(due); // the clock, an expired toast
            }
            () = sleep_opt(spin_due) => {
                spinner = spinner.wrapping_add(1);
                next_spin = Instant::now() + SPINNER_TICK;
                due = soon(due);
            }
            () = sleep_opt(frame_due) => {}
        }
    }
}

/// Quitting: an engine in this process with runs going first cleans up (the TUI shows it and
/// stays); otherwise the TUI ends now.
fn quit(link: &SharedLink, app: &mut App, exit: Exit) -> Option<Exit> {
    let reason = match &exit {
        Exit::Quit => "the operator quit".to_owned(),
        Exit::Signal(name) => format!("{name} received"),
    };
    if link.quitting_stops_engine() && app.running_tests() > 0 {
        link.begin_shutdown(&reason);
        app.wait_for_cleanups(exit);
        None
    } else {
        Some(exit)
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The file holding a source's full history, or why there is none.
fn log_file_of(opts: &TuiOptions, source: &LogSource) -> Result<PathBuf, String> {
    match source {
        LogSource::Model(id) => Ok(crate::logs::file::log_path(&opts.log_dir, id)),
        LogSource::App => Ok(opts.app_log.clone()),
        LogSource::Test(name) => {
            Err(format!("{name} keeps no log file: its lines are here, its reports in the data dir's results/"))
        }
    }
}

fn save_private(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    // NamedTempFile is created 0600.
    let mut file = tempfile::Builder::new().prefix("llmdeck-log-").suffix(".log").tempfile()?;
    file.write_all(bytes)?;
    file.flush()?;
    Ok(file)
}

/// Suspends the TUI, shows the source's log file in `$PAGER` (default `less`), and comes back.
/// SIGTERM or SIGHUP meanwhile ends the pager and is the TUI's exit: models must still be
/// stopped, whoever is reading logs.
async fn open_in_pager(
    guard: &mut TerminalGuard,
    opts: &TuiOptions,
    source: &LogSource,
    app: &mut App,
    (sigterm, sighup): (&mut Signal, &mut Signal),
) -> Option<Exit> {
    // Attached: the file is on the daemon's machine; its end comes over HTTP into a private
    // temporary file, gone when the pager closes.
    let mut _fetched = None;
    let path = match &opts.fetch_log {
        Some(fetch) => match fetch(source.clone()).await {
            Ok(bytes) => match save_private(&bytes) {
                Ok(file) => {
                    let path = file.path().to_owned();
                    _fetched = Some(file);
                    path
                }
                Err(e) => {
                    app.show_toast(format!("cannot keep the fetched log: {e}"), Severity::Error);
                    return None;
                }
            },
            Err(why) => {
                app.show_toast(why, Severity::Warning);
                return None;
            }
        },
        None => match log_file_of(opts, source) {
            Ok(path) => path,
            Err(why) => {
                app.show_toast(why, Severity::Info);
                return None;
            }
        },
    };
    if !path.exists() {
        app.show_toast(format!("no log file for {source} at {}", path.display()), Severity::Warning);
        return None;
    }
    let pager = std::env::var("PAGER").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "less".into());
    let mut words = pager.split_whitespace();
    let program = words.next().unwrap_or("less").to_owned();
    let args: Vec<String> = words.map(str::to_owned).collect();
    guard.suspend();
    let status = match tokio::process::Command::new(&program).args(&args).arg(&path).kill_on_drop(true).spawn() {
        Ok(mut pager) => {
            let signalled = tokio::select! {
                status = pager.wait() => Err(status),
                _ = sigterm.recv() => Ok("SIGTERM"),
                _ = sighup.recv() => Ok("SIGHUP"),
            };
            match signalled {
                Ok(signal) => {
                    let _ = pager.kill().await;
                    return Some(Exit::Signal(signal));
                }
                Err(status) => status,
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = guard.resume() {
        tracing::error!("taking the terminal back after the pager: {e:?}");
    }
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => app.show_toast(format!("{program} exited with {s}"), Severity::Warning),
        Err(e) => app.show_toast(format!("cannot run {program}: {e} (set $PAGER)"), Severity::Error),
    }
    None
}

/// Events that only add data to what is on screen (no state a person must see at once).
fn is_streaming_data(event: &Event) -> bool {
    matches!(event, Event::Log(_) | Event::Gpu(GpuEvent::Sampled { .. }) | Event::Shopper(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_opens_its_own_file() {
        let opts = TuiOptions {
            mouse: false,
            color: false,
            refresh: Duration::from_secs(1),
            ring_lines: 10,
            log_memory_bytes: 1 << 20,
            log_dir: "/logs".into(),
            app_log: "/state/llmdeck.log".into(),
            fetch_log: None,
        };
        assert_eq!(log_file_of(&opts, &LogSource::Model("qwen-7b".into())), Ok("/logs/qwen-7b.log".into()));
        assert_eq!(log_file_of(&opts, &LogSource::App), Ok("/state/llmdeck.log".into()));
        // A model may be called `llmdeck`: its file is still its own.
        assert_eq!(log_file_of(&opts, &LogSource::Model("llmdeck".into())), Ok("/logs/llmdeck.log".into()));
        assert!(log_file_of(&opts, &LogSource::Test("smoke".into())).is_err());
    }

    #[test]
    fn only_data_waits_for_the_slower_frame_budget() {
        let now = chrono::Utc::now();
        let sampled = Event::Gpu(GpuEvent::Sampled { ts: now, gpus: Vec::new() });
        let stale = Event::Gpu(GpuEvent::Stale { stale_ms: 2000, call: None });
        let xid = Event::Gpu(GpuEvent::Xid { ts: now, gpu: 0, xid: 79, meaning: "fell off the bus".into() });
        assert!(is_streaming_data(&sampled));
        // A GPU that stops answering or fails is news, not data.
        assert!(!is_streaming_data(&stale));
        assert!(!is_streaming_data(&xid));
    }
}
