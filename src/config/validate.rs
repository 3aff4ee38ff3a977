//! Rules a parsed configuration must follow beyond its types. Every rule is checked, so one run
//! of `llmdeck config check` lists every problem.
//!
//! Ranges (why these bounds):
//! - `ui.refresh_ms` 50..=60000: faster redraws than 20/s show nothing new and cost CPU.
//! - `gpu.sample_ms` 100..=60000: NVML counters update about every 100 ms.
//! - `gpu.history_s` 1..=604800 (a week), and at most 100000 samples (`history_s` / `sample_ms`) per GPU, so
//!   history stays bounded.
//! - `gpu.simulated_count` 1..=64.
//! - `logs.max_file_mb` 1..=10240; `logs.keep_files` 0..=1000 (0 keeps only the current file);
//!   `logs.ring_lines` 1..=1000000 per source; `logs.memory_mb` 8..=65536; `runs.keep_reports` 1..=100000 per test.
//! - `restart.max_restarts` may be 0 (never restart automatically); `delay_s` ≤ `max_delay_s`.
//! - `health.failure_threshold` ≥ 1; durations (`*_s`) are positive (checked while parsing).
//! - `max_price` in (0, 100] USD per hour; `reservation_hours` 1..=12 (the shopper's limit).
//! - `probe.requests` 1..=100000, `probe.concurrency` 1..=1024, `probe.max_tokens` 1..=131072.
//! - `daemon.max_clients` 1..=1024.
//! - Paths (`logs.dir`, `cwd`, `token_file`, `nvml_library`) are absolute: llmdeck runs from
//!   anywhere (and as a daemon), so relative paths would move with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use super::error::{ErrorKind, shown};
use super::expand::is_env_name;
use super::schema::{Config, ModelConfig, TestConfig, TestKind};
use super::source_map::SourceMap;
use super::suggest::closest;

/// Which part of an entry an issue points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Key,
    Value,
    /// A byte offset inside a string value.
    Inside(usize),
}

/// A problem at a key path, before it is given a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub path: String,
    pub at: At,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

/// Checks every rule; returns every broken one.
pub(crate) fn validate(config: &Config, map: &SourceMap) -> Vec<Issue> {
    let mut v = Validator { map, issues: Vec::new() };
    v.ui(config);
    v.gpu(config);
    v.logs(config);
    v.models(config);
    v.shopper(config);
    v.tests(config);
    v.daemon(config);
    v.issues
}

struct Validator<'a> {
    map: &'a SourceMap,
    issues: Vec<Issue>,
}

