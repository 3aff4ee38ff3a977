//! The HTTP client: one method per call of the API, with timeouts per call (long for the
//! synchronous create, done and delete; short for reads), reads retried with backoff, writes
//! never retried blindly, bodies bounded.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::error::{ShopperError, classify, excerpt};
use super::types::*;

/// Create, done and delete are synchronous at the shopper and can take minutes; its own write
/// timeout is 300 s, so ours is longer (giving up earlier can leave a destroy half done).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(330);
/// Reads answer in well under a second when all is well.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies larger than this are not an answer of this API.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Tries of a read (the first plus retries) and the first backoff.
const READ_TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct ShopperClient {
    base: String,
    http: reqwest::Client,
}

impl ShopperClient {
    /// A client of the shopper at `base_url` (`http://host:port`). Loopback is never reached
    /// through an HTTP proxy; other hosts honour the proxy variables and `NO_PROXY`.
    pub fn new(base_url: &str) -> Result<Self, ShopperError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("llmdeck/", env!("CARGO_PKG_VERSION")));
        if crate::util::is_loopback_url(&base) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| ShopperError::Transport(crate::util::error_chain(&e)))?;
        Ok(Self { base, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn health(&self) -> Result<Health, ShopperError> {
        self.read("/health", &[]).await
    }

    pub async fn ready(&self) -> Result<Ready, ShopperError> {
        match self.read::<Ready>("/ready", &[]).await {
            Ok(r) if !r.ready => Err(ShopperError::NotReady("/ready says not ready".into())),
            other => other,
        }
    }

    pub async fn inventory(&self, query: &InventoryQuery) -> Result<Inventory, ShopperError> {
        self.read("/api/v1/inventory", &query.pairs()).await
    }

    pub async fn offer(&self, id: &str) -> Result<Offer, ShopperError> {
        self.read(&format!("/api/v1/inventory/{}", segment(id)), &[]).await
    }

    /// The sessions of `consumer_id`, newest first (optionally of one status).
    pub async fn sessions(&self, consumer_id: &str, status: Option<&str>) -> Result<SessionList, ShopperError> {
        let mut q = vec![("consumer_id", consumer_id.to_owned())];
        if let Some(s) = status {
            q.push(("status", s.to_owned()));
        }
        self.read("/api/v1/sessions", &q).await
    }

    pub async fn session(&self, id: &str) -> Result<Session, ShopperError> {
        self.read(&format!("/api/v1/sessions/{}", segment(id)), &[]).await
    }

    /// Rents an instance. Not retried: a create that timed out may have happened.
    pub async fn create(&self, request: &CreateSession) -> Result<Created, ShopperError> {
        self.write(Method::POST, "/api/v1/sessions", Some(serde_json::to_value(request).unwrap_or_default())).await
    }

    /// The graceful, verified destroy.
    pub async fn done(&self, id: &str) -> Result<Done, ShopperError> {
        self.write(Method::POST, &format!("/api/v1/sessions/{}/done", segment(id)), None).await
    }

    /// The forced destroy (a no-op on a stopping or stopped session).
    pub async fn delete(&self, id: &str) -> Result<Done, ShopperError> {
        self.write(Method::DELETE, &format!("/api/v1/sessions/{}", segment(id)), None).await
    }

    pub async fn extend(&self, id: &str, additional_hours: u32) -> Result<Done, ShopperError> {
        let body = serde_json::json!({ "additional_hours": additional_hours });
        self.write(Method::POST, &format!("/api/v1/sessions/{}/extend", segment(id)), Some(body)).await
    }

    pub async fn diagnostics(&self, id: &str) -> Result<Diagnostics, ShopperError> {
        self.read(&format!("/api/v1/sessions/{}/diagnostics", segment(id)), &[]).await
    }

    pub async fn cost(&self, session_id: &str) -> Result<Cost, ShopperError> {
        self.read("/api/v1/costs", &[("session_id", session_id.to_owned())]).await
    }

    pub async fn cost_summary(&self, consumer_id: &str) -> Result<CostSummary, ShopperError> {
        self.read("/api/v1/costs/summary", &[("consumer_id", consumer_id.to_owned())]).await
    }

    /// A read, retried with backoff while the answer is transient.
    async fn read<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ShopperError> {
        let mut wait = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let request = self.http.get(format!("{}{path}", self.base)).query(query).timeout(READ_TIMEOUT);
            match self.exchange(request).await {
                Err(e) if e.is_transient() && tries < READ_TRIES => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
    }

    async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ShopperError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).timeout(WRITE_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.exchange(request).await
    }

    async fn exchange<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ShopperError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = bounded_body(response).await?;
        if !status.is_success() {
            return Err(classify(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|_| ShopperError::Undecodable { excerpt: excerpt(&body) })
    }
}

/// A path segment with anything but safe characters escaped.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn transport(e: reqwest::Error) -> ShopperError {
    let chain = crate::util::error_chain(&e);
    if e.is_connect() && !e.is_timeout() {
        // Refused while the service starts (it does not listen during its start-up sweep).
        ShopperError::NotReady(format!("connection refused or failed: {chain}"))
    } else {
        ShopperError::Transport(chain)
    }
}

async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, ShopperError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| match e.is_timeout() {
        true => ShopperError::Transport(format!("the answer did not finish in time: {}", crate::util::error_chain(&e))),
        false => ShopperError::Undecodable { excerpt: format!("the body broke off: {}", crate::util::error_chain(&e)) },
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ShopperError::Undecodable { excerpt: format!("a body over {MAX_BODY} bytes") });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
