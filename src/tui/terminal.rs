//! The terminal, owned by an RAII guard: raw mode and the alternate screen are undone when the
//! guard drops, on a panic (through the hook installed by [`install_panic_hook`]) and before
//! the process exits on a signal.

use std::io::{self, Stdout, stdout};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};

use color_eyre::eyre::{Result, WrapErr};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is currently ours to restore; the panic hook checks it so commands
/// that never took the terminal (JSON output) get no stray escape codes.
static TAKEN: AtomicBool = AtomicBool::new(false);
static MOUSE: AtomicBool = AtomicBool::new(false);
/// The thread that draws: only its panic ends the TUI.
static TUI_THREAD: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);

pub type Tui = Terminal<CrosstermBackend<Stdout>>;

pub struct TerminalGuard {
    /// Dropped by hand: see `Drop for TerminalGuard`.
    pub terminal: ManuallyDrop<Tui>,
}

impl TerminalGuard {
    pub fn take(mouse: bool) -> Result<TerminalGuard> {
        enable_raw_mode().wrap_err("switching the terminal to raw mode (is stdin a terminal?)")?;
        *TUI_THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current().id());
        TAKEN.store(true, Ordering::SeqCst);
        MOUSE.store(mouse, Ordering::SeqCst);
        let mut out = stdout();
        let entered = if mouse {
            execute!(out, EnterAlternateScreen, cursor::Hide, EnableMouseCapture)
        } else {
            execute!(out, EnterAlternateScreen, cursor::Hide)
        };
        if let Err(e) = entered {
            restore();
            return Err(e).wrap_err("entering the alternate screen");
        }
        match Terminal::new(CrosstermBackend::new(stdout())) {
            Ok(terminal) => Ok(TerminalGuard { terminal: ManuallyDrop::new(terminal) }),
            Err(e) => {
                restore();
                Err(e).wrap_err("setting up the terminal")
            }
        }
    }

    /// Gives the terminal back for a while (e.g. to run `$PAGER`); [`TerminalGuard::resume`]
    /// takes it again.
    pub fn suspend(&mut self) {
        restore();
    }

    pub fn resume(&mut self) -> Result<()> {
        let mouse = MOUSE.load(Ordering::SeqCst);
        enable_raw_mode().wrap_err("switching the terminal back to raw mode")?;
        TAKEN.store(true, Ordering::SeqCst);
        let mut out = stdout();
        if mouse {
            execute!(out, EnterAlternateScreen, cursor::Hide, EnableMouseCapture)?;
        } else {
            execute!(out, EnterAlternateScreen, cursor::Hide)?;
        }
        self.terminal.clear().wrap_err("clearing the terminal")?;
        Ok(())
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        // ratatui's Terminal, dropped while it thinks the cursor is hidden, tries to show it
        // and `eprintln!`s the failure, which panics when the terminal is gone (an SSH session
        // that ended): a panic mid-shutdown, before the models are stopped. When the cursor
        // cannot be shown the terminal is leaked instead; the process is on its way out.
        if self.terminal.show_cursor().is_ok() {
            // SAFETY: the field is dropped exactly once, here, and never touched again.
            unsafe { ManuallyDrop::drop(&mut self.terminal) };
        }
    }
}

/// Puts the terminal back as we found it. Safe to call more than once.
pub fn restore() {
    if !TAKEN.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = stdout();
    if MOUSE.load(Ordering::SeqCst) {
        let _ = execute!(out, DisableMouseCapture);
    }
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
    let _ = disable_raw_mode();
}

/// color-eyre's panic and error hooks, with the terminal restored before a panic is printed.
/// Installed before the terminal is taken.
pub fn install_panic_hook() -> Result<()> {
    // Once per process: `llmdeck` that finds a daemon falls back to attaching, and installs
    // through here twice.
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return Ok(());
    }
    let (panic_hook, eyre_hook) = color_eyre::config::HookBuilder::default().display_env_section(false).into_hooks();
    eyre_hook.install().wrap_err("installing the error report hook")?;
    std::panic::set_hook(Box::new(move |info| {
        let on_tui_thread = *TUI_THREAD.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id());
        if TAKEN.load(Ordering::SeqCst) && !on_tui_thread {
            // A background task died; the TUI lives on. Printing would scribble over the
            // screen and restoring would leave it drawing in cooked mode: log it instead.
            tracing::error!("a background task panicked: {info}");
            return;
        }
        restore();
        // Not `eprintln!`: a panic inside the hook (stderr gone) would abort the process.
        use std::io::Write as _;
        let _ = writeln!(io::stderr(), "{}", panic_hook.panic_report(info));
    }));
    Ok(())
}

/// Writes raw bytes (an OSC 52 clipboard sequence) straight to the terminal.
pub fn write_raw(bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut out = stdout();
    out.write_all(bytes)?;
    out.flush()
}
