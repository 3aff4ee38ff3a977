//! Where llmdeck keeps its files (XDG base directories, through the `directories` crate).
//!
//! - config: `$XDG_CONFIG_HOME/llmdeck/config.yaml` (`--config` / `LLMDECK_CONFIG` override)
//! - data (test results, session ledger): `$XDG_DATA_HOME/llmdeck`
//! - state: `$XDG_STATE_HOME/llmdeck`, or the data dir where the platform has no state dir
//! - logs: `<state>/logs`, unless `logs.dir` is set

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use directories::ProjectDirs;

use super::schema::Config;

const APP: &str = "llmdeck";
const CONFIG_FILE: &str = "config.yaml";

/// The resolved locations for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// No home directory, so no XDG directories either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHomeDir;

impl fmt::Display for NoHomeDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "cannot find the home directory, so llmdeck has no place for its files; set HOME \
             (or pass --config PATH and set logs.dir)",
        )
    }
}

impl std::error::Error for NoHomeDir {}

impl Paths {
    /// The locations for `config`, read from `config_file` (default: the XDG config path).
    pub fn resolve(config: &Config, config_file: Option<&Path>) -> Result<Paths, NoHomeDir> {
        let dirs = project_dirs().ok_or(NoHomeDir)?;
        let config_file = match config_file {
            Some(p) => p.to_path_buf(),
            None => dirs.config_dir().join(CONFIG_FILE),
        };
        let data_dir = dirs.data_dir().to_path_buf();
        let state_dir = dirs.state_dir().unwrap_or(dirs.data_dir()).to_path_buf();
        Ok(Self::assemble(config, config_file, data_dir, state_dir))
    }

    /// Everything under `root` (for the demo and tests: no files outside a temp dir).
    pub fn under(root: &Path, config: &Config) -> Paths {
        Self::assemble(config, root.join(CONFIG_FILE), root.join("data"), root.join("state"))
    }

    fn assemble(config: &Config, config_file: PathBuf, data_dir: PathBuf, state_dir: PathBuf) -> Paths {
        let log_dir = config.logs.dir.clone().unwrap_or_else(|| state_dir.join("logs"));
        Paths { config_file, data_dir, state_dir, log_dir }
    }

    /// Creates the data, state and log directories (private to the user on Unix).
    pub fn create_dirs(&self) -> io::Result<()> {
        for dir in [&self.data_dir, &self.state_dir, &self.log_dir] {
            crate::util::create_private_dir(dir)?;
        }
        Ok(())
    }
}

/// The consumer id our rentals carry: `shopper.consumer_id` if set, else the one generated
/// into `<data>/consumer-id` at first use (`llmdeck-<host>-<8 hex>`), the same ever after.
pub fn consumer_id(config: &Config, data_dir: &Path) -> io::Result<String> {
    if !config.shopper.consumer_id.is_empty() {
        return Ok(config.shopper.consumer_id.clone());
    }
    let file = data_dir.join("consumer-id");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    crate::util::create_private_dir(data_dir)?;
    let host: String = crate::util::hostname()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(40)
        .collect();
    let id = format!("llmdeck-{host}-{:08x}", fastrand::u32(..));
    // Written whole or not at all: two first starts must not leave half an id.
    crate::util::write_private_atomic(&file, format!("{id}\n").as_bytes())?;
    Ok(std::fs::read_to_string(&file)?.trim().to_owned())
}

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", APP)
}

/// `$XDG_CONFIG_HOME/llmdeck/config.yaml`; `None` without a home directory.
pub fn default_config_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join(CONFIG_FILE))
}

/// The config file llmdeck reads: `explicit` (from `--config` or `LLMDECK_CONFIG`), else the
/// XDG path.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(default_config_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_consumer_id_is_stable_and_an_explicit_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        let first = consumer_id(&config, dir.path()).expect("generated");
        assert!(first.starts_with("llmdeck-"), "{first}");
        assert_eq!(consumer_id(&config, dir.path()).expect("again"), first);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(consumer_id(&config, other.path()).expect("elsewhere"), first, "installations differ");
        config.shopper.consumer_id = "mine".into();
        assert_eq!(consumer_id(&config, dir.path()).expect("explicit"), "mine");
    }

    #[test]
    fn logs_default_under_state_unless_configured() {
        let mut config = Config::default();
        let p = Paths::under(Path::new("/t"), &config);
        assert_eq!(p.log_dir, Path::new("/t/state/logs"));
        assert_eq!(p.config_file, Path::new("/t/config.yaml"));
        config.logs.dir = Some("/var/log/llmdeck".into());
        let p = Paths::under(Path::new("/t"), &config);
        assert_eq!(p.log_dir, Path::new("/var/log/llmdeck"));
    }

    #[test]
    fn explicit_config_path_wins() {
        assert_eq!(config_path(Some(Path::new("/x/c.yaml"))), Some(PathBuf::from("/x/c.yaml")));
    }

    #[test]
    fn creates_private_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Paths::under(tmp.path(), &Config::default());
        p.create_dirs().unwrap();
        assert!(p.log_dir.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p.data_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
