//! The stop signals llmdeck listens for, installed once per command before anything is started:
//! from then on SIGINT, SIGTERM and SIGHUP are requests to stop, never a death that skips the
//! cleanup of runs and models.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    pub int: Signal,
    pub term: Signal,
    pub hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}
