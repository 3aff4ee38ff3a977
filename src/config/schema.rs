//! The configuration schema with its defaults. Field names are the YAML keys.
//!
//! Each field's meaning, default and allowed range is documented once, in
//! `config.example.yaml` (the text `llmdeck config init` writes); the range checks live in
//! `validate.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ui: UiConfig,
    pub gpu: GpuConfig,
    pub logs: LogsConfig,
    pub models: Vec<ModelConfig>,
    pub shopper: ShopperConfig,
    pub tests: Vec<TestConfig>,
    pub runs: RunsConfig,
    pub daemon: DaemonConfig,
}

/// How test runs are kept and cleaned up after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// How long a run's cleanup (destroying a rented GPU, a test's `cleanup_command`) may take,
    /// on every exit path; shutdown waits for it that long at most.
    #[serde(with = "secs")]
    pub cleanup_budget_s: Duration,
    /// Report files kept per test in `<data>/results/`; the oldest beyond it are deleted.
    pub keep_reports: u32,
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self { cleanup_budget_s: Duration::from_secs(600), keep_reports: 100 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// How often the clock and countdowns tick, in milliseconds.
    pub refresh_ms: u64,
    pub theme: Theme,
    pub mouse: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self { refresh_ms: 1000, theme: Theme::Default, mouse: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Theme {
    #[default]
    Default,
    /// No colours at all (like NO_COLOR).
    Monochrome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    pub backend: GpuBackend,
    /// Path of libnvidia-ml.so; else $LLMDECK_NVML_LIB; else the system default.
    pub nvml_library: Option<PathBuf>,
    pub sample_ms: u64,
    pub history_s: u64,
    /// Number of GPUs the simulated backend shows.
    pub simulated_count: u32,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self { backend: GpuBackend::Auto, nvml_library: None, sample_ms: 1000, history_s: 600, simulated_count: 2 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuBackend {
    /// NVML if it loads, else none.
    #[default]
    Auto,
    Nvml,
    Simulated,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Log directory; default: $XDG_STATE_HOME/llmdeck/logs.
    pub dir: Option<PathBuf>,
    pub max_file_mb: u64,
    pub keep_files: u32,
    pub ring_lines: usize,
    /// What the Logs pane may hold in memory across every source, in MiB: past it the oldest
    /// lines go first, whatever `ring_lines` allows.
    pub memory_mb: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self { dir: None, max_file_mb: 50, keep_files: 5, ring_lines: 20_000, memory_mb: 128 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    pub port: u16,
    /// Default: http://127.0.0.1:<port>
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of an environment variable holding the server's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "yes")]
    pub autostart: bool,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub restart: RestartConfig,
    #[serde(default = "default_stop_timeout", with = "secs")]
    pub stop_timeout_s: Duration,
    /// A shell command that stops what the model's command started outside its own process
    /// tree (a container: `docker stop llm-qwen`): run on every stop before SIGTERM, and by
    /// the model's keeper if llmdeck is gone.
    #[serde(default)]
    pub stop_command: Option<String>,
}

impl ModelConfig {
    /// The server's API key: `api_key_env` looked up in the model's own `env:` first, then in
    /// llmdeck's environment.
    pub fn api_key(&self) -> Option<String> {
        let var = self.api_key_env.as_ref()?;
        self.env.get(var).cloned().or_else(|| std::env::var(var).ok())
    }

    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub path: String,
    #[serde(with = "secs")]
    pub interval_s: Duration,
    #[serde(with = "secs")]
    pub timeout_s: Duration,
    pub failure_threshold: u32,
    #[serde(with = "secs")]
    pub startup_timeout_s: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval_s: Duration::from_secs(10),
            timeout_s: Duration::from_secs(5),
            failure_threshold: 3,
            startup_timeout_s: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    #[default]
    OnFailure,
    Always,
}

impl RestartPolicy {
    /// The YAML spelling.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    pub max_restarts: u32,
    #[serde(with = "secs")]
    pub delay_s: Duration,
    #[serde(with = "secs")]
    pub max_delay_s: Duration,
    #[serde(with = "secs")]
    pub reset_after_s: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            delay_s: Duration::from_secs(5),
            max_delay_s: Duration::from_secs(300),
            reset_after_s: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopperConfig {
    pub url: String,
    /// Who owns our rentals. Empty: an id unique to this installation, generated once into the
    /// data dir (two machines on defaults must never judge each other's rentals).
    pub consumer_id: String,
    pub auto_cleanup_orphans: bool,
    /// How often the janitor resolves our sessions against the session ledger.
    #[serde(with = "secs")]
    pub janitor_interval_s: Duration,
    /// How often health and sessions are refreshed for the header and the Sessions view.
    #[serde(with = "secs")]
    pub poll_s: Duration,
    /// How many offers a run tries when offers turn out taken (stale inventory).
    pub create_attempts: u32,
    /// A run polls a new session at this interval, growing x1.5 up to `poll_max_s`.
    #[serde(with = "secs")]
    pub poll_initial_s: Duration,
    #[serde(with = "secs")]
    pub poll_max_s: Duration,
    /// How long a run waits for its session to be `running`.
    #[serde(with = "secs")]
    pub wait_running_timeout_s: Duration,
    /// How long a run retries SSH (the instance's sshd may lag the `running` status).
    #[serde(with = "secs")]
    pub ssh_connect_timeout_s: Duration,
    /// A destroyed session still `stopping` after this long is STUCK: alerted, destroy retried.
    #[serde(with = "secs")]
    pub stuck_after_s: Duration,
}

impl Default for ShopperConfig {
    fn default() -> Self {
        Self {
            url: "http://localhost:8080".into(),
            consumer_id: String::new(),
            auto_cleanup_orphans: true,
            janitor_interval_s: Duration::from_secs(300),
            poll_s: Duration::from_secs(15),
            create_attempts: 3,
            poll_initial_s: Duration::from_secs(2),
            poll_max_s: Duration::from_secs(30),
            wait_running_timeout_s: Duration::from_secs(900),
            ssh_connect_timeout_s: Duration::from_secs(300),
            stuck_after_s: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestKind {
    /// Rent a GPU through the shopper and deploy the model on it.
    Deploy,
    /// Probe a model from `models:`.
    Local,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    pub name: String,
    pub kind: TestKind,
    /// For `deploy`: the model to serve (e.g. a Hugging Face id). For `local`: a model id from `models:`.
    pub model: String,
    #[serde(default)]
    pub max_price: Option<f64>,
    #[serde(default = "one_hour")]
    pub reservation_hours: u32,
    #[serde(default)]
    pub deploy: Option<DeployConfig>,
    #[serde(default)]
    pub probe: ProbeConfig,
    /// Local tests: how long the run waits for its model to be ready (starting it if stopped).
    #[serde(default = "default_wait_ready", with = "secs")]
    pub wait_ready_s: Duration,
    /// A shell command run after every run of this test, whatever its outcome, within
    /// `runs.cleanup_budget_s` (its output goes to the test's log).
    #[serde(default)]
    pub cleanup_command: Option<String>,
    /// Deployment tests: the GPU memory the model needs (else the built-in table or an
    /// estimate from the parameter count in the model's name).
    #[serde(default)]
    pub min_vram_gb: Option<f64>,
    /// Deployment tests: only offers of this GPU type (e.g. `RTX 4090`).
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// Deployment tests: only offers at least this reliable (0..1).
    #[serde(default)]
    pub min_reliability: Option<f64>,
    /// Deployment tests: keep the session after the run (it keeps billing; shown in red).
    #[serde(default)]
    pub keep_session: bool,
    /// What a run must reach to pass.
    #[serde(default)]
    pub pass: PassConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassConfig {
    /// The share of requests that may fail (0 = none).
    pub max_error_rate: f64,
    pub min_output_tokens_per_s: Option<f64>,
    pub max_ttft_p95_ms: Option<f64>,
    /// The share of prompts with an expected answer that must get it (0..1).
    pub min_expected_answer_rate: Option<f64>,
}

impl Default for PassConfig {
    fn default() -> Self {
        Self {
            max_error_rate: 0.0,
            min_output_tokens_per_s: None,
            max_ttft_p95_ms: None,
            min_expected_answer_rate: None,
        }
    }
}

fn one_hour() -> u32 {
    1
}

fn default_wait_ready() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Command run on the instance; `{model}` and `{port}` are replaced.
    pub command: String,
    #[serde(default = "default_deploy_port")]
    pub port: u16,
    #[serde(default = "default_ready_timeout", with = "secs")]
    pub ready_timeout_s: Duration,
    /// For a command that detaches (`docker run -d ...`): follows the model's output.
    #[serde(default)]
    pub logs_command: Option<String>,
    /// The remote command's environment (sent over the SSH channel, never in argv; values are
    /// never logged).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Replaces `{quantization}` in the command, and halves the memory estimate per step.
    #[serde(default)]
    pub quantization: Option<String>,
    /// Replaces `{max_model_len}` in the command.
    #[serde(default)]
    pub max_model_len: Option<u32>,
}

fn default_deploy_port() -> u16 {
    8000
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(900)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub requests: u32,
    pub concurrency: u32,
    pub max_tokens: u32,
    pub stream: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { requests: 20, concurrency: 4, max_tokens: 64, stream: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub listen: String,
    /// File holding the token clients must present; default: generated in the data dir.
    pub token_file: Option<PathBuf>,
    /// File holding a second token that can watch but not change anything.
    pub readonly_token_file: Option<PathBuf>,
    pub max_clients: u32,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7777".into(),
            token_file: None,
            readonly_token_file: None,
            max_clients: 32,
            metrics_public: false,
        }
    }
}

/// Durations in YAML are seconds (`5`, `0.5`).
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        // Below 10 ms a loop would spin; above a week a deadline is a typo (and would overflow).
        if !v.is_finite() || !(0.01..=604_800.0).contains(&v) {
            return Err(D::Error::custom(format!(
                "a duration must be a number of seconds from 0.01 to 604800 (7 days), got {v}"
            )));
        }
        Duration::try_from_secs_f64(v).map_err(|e| D::Error::custom(format!("duration out of range: {e}")))
    }
}
