//! The daemon's tokens: generated at first start into the data dir (0600), or read from the
//! configured files; compared in constant time.

use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The default token file in the data dir.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("daemon.token")
}

/// A secret that never prints itself.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a client presented.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Reads the token at `path`.
pub fn read(path: &Path) -> io::Result<Token> {
    let mut text = String::new();
    std::fs::File::open(path)?.take(4096).read_to_string(&mut text)?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(io::Error::other(format!("{} holds no token of at least 16 characters", path.display())));
    }
    Ok(Token(token.to_owned()))
}

/// Reads the token at `path`, creating it (32 random bytes, hex, mode 0600) if there is none.
pub fn read_or_create(path: &Path) -> io::Result<Token> {
    match read(path) {
        Ok(token) => {
            warn_if_readable_by_others(path);
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                crate::util::create_private_dir(dir)?;
            }
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            writeln!(file, "{token}")?;
            Ok(Token(token))
        }
        Err(e) => Err(e),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{} is readable by other users: anyone who reads it controls llmdeck (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_stable_and_compared_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("daemon.token");
        let token = read_or_create(&path).expect("created");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(read_or_create(&path).expect("read again").expose(), token.expose());
        assert!(token.matches(token.expose()));
        assert!(!token.matches(&token.expose()[1..]));
        assert!(!token.matches("wrong"));
        assert_eq!(format!("{token:?}"), "Token(***)");
    }
}
