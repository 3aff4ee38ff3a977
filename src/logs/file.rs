//! Log files with size-based rotation: `<dir>/<stem>.log`, `<stem>.log.1` (newest) ...

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Turns any name into a safe file stem (ids are validated at config load; this is the belt
/// to those braces).
pub fn sanitize_file_stem(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(64)
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

/// The log file of a source named `name` in `dir`: `<dir>/<name>.log`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.log", sanitize_file_stem(name)))
}

/// An append-only log file that rotates by size, keeping `keep_files` old files.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep_files: usize,
    written: u64,
    out: BufWriter<File>,
}

impl RotatingFile {
    pub fn open(dir: &Path, name: &str, max_bytes: u64, keep_files: usize) -> io::Result<Self> {
        crate::util::create_private_dir(dir)?;
        let path = log_path(dir, name);
        let file = open_append(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            keep_files,
            written,
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line (a newline is added). A rotation that fails is reported and the line
    /// goes on to the file already open: losing lines, or retrying (and shifting the old files
    /// away) on every line, would both be worse than one file growing past its size for a while.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.make_room(line.len() as u64 + 1);
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Rotates first when `len` more bytes would pass the size.
    fn make_room(&mut self, len: u64) {
        if self.written > 0
            && self.written + len > self.max_bytes
            && let Err(e) = self.rotate()
        {
            tracing::warn!(
                "rotating {}: {e}; writing on, next try after another {} bytes",
                self.path.display(),
                self.max_bytes
            );
            self.written = 0;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep_files == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            fs::remove_file(numbered(self.keep_files)).or_else(ignore_missing)?;
            for n in (1..self.keep_files).rev() {
                fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
            }
            // Missing after an earlier rotation that renamed it but could not open a new one.
            fs::rename(&self.path, numbered(1)).or_else(ignore_missing)?;
        }
        // On failure the old handle stays: its file was renamed, but it still takes lines.
        self.out = BufWriter::with_capacity(64 * 1024, open_append(&self.path)?);
        self.written = 0;
        Ok(())
    }
}

/// Whole writes (a formatted log record each, as tracing's writers make them) rotate like lines.
impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.make_room(buf.len() as u64);
        self.out.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_in(path: &Path) -> Vec<String> {
        fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_every_recent_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = RotatingFile::open(dir.path(), "m", 100, 2).expect("open");
        for n in 0..40 {
            file.write_line(format!("line {n:02}").as_bytes()).expect("write");
        }
        file.flush().expect("flush");
        let (current, one, two) = (
            lines_in(&dir.path().join("m.log")),
            lines_in(&dir.path().join("m.log.1")),
            lines_in(&dir.path().join("m.log.2")),
        );
        assert!(!dir.path().join("m.log.3").exists(), "keep_files bounds the old files");
        let kept: Vec<String> = [two, one, current].concat();
        let expected: Vec<String> = (40 - kept.len()..40).map(|n| format!("line {n:02}")).collect();
        assert_eq!(kept, expected, "the newest lines, in order, across the files");
        assert!(kept.len() >= 20);
    }

    #[test]
    fn a_rotation_that_fails_loses_no_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        // `m.log.1` is a non-empty directory: making room for the rotation fails.
        fs::create_dir_all(dir.path().join("m.log.1").join("x")).expect("blocking dir");
        let mut file = RotatingFile::open(dir.path(), "m", 100, 1).expect("open");
        for n in 0..200 {
            file.write_line(format!("line {n:03}").as_bytes()).expect("the line is written all the same");
        }
        file.flush().expect("flush");
        let current = lines_in(&dir.path().join("m.log"));
        assert_eq!(current.len(), 200, "every line reached the file");
        assert_eq!(current.last().map(String::as_str), Some("line 199"));
    }
}
