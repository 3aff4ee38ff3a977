//! Configuration: the YAML schema, loading with line/column errors, validation, and paths.
//!
//! Loading goes: size and UTF-8 checks → one scan of the parser events that maps key paths to
//! positions and refuses alias bombs → typed deserialization (serde-saphyr, with a budget) →
//! `${VAR}` expansion in string values → validation. Parse errors stop at the first; expansion
//! and validation report everything they find.

mod error;
mod expand;
mod parse;
pub mod paths;
mod schema;
mod source_map;
mod suggest;
mod summary;
mod validate;

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

pub use error::{ConfigError, ConfigErrors, ErrorKind, Pos};
pub use expand::{Env, process_env};
pub use paths::{NoHomeDir, Paths, config_path, consumer_id, default_config_path};
pub use schema::*;
pub use summary::summary;
pub use validate::is_valid_id;

use source_map::SourceMap;
use validate::{At, Issue};

/// Files over this size are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The documented example configuration (`config.example.yaml`), written by `config init`.
pub const EXAMPLE: &str = include_str!("../../config.example.yaml");

/// Reads, parses, expands and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = read_limited(path, &origin).map_err(ConfigErrors::one)?;
    load_str(&text, &origin)
}

/// Like [`load`], for text already in memory; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    load_str_with_env(text, origin, &process_env)
}

/// Like [`load_str`], with `${VAR}` looked up through `env` instead of the process environment.
pub fn load_str_with_env(text: &str, origin: &str, env: Env<'_>) -> Result<Config, ConfigErrors> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ConfigErrors::one(too_large(origin, text.as_bytes())));
    }
    let map = SourceMap::scan(text).map_err(|f| f.in_file(origin))?;
    let mut config = parse::parse(text, &map).map_err(|f| f.in_file(origin))?;
    let mut issues = expand::expand_config(&mut config, env);
    // A value whose expansion failed still holds `${...}`: do not report it twice.
    let unexpanded: HashSet<String> = issues.iter().map(|i| i.path.clone()).collect();
    issues.extend(validate::validate(&config, &map).into_iter().filter(|i| !unexpanded.contains(&i.path)));
    if issues.is_empty() {
        return Ok(config);
    }
    let errors = issues.into_iter().map(|issue| locate(issue, &map, origin)).collect();
    Err(ConfigErrors::new(errors))
}

fn locate(issue: Issue, map: &SourceMap, origin: &str) -> ConfigError {
    let pos = match issue.at {
        At::Key => map.key_pos(&issue.path),
        At::Value => map.value_pos(&issue.path),
        At::Inside(offset) => map.pos_inside(&issue.path, offset),
    };
    ConfigError {
        origin: origin.to_owned(),
        pos: Some(pos),
        kind: issue.kind,
        message: issue.message,
        hint: issue.hint,
    }
}

/// Reads at most [`MAX_FILE_BYTES`] (+1 to notice more) as UTF-8, so a wrong path such as
/// `/dev/zero` or a huge log cannot exhaust memory.
fn read_limited(path: &Path, origin: &str) -> Result<String, ConfigError> {
    let io_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConfigError::new(origin, None, ErrorKind::NotFound, "no configuration file here".into()).with_hint(
                "create one with `llmdeck config init` (or point --config at one); \
                 `llmdeck demo` runs without one",
            )
        } else {
            ConfigError::new(origin, None, ErrorKind::Io, format!("cannot read it: {e}"))
        }
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    if file.metadata().map_err(io_error)?.is_dir() {
        return Err(ConfigError::new(
            origin,
            None,
            ErrorKind::Io,
            "this is a directory, not a configuration file".into(),
        )
        .with_hint("give the path of the YAML file, e.g. `.../llmdeck/config.yaml`"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(origin, &bytes));
    }
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        ConfigError::new(
            origin,
            Some(pos_at(&e.as_bytes()[..bad])),
            ErrorKind::NotUtf8,
            "the file is not UTF-8 text (invalid byte here)".into(),
        )
        .with_hint("save it as UTF-8")
    })
}

fn too_large(origin: &str, bytes: &[u8]) -> ConfigError {
    let limit = MAX_FILE_BYTES.min(bytes.len());
    ConfigError::new(
        origin,
        Some(pos_at(&bytes[..limit])),
        ErrorKind::TooLarge,
        format!(
            "the file is larger than {} MiB, the limit for a configuration (reading stopped here)",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
    .with_hint("a configuration is a few KiB; check that this is the right file")
}

/// The position just after `prefix`.
fn pos_at(prefix: &[u8]) -> Pos {
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let last_line = text.rsplit('\n').next().unwrap_or("");
    Pos::new(line, last_line.chars().count() + 1)
}

#[cfg(test)]
mod tests;
