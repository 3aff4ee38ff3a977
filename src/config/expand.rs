//! `${VAR}` and `${VAR:-default}` in string values.
//!
//! Rules: `${NAME}` is the variable's value and an error when it is unset; `${NAME:-text}` is
//! `text` when the variable is unset or empty; `$$` is a literal `$`; any other `$` is kept as
//! is (`$HOME` is not expanded: write `${HOME}`). Defaults are literal text (no nesting). Keys
//! are never expanded. Expansion happens after parsing, on the typed values, so a number or a
//! choice (`port`, `policy`) cannot come from a variable.

use std::path::PathBuf;

use super::error::{ErrorKind, shown};
use super::schema::Config;
use super::validate::{At, Issue};

/// Looks a variable up; `None` when unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment. `HOSTNAME` falls back to the machine's host name because shells
/// set it without exporting it, and a consumer id of `llmdeck-${HOSTNAME:-local}` should name
/// the machine.
pub fn process_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(_) if name == "HOSTNAME" => Some(crate::util::hostname()),
        Err(_) => None,
    }
}

/// A reference that could not be expanded, at byte `offset` of the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandError {
    pub offset: usize,
    pub message: String,
    pub hint: String,
}

/// Expands every reference in `text`; reports every bad reference, not just the first.
pub(crate) fn expand(text: &str, env: Env<'_>) -> Result<String, Vec<ExpandError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let offset = text.len() - rest.len() + dollar;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(ExpandError {
                    offset,
                    message: "`${` is not closed with `}`".into(),
                    hint: "write `${NAME}` or `${NAME:-default}`; `$$` is a literal `$`".into(),
                });
                break;
            };
            match reference(&body[..close], env) {
                Ok(value) => out.push_str(&value),
                Err((message, hint)) => errors.push(ExpandError { offset, message, hint }),
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The value of the reference `inner` (what is between `${` and `}`).
fn reference(inner: &str, env: Env<'_>) -> Result<String, (String, String)> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_env_name(name) {
        return Err((
            format!("`${{{}}}` is not a variable reference llmdeck understands", shown(inner)),
            "write `${NAME}` or `${NAME:-default}`: NAME is letters, digits and `_`, not \
             starting with a digit"
                .into(),
        ));
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err((
            format!("environment variable `{name}` is not set"),
            format!("set it (`export {name}=...`), or give a default: `${{{name}:-value}}`"),
        )),
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands every string value of `config` in place; returns one issue per bad reference.
pub(crate) fn expand_config(config: &mut Config, env: Env<'_>) -> Vec<Issue> {
    let mut issues = Vec::new();
    visit_strings(config, &mut |path, value| {
        if !value.contains('$') {
            return;
        }
        match expand(value, env) {
            Ok(expanded) => *value = expanded,
            Err(errors) => issues.extend(errors.into_iter().map(|e| Issue {
                path: path.to_owned(),
                at: At::Inside(e.offset),
                kind: ErrorKind::Env,
                message: e.message,
                hint: Some(e.hint),
            })),
        }
    });
    issues
}

/// Calls `f` with the path and value of every string value in `config` (not keys, not choices).
fn visit_strings(config: &mut Config, f: &mut dyn FnMut(&str, &mut String)) {
    visit_path(&mut config.gpu.nvml_library, "gpu.nvml_library", f);
    visit_path(&mut config.logs.dir, "logs.dir", f);
    for (i, m) in config.models.iter_mut().enumerate() {
        let p = format!("models[{i}]");
        f(&format!("{p}.id"), &mut m.id);
        f(&format!("{p}.command"), &mut m.command);
        for (j, arg) in m.args.iter_mut().enumerate() {
            f(&format!("{p}.args[{j}]"), arg);
        }
        for (key, value) in m.env.iter_mut() {
            f(&format!("{p}.env.{key}"), value);
        }
        visit_path(&mut m.cwd, &format!("{p}.cwd"), f);
        if let Some(url) = &mut m.base_url {
            f(&format!("{p}.base_url"), url);
        }
        if let Some(name) = &mut m.api_key_env {
            f(&format!("{p}.api_key_env"), name);
        }
        f(&format!("{p}.health.path"), &mut m.health.path);
    }
    f("shopper.url", &mut config.shopper.url);
    f("shopper.consumer_id", &mut config.shopper.consumer_id);
    for (i, t) in config.tests.iter_mut().enumerate() {
        let p = format!("tests[{i}]");
        f(&format!("{p}.name"), &mut t.name);
        f(&format!("{p}.model"), &mut t.model);
        if let Some(deploy) = &mut t.deploy {
            f(&format!("{p}.deploy.command"), &mut deploy.command);
            if let Some(logs) = &mut deploy.logs_command {
                f(&format!("{p}.deploy.logs_command"), logs);
            }
            for (key, value) in deploy.env.iter_mut() {
                f(&format!("{p}.deploy.env.{key}"), value);
            }
        }
    }
    f("daemon.listen", &mut config.daemon.listen);
    visit_path(&mut config.daemon.token_file, "daemon.token_file", f);
}

/// Paths from YAML are always UTF-8 (they were strings), so the round trip is lossless.
fn visit_path(path: &mut Option<PathBuf>, at: &str, f: &mut dyn FnMut(&str, &mut String)) {
    if let Some(p) = path
        && let Some(text) = p.to_str()
    {
        let mut text = text.to_owned();
        f(at, &mut text);
        *p = PathBuf::from(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_and_default_forms() {
        assert_eq!(expand("${HOME}/m", &env).unwrap(), "/home/u/m");
        assert_eq!(expand("a-${NOPE:-local}", &env).unwrap(), "a-local");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${HOME:-x}", &env).unwrap(), "/home/u");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
    }

    #[test]
    fn keeps_bare_dollars_and_unescapes_double_dollars() {
        assert_eq!(expand("$HOME $$x 5$ $", &env).unwrap(), "$HOME $x 5$ $");
        assert_eq!(expand("$${HOME}", &env).unwrap(), "${HOME}");
    }

    #[test]
    fn reports_every_unset_variable_with_its_offset() {
        let errors = expand("${A}-${HOME}-${B}", &env).unwrap_err();
        let found: Vec<_> = errors.iter().map(|e| (e.offset, e.message.as_str())).collect();
        assert_eq!(found, [(0, "environment variable `A` is not set"), (13, "environment variable `B` is not set")]);
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(expand("${1X}", &env).unwrap_err()[0].message.contains("not a variable"));
        assert!(expand("${}", &env).is_err());
        assert!(expand("${A:?x}", &env).is_err());
        assert!(expand("x ${HOME", &env).unwrap_err()[0].message.contains("not closed"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("HF_TOKEN"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn expands_only_string_values_of_a_config() {
        let mut config = Config::default();
        config.shopper.consumer_id = "llmdeck-${NOPE:-local}".into();
        config.daemon.listen = "${MISSING}".into();
        let issues = expand_config(&mut config, &env);
        assert_eq!(config.shopper.consumer_id, "llmdeck-local");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "daemon.listen");
    }
}