impl Validator<'_> {
    fn push(&mut self, path: &str, at: At, message: String, hint: Option<String>) {
        self.issues.push(Issue { path: path.to_owned(), at, kind: ErrorKind::Invalid, message, hint });
    }

    fn value(&mut self, path: &str, message: String, hint: impl Into<String>) {
        self.push(path, At::Value, message, Some(hint.into()));
    }

    /// `path` must be within `range`.
    fn range<T>(&mut self, path: &str, value: T, range: std::ops::RangeInclusive<T>, unit: &str)
    where
        T: PartialOrd + std::fmt::Display + Copy,
    {
        if !range.contains(&value) {
            let (lo, hi) = (*range.start(), *range.end());
            self.value(
                path,
                format!("`{path}` is {value}{unit}; it must be between {lo} and {hi}{unit}"),
                format!("pick a value from {lo} to {hi}"),
            );
        }
    }

    fn absolute_path(&mut self, path: &str, value: Option<&Path>) {
        let Some(p) = value else { return };
        if p.as_os_str().is_empty() {
            self.value(path, format!("`{path}` is empty"), "remove the key to use the default, or give a path");
        } else if !p.is_absolute() {
            let hint = if p.starts_with("~") {
                "`~` is not expanded here; write `${HOME}/...`"
            } else {
                "write an absolute path (`/...` or `${HOME}/...`); llmdeck may run from any \
                 directory"
            };
            self.value(path, format!("`{path}` is a relative path: `{}`", shown(&p.to_string_lossy())), hint);
        }
    }

    fn http_url(&mut self, path: &str, url: &str) {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            self.value(
                path,
                format!("`{path}` is not an http(s) URL: `{}`", shown(url)),
                "write it like `http://127.0.0.1:8080`",
            );
        }
    }

    fn ui(&mut self, c: &Config) {
        self.range("ui.refresh_ms", c.ui.refresh_ms, 50..=60_000, " ms");
    }

    fn gpu(&mut self, c: &Config) {
        let g = &c.gpu;
        self.range("gpu.sample_ms", g.sample_ms, 100..=60_000, " ms");
        self.range("gpu.history_s", g.history_s, 1..=7 * 24 * 3600, " s");
        let samples = g.history_s.saturating_mul(1000) / g.sample_ms.max(1);
        if samples > 100_000 {
            self.value(
                "gpu.history_s",
                format!(
                    "`gpu.history_s` / `gpu.sample_ms` keeps {samples} samples per GPU; the \
                     limit is 100000"
                ),
                "shorten history_s or sample less often (raise sample_ms)",
            );
        }
        self.range("gpu.simulated_count", g.simulated_count, 1..=64, "");
        self.absolute_path("gpu.nvml_library", g.nvml_library.as_deref());
    }

    fn logs(&mut self, c: &Config) {
        let l = &c.logs;
        self.absolute_path("logs.dir", l.dir.as_deref());
        self.range("logs.max_file_mb", l.max_file_mb, 1..=10_240, " MiB");
        self.range("logs.keep_files", l.keep_files, 0..=1000, "");
        self.range("logs.ring_lines", l.ring_lines, 1..=1_000_000, "");
        self.range("logs.memory_mb", l.memory_mb, 8..=65_536, " MiB");
        self.range("runs.keep_reports", c.runs.keep_reports, 1..=100_000, "");
    }

    fn models(&mut self, c: &Config) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut ports: HashMap<u16, usize> = HashMap::new();
        for (i, m) in c.models.iter().enumerate() {
            let p = format!("models[{i}]");
            self.id(&format!("{p}.id"), &m.id, "model", &mut ids, i);
            self.model(&p, m);
            if m.port == 0 {
                self.value(
                    &format!("{p}.port"),
                    "`port` is 0; a model server needs a real port".into(),
                    "pick a free port from 1024 to 65535",
                );
            } else if let Some(&first) = ports.get(&m.port) {
                let line = self.map.value_pos(&format!("models[{first}].port")).line;
                self.value(
                    &format!("{p}.port"),
                    format!("port {} is already used by model `{}` (line {line})", m.port, shown(&c.models[first].id)),
                    "every model needs its own port",
                );
            } else {
                ports.insert(m.port, i);
            }
        }
        if let Some(daemon_port) = listen_port(&c.daemon.listen)
            && let Some(&i) = ports.get(&daemon_port)
        {
            self.value(
                &format!("models[{i}].port"),
                format!("port {daemon_port} is also the daemon's port (`daemon.listen`)"),
                "give the model or the daemon another port",
            );
        }
    }

    fn model(&mut self, p: &str, m: &ModelConfig) {
        if m.command.trim().is_empty() {
            self.value(
                &format!("{p}.command"),
                "`command` is empty".into(),
                "the program that serves the model, e.g. `vllm`",
            );
        }
        for key in m.env.keys() {
            if !is_env_name(key) {
                self.push(
                    &format!("{p}.env.{key}"),
                    At::Key,
                    format!("`{}` is not a valid environment variable name", shown(key)),
                    Some("names are letters, digits and `_`, not starting with a digit".into()),
                );
            }
        }
        self.absolute_path(&format!("{p}.cwd"), m.cwd.as_deref());
        if let Some(url) = &m.base_url {
            self.http_url(&format!("{p}.base_url"), url);
        }
        if let Some(name) = &m.api_key_env
            && !is_env_name(name)
        {
            self.value(
                &format!("{p}.api_key_env"),
                format!("`api_key_env` must name an environment variable, got `{}`", shown(name)),
                "write the variable's name (e.g. `VLLM_API_KEY`), not the key itself",
            );
        }
        if !m.health.path.starts_with('/') {
            self.value(
                &format!("{p}.health.path"),
                format!("`health.path` must start with `/`, got `{}`", shown(&m.health.path)),
                "e.g. `/health`",
            );
        }
        if m.health.failure_threshold == 0 {
            self.value(
                &format!("{p}.health.failure_threshold"),
                "`failure_threshold` is 0; it must be at least 1".into(),
                "the number of failed checks in a row that make the model unhealthy",
            );
        }
        if m.restart.delay_s > m.restart.max_delay_s {
            self.value(
                &format!("{p}.restart.max_delay_s"),
                format!(
                    "`max_delay_s` ({} s) is shorter than `delay_s` ({} s)",
                    m.restart.max_delay_s.as_secs_f64(),
                    m.restart.delay_s.as_secs_f64()
                ),
                "max_delay_s caps the growing backoff; make it at least delay_s",
            );
        }
    }

    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` and unique among `seen`.
    fn id<'c>(&mut self, path: &str, id: &'c str, what: &str, seen: &mut HashMap<&'c str, usize>, index: usize) {
        if !is_valid_id(id) {
            self.value(
                path,
                format!("{what} {} `{}` is not a valid name", id_word(what), shown(id)),
                "use 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit \
                 (it becomes part of file names), e.g. `qwen-7b`",
            );
            return;
        }
        let list = if what == "model" { "models" } else { "tests" };
        if let Some(&first) = seen.get(id) {
            let field = path.rsplit('.').next().unwrap_or("id");
            let line = self.map.value_pos(&format!("{list}[{first}].{field}")).line;
            self.value(
                path,
                format!("duplicate {what} {} `{id}` (first at line {line})", id_word(what)),
                format!("every {what} needs its own {}", id_word(what)),
            );
        } else {
            seen.insert(id, index);
        }
    }

    fn shopper(&mut self, c: &Config) {
        self.http_url("shopper.url", &c.shopper.url);
        let id = &c.shopper.consumer_id;
        let ok = id.is_empty()
            || (1..=128).contains(&id.len())
                && id.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
        if !ok {
            self.value(
                "shopper.consumer_id",
                format!("`shopper.consumer_id` is not a valid id: `{}`", shown(id)),
                "use 1-128 letters, digits, `.`, `_` or `-`, stable per installation, or leave it \
                 out for an id generated once for this installation",
            );
        }
    }

    fn tests(&mut self, c: &Config) {
        if !(1..=10).contains(&c.shopper.create_attempts) {
            self.value(
                "shopper.create_attempts",
                format!("`shopper.create_attempts` must be 1-10, got {}", c.shopper.create_attempts),
                "3 tries three offers before giving up",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, t) in c.tests.iter().enumerate() {
            let p = format!("tests[{i}]");
            self.id(&format!("{p}.name"), &t.name, "test", &mut names, i);
            if t.model.trim().is_empty() {
                self.value(
                    &format!("{p}.model"),
                    "`model` is empty".into(),
                    "for a deploy test, the model to serve; for a local test, a model id",
                );
            }
            match t.kind {
                TestKind::Deploy => self.deploy_test(&p, t),
                TestKind::Local => self.local_test(&p, t, c),
            }
            if t.cleanup_command.as_ref().is_some_and(|c| c.trim().is_empty()) {
                self.value(
                    &format!("{p}.cleanup_command"),
                    "`cleanup_command` is empty".into(),
                    "a shell command to run after every run, or leave it out",
                );
            }
            self.fraction(&format!("{p}.min_reliability"), t.min_reliability, "e.g. 0.95");
            self.fraction(
                &format!("{p}.pass.max_error_rate"),
                Some(t.pass.max_error_rate),
                "0 allows no failed request",
            );
            if let Some(gb) = t.min_vram_gb
                && !(gb.is_finite() && gb > 0.0 && gb <= 2048.0)
            {
                self.value(
                    &format!("{p}.min_vram_gb"),
                    format!("`min_vram_gb` must be a number of GB from 0 to 2048, got {gb}"),
                    "the GPU memory the model needs, e.g. 16",
                );
            }
            let probe = &t.probe;
            self.range(&format!("{p}.probe.requests"), probe.requests, 1..=100_000, "");
            self.range(&format!("{p}.probe.concurrency"), probe.concurrency, 1..=1024, "");
            self.range(&format!("{p}.probe.max_tokens"), probe.max_tokens, 1..=131_072, "");
        }
    }

    fn fraction(&mut self, path: &str, value: Option<f64>, hint: &str) {
        if let Some(v) = value
            && !(0.0..=1.0).contains(&v)
        {
            let key = path.rsplit('.').next().unwrap_or(path);
            self.value(path, format!("`{key}` must be from 0 to 1, got {v}"), hint);
        }
    }

    fn deploy_test(&mut self, p: &str, t: &TestConfig) {
        let path = format!("{p}.wait_ready_s");
        if self.map.has(&path) {
            self.push(
                &path,
                At::Key,
                "`wait_ready_s` applies only to `kind: local` tests".into(),
                Some("a deploy test waits `deploy.ready_timeout_s` for its server".into()),
            );
        }
        match t.max_price {
            None => self.push(
                p,
                At::Value,
                format!("deploy test `{}` has no `max_price`", shown(&t.name)),
                Some(
                    "a deploy test rents a GPU: set `max_price` (USD per hour, e.g. 0.50) so \
                     it never rents an expensive one"
                        .into(),
                ),
            ),
            Some(price) if !(price.is_finite() && price > 0.0 && price <= 100.0) => {
                self.value(
                    &format!("{p}.max_price"),
                    format!("`max_price` is {price}; it must be above 0 and at most 100"),
                    "USD per hour, e.g. 0.50",
                );
            }
            Some(_) => {}
        }
        self.range(&format!("{p}.reservation_hours"), t.reservation_hours, 1..=12, " h");
        match &t.deploy {
            None => self.push(
                p,
                At::Value,
                format!("deploy test `{}` has no `deploy:` section", shown(&t.name)),
                Some("add `deploy: { command: \"vllm serve {model} --port {port}\", port: 8000 }`".into()),
            ),
            Some(d) => {
                if d.command.trim().is_empty() {
                    self.value(
                        &format!("{p}.deploy.command"),
                        "`deploy.command` is empty".into(),
                        "the command that serves the model on the rented machine",
                    );
                }
                if d.port == 0 {
                    self.value(
                        &format!("{p}.deploy.port"),
                        "`deploy.port` is 0".into(),
                        "the port the deployed server listens on, e.g. 8000",
                    );
                }
            }
        }
    }

    fn local_test(&mut self, p: &str, t: &TestConfig, c: &Config) {
        if !t.model.trim().is_empty() && !c.models.iter().any(|m| m.id == t.model) {
            let mut ids: Vec<&str> = c.models.iter().map(|m| m.id.as_str()).collect();
            ids.dedup();
            let hint = match closest(&t.model, ids.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if ids.is_empty() => "there are no models in `models:`".into(),
                None => format!("the models are: {}", ids.join(", ")),
            };
            self.value(
                &format!("{p}.model"),
                format!("local test `{}` names model `{}`, which is not in `models:`", shown(&t.name), shown(&t.model)),
                hint,
            );
        }
        for key in ["deploy", "max_price", "reservation_hours"] {
            // (wait_ready_s is the other way round: it applies only to local tests.)
            let path = format!("{p}.{key}");
            if self.map.has(&path) {
                self.push(
                    &path,
                    At::Key,
                    format!("`{key}` applies only to `kind: deploy` tests"),
                    Some("remove it, or make the test `kind: deploy`".into()),
                );
            }
        }
    }

    fn daemon(&mut self, c: &Config) {
        let d = &c.daemon;
        if d.listen.parse::<SocketAddr>().is_err() {
            self.value(
                "daemon.listen",
                format!("`daemon.listen` is not an address: `{}`", shown(&d.listen)),
                "write IP:PORT, e.g. `127.0.0.1:7777`",
            );
        }
        self.absolute_path("daemon.token_file", d.token_file.as_deref());
        self.absolute_path("daemon.readonly_token_file", d.readonly_token_file.as_deref());
        if d.token_file.is_some() && d.token_file == d.readonly_token_file {
            self.value(
                "daemon.readonly_token_file",
                "`readonly_token_file` is the same file as `token_file`".into(),
                "the read-only token must differ from the full one; point it at another file",
            );
        }
        self.range("daemon.max_clients", d.max_clients, 1..=1024, "");
    }
}

fn id_word(what: &str) -> &'static str {
    if what == "model" { "id" } else { "name" }
}

fn listen_port(listen: &str) -> Option<u16> {
    listen.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Names that become path components: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "qwen-7b", "Llama_3.1-8B", &"x".repeat(64)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "../etc", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }
}
