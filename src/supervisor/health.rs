//! Readiness and health probes over HTTP: `GET <health path>` and `GET /v1/models` at the
//! server root.

use std::time::Duration;

use reqwest::StatusCode;

use crate::protocol::HealthMode;

/// How a server answered one round of checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Healthy(HealthMode),
    /// Nothing listens yet: normal while a model loads.
    NotListening,
    Unhealthy(String),
}

#[derive(Clone)]
pub struct HealthChecker {
    client: reqwest::Client,
    base_url: String,
    health_path: String,
    api_key: Option<String>,
    /// Once the health path answered 404, only `/v1/models` is asked.
    models_only: bool,
}

impl HealthChecker {
    pub fn new(base_url: &str, health_path: &str, api_key: Option<String>, timeout: Duration) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()?;
        let health_path = if health_path.starts_with('/') { health_path.to_owned() } else { format!("/{health_path}") };
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            health_path,
            api_key,
            models_only: false,
        })
    }

    pub async fn check(&mut self) -> CheckOutcome {
        if !self.models_only {
            match self.get(&self.health_path.clone()).await {
                Ok(StatusCode::OK) => {}
                Ok(StatusCode::NOT_FOUND) => self.models_only = true,
                Ok(status) => return CheckOutcome::Unhealthy(answered(&self.health_path, status)),
                Err(outcome) => return outcome,
            }
        }
        match self.get("/v1/models").await {
            Ok(StatusCode::OK) => CheckOutcome::Healthy(if self.models_only {
                HealthMode::ModelsOnly
            } else {
                HealthMode::HealthAndModels
            }),
            Ok(status) => CheckOutcome::Unhealthy(answered("/v1/models", status)),
            Err(outcome) => outcome,
        }
    }

    async fn get(&self, path: &str) -> Result<StatusCode, CheckOutcome> {
        let mut req = self.client.get(format!("{}{path}", self.base_url));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        match req.send().await {
            Ok(resp) => Ok(resp.status()),
            Err(e) if e.is_connect() => Err(CheckOutcome::NotListening),
            Err(e) if e.is_timeout() => Err(CheckOutcome::Unhealthy(format!("{path} timed out"))),
            Err(e) => Err(CheckOutcome::Unhealthy(format!("{path}: {}", crate::util::error_chain(&e)))),
        }
    }
}

/// A non-200 answer, with the likely fix for the common ones.
fn answered(path: &str, status: StatusCode) -> String {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            format!("{path} answered {status}: does the server want a key? set api_key_env to the variable holding it")
        }
        _ => format!("{path} answered {status}"),
    }
}
