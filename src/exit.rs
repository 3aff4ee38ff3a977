//! Process exit codes: the contract scripts rely on (DESIGN.md, "Command line").

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// The thing checked failed (a test, a probe with failures).
pub const FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// A required facility is missing (e.g. no NVML).
pub const MISSING: u8 = 3;
/// Cancelled by SIGINT, after cleanup.
pub const CANCELLED: u8 = 130;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
