//! Restart policy and backoff arithmetic: pure functions, tested as tables.

use std::time::Duration;

use crate::config::{RestartConfig, RestartPolicy};

/// Why a model's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// It exited by itself with this code.
    Exited(i32),
    /// It was killed by a signal nobody in llmdeck sent.
    Signalled(i32),
    /// We killed it because health checks failed `failure_threshold` times in a row.
    HealthFailure,
    /// We killed it because it was not ready within `startup_timeout_s`.
    StartupTimeout,
    /// An operator stopped or restarted it, or llmdeck is shutting down.
    OperatorStop,
    /// A restart could not even spawn the process.
    SpawnFailed,
}

impl ExitCause {
    /// A failure in the sense of `on-failure`.
    pub fn is_failure(self) -> bool {
        match self {
            ExitCause::Exited(code) => code != 0,
            ExitCause::Signalled(_) | ExitCause::HealthFailure | ExitCause::StartupTimeout | ExitCause::SpawnFailed => {
                true
            }
            ExitCause::OperatorStop => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after `delay`; this will be restart number `attempt`.
    Restart { attempt: u32, delay: Duration },
    /// The policy does not restart this kind of exit.
    NoRestart,
    /// The policy would restart, but `max_restarts` restarts have been made already.
    GiveUp,
}

/// `delay × 2^(attempt−1)`, capped at `max_delay`; attempt 1 waits `delay`.
pub fn backoff_delay(cfg: &RestartConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let uncapped = cfg.delay_s.saturating_mul(1u32 << exponent);
    uncapped.min(cfg.max_delay_s)
}

/// What to do after an exit, given how many restarts were already made in a row.
pub fn decide(cfg: &RestartConfig, cause: ExitCause, restarts_so_far: u32) -> Decision {
    let wants_restart = match (cfg.policy, cause) {
        (_, ExitCause::OperatorStop) => false,
        (RestartPolicy::No, _) => false,
        (RestartPolicy::OnFailure, cause) => cause.is_failure(),
        (RestartPolicy::Always, _) => true,
    };
    if !wants_restart {
        Decision::NoRestart
    } else if restarts_so_far >= cfg.max_restarts {
        Decision::GiveUp
    } else {
        let attempt = restarts_so_far + 1;
        Decision::Restart { attempt, delay: backoff_delay(cfg, attempt) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: RestartPolicy) -> RestartConfig {
        RestartConfig { policy, ..RestartConfig::default() }
    }

    #[test]
    fn backoff_doubles_from_delay_and_caps() {
        let c = cfg(RestartPolicy::OnFailure);
        let secs: Vec<u64> = (1..=9).map(|a| backoff_delay(&c, a).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let one = RestartConfig { delay_s: Duration::from_secs(1), ..c.clone() };
        let ms: Vec<u128> = (1..=3).map(|a| backoff_delay(&one, a).as_millis()).collect();
        assert_eq!(ms, [1000, 2000, 4000]);
        // Huge attempt numbers neither overflow nor pass the cap.
        assert_eq!(backoff_delay(&c, u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn policy_table() {
        use ExitCause::*;
        use RestartPolicy::*;
        let causes = [Exited(0), Exited(3), Signalled(9), HealthFailure, StartupTimeout, SpawnFailed, OperatorStop];
        // (policy, restarts?) for each cause in order.
        let table = [
            (No, [false, false, false, false, false, false, false]),
            (OnFailure, [false, true, true, true, true, true, false]),
            (Always, [true, true, true, true, true, true, false]),
        ];
        for (policy, expected) in table {
            for (cause, want) in causes.iter().zip(expected) {
                let got = matches!(decide(&cfg(policy), *cause, 0), Decision::Restart { .. });
                assert_eq!(got, want, "{policy:?} after {cause:?}");
            }
        }
    }

    #[test]
    fn gives_up_after_max_restarts() {
        let c = RestartConfig { max_restarts: 3, delay_s: Duration::from_secs(1), ..cfg(RestartPolicy::OnFailure) };
        assert_eq!(
            decide(&c, ExitCause::Exited(3), 0),
            Decision::Restart { attempt: 1, delay: Duration::from_secs(1) }
        );
        assert_eq!(
            decide(&c, ExitCause::Exited(3), 2),
            Decision::Restart { attempt: 3, delay: Duration::from_secs(4) }
        );
        assert_eq!(decide(&c, ExitCause::Exited(3), 3), Decision::GiveUp);
        // A clean exit under on-failure is not a give-up, just no restart.
        assert_eq!(decide(&c, ExitCause::Exited(0), 3), Decision::NoRestart);
    }
}
