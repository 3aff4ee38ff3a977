//! Loopback ports for servers llmdeck starts itself (the demo's mock models) and for tests.
//!
//! Binding port 0 and releasing it is a race: the kernel can hand the same port to the next
//! `bind(0)` or to an outgoing connection before the server binds it. Ports reserved here come
//! from outside the kernel's ephemeral range (which `bind(0)` and `connect` draw from), are
//! free when picked, and are held by a lock file per port for as long as the reservation
//! lives, so no other llmdeck process on this machine (a second demo, a parallel test suite)
//! picks the same one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A port nobody else on this machine will be given by llmdeck while this is alive.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    /// The lock file, locked while held (`None` where no lock directory could be made).
    _lock: Option<File>,
}

impl PortReservation {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// How many candidates to try before giving up (a machine with that many busy ports in the
/// range has bigger problems).
const ATTEMPTS: usize = 4096;

/// Reserves `count` distinct loopback ports, each free when picked.
pub fn reserve_loopback_ports(count: usize) -> io::Result<Vec<PortReservation>> {
    let range = candidate_range(ephemeral_range());
    let lock_dir = lock_dir();
    let span = u32::from(*range.end() - *range.start()) + 1;
    let mut next = fastrand::u32(..span);
    let mut held = Vec::with_capacity(count);
    for _ in 0..ATTEMPTS {
        if held.len() == count {
            break;
        }
        let port = *range.start() + (next % span) as u16;
        next = next.wrapping_add(1);
        if let Some(reservation) = try_reserve(port, lock_dir.as_deref()) {
            held.push(reservation);
        }
    }
    if held.len() < count {
        return Err(io::Error::other(format!(
            "found only {} free loopback ports of {count} in {}-{}",
            held.len(),
            range.start(),
            range.end()
        )));
    }
    Ok(held)
}

fn try_reserve(port: u16, lock_dir: Option<&Path>) -> Option<PortReservation> {
    let lock = match lock_dir {
        Some(dir) => Some(lock_port(dir, port)?),
        None => None,
    };
    // Free now? (The listener is dropped at once; the lock keeps other llmdecks away, and the
    // range keeps the kernel's own port picks away.)
    TcpListener::bind(("127.0.0.1", port)).ok()?;
    Some(PortReservation { port, _lock: lock })
}

/// Locks `<dir>/<port>.lock`; `None` if another reservation holds it. A lock is per open file,
/// so a second reservation in this same process is refused too.
fn lock_port(dir: &Path, port: u16) -> Option<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(TryLockError::WouldBlock | TryLockError::Error(_)) => None,
    }
}

/// `/tmp/llmdeck-ports-<uid>`, shared by every llmdeck process of this user (on purpose: that
/// is who must not collide). `None` if it cannot be made private to us.
fn lock_dir() -> Option<PathBuf> {
    let uid = nix::unistd::getuid();
    let dir = PathBuf::from(format!("/tmp/llmdeck-ports-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    use std::os::unix::fs::MetadataExt;
    (meta.is_dir() && meta.uid() == uid.as_raw()).then_some(dir)
}

/// The kernel's ephemeral port range (`ip_local_port_range`), Linux's default if unreadable.
fn ephemeral_range() -> RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    parse_port_range(&text).unwrap_or(32768..=60999)
}

fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (lo <= hi).then_some(lo..=hi)
}

/// The larger stretch of unprivileged ports outside `ephemeral`, above the few thousand that
/// well-known services like to use.
fn candidate_range(ephemeral: RangeInclusive<u16>) -> RangeInclusive<u16> {
    const LOW: u16 = 10_000;
    let below = (LOW, ephemeral.start().saturating_sub(1));
    let above = (ephemeral.end().saturating_add(1).max(LOW), u16::MAX);
    let size = |(a, b): (u16, u16)| if b >= a { u32::from(b - a) + 1 } else { 0 };
    let (a, b) = if size(below) >= size(above) { below } else { above };
    if size((a, b)) < 256 { LOW..=u16::MAX } else { a..=b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_avoids_the_ephemeral_ports() {
        assert_eq!(candidate_range(32768..=60999), 10_000..=32767);
        assert_eq!(candidate_range(1024..=40000), 40001..=65535);
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("garbage"), None);
    }

    #[test]
    fn reserved_ports_are_distinct_free_and_never_given_twice_while_held() {
        let first = reserve_loopback_ports(20).expect("ports");
        let second = reserve_loopback_ports(20).expect("ports");
        let mut all: Vec<u16> = first.iter().chain(&second).map(PortReservation::port).collect();
        let ephemeral = ephemeral_range();
        assert!(all.iter().all(|p| !ephemeral.contains(p)), "{all:?} overlaps {ephemeral:?}");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40, "a port was handed out twice");
        for p in &all {
            assert!(TcpListener::bind(("127.0.0.1", *p)).is_ok(), "port {p} is free for its server");
        }
    }
}
