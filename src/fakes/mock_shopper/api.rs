//! The fake's HTTP API: the shopper's endpoints, status codes and bodies, and the `/_fake`
//! admin API that arms faults.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{HARD_LIMIT_HOURS, Rental, Shop, Status, offers};

pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/inventory/{id}", get(offer))
        .route("/api/v1/sessions", get(list).post(create))
        .route("/api/v1/sessions/{id}", get(session).delete(delete))
        .route("/api/v1/sessions/{id}/done", post(done))
        .route("/api/v1/sessions/{id}/extend", post(extend))
        .route("/api/v1/sessions/{id}/diagnostics", get(diagnostics))
        .route("/api/v1/costs", get(cost))
        .route("/api/v1/costs/summary", get(cost_summary))
        .layer(middleware::from_fn_with_state(shop.clone(), faults_and_request_id))
        // The admin API is neither faulted nor counted.
        .route("/_fake/next-create-stale", post(arm_stale))
        .route("/_fake/provision-fail", post(arm_provision_fail))
        .route("/_fake/destroy-fail-once", post(arm_destroy_fail))
        .route("/_fake/health", post(arm_health))
        .route("/_fake/ghost/{id}", post(ghost))
        .route("/_fake/next-html-502", post(arm_html))
        .route("/_fake/next-truncated", post(arm_truncated))
        .route("/_fake/sessions", get(all_sessions))
        .with_state(shop)
}

fn request_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..0x1000),
        fastrand::u64(..1 << 48)
    )
}

/// Echoes (or assigns) `X-Request-ID`, and serves an armed HTML 502 or truncated body.
async fn faults_and_request_id(State(shop): State<Arc<Shop>>, request: axum::extract::Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(request_id);
    let (html, truncated) = {
        let mut inner = shop.lock();
        let f = &mut inner.faults;
        (std::mem::take(&mut f.next_html_502), std::mem::take(&mut f.next_truncated))
    };
    let mut response = if html {
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        (StatusCode::BAD_GATEWAY, [("content-type", "text/html")], page).into_response()
    } else if truncated {
        (StatusCode::OK, [("content-type", "application/json")], r#"{"sessions":[{"id":"3f2a","consumer_id":"#)
            .into_response()
    } else {
        next.run(request).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": text.into(), "request_id": request_id() }))).into_response()
}

fn error_with(status: StatusCode, mut body: Value) -> Response {
    body["request_id"] = json!(request_id());
    (status, axum::Json(body)).into_response()
}

async fn health(State(shop): State<Arc<Shop>>) -> Response {
    if shop.lock().faults.health_unavailable {
        let body = json!({ "status": "unavailable", "timestamp": Utc::now() });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let body = json!({ "status": "ok", "timestamp": Utc::now(),
        "services": { "lifecycle": "running", "inventory": "ok", "ready": "true" } });
    axum::Json(body).into_response()
}

async fn ready(State(shop): State<Arc<Shop>>) -> Response {
    let ready = !shop.lock().faults.health_unavailable;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "ready": ready, "timestamp": Utc::now() }))).into_response()
}

async fn metrics(State(shop): State<Arc<Shop>>) -> Response {
    let inner = shop.lock();
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for r in inner.sessions.values().filter(|r| r.status.is_active()) {
        *counts.entry((r.offer.provider, r.status.name())).or_default() += 1;
    }
    let mut out = String::from("# HELP gpu_sessions_active Active sessions\n# TYPE gpu_sessions_active gauge\n");
    for ((provider, status), n) in counts {
        out.push_str(&format!("gpu_sessions_active{{provider=\"{provider}\",status=\"{status}\"}} {n}\n"));
    }
    out.push_str("# TYPE gpu_orphans_detected_total counter\ngpu_orphans_detected_total 0\n");
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Deserialize, Default)]
struct InventoryQuery {
    provider: Option<String>,
    gpu_type: Option<String>,
    location: Option<String>,
    min_vram: Option<String>,
    max_price: Option<String>,
    min_gpu_count: Option<String>,
    gpu_count: Option<String>,
    min_reliability: Option<String>,
    min_availability_confidence: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A query parameter as a number, or the 400 the service answers.
fn number<T: std::str::FromStr>(name: &str, v: &Option<String>) -> Result<Option<T>, String> {
    match v {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| format!("invalid {name}: {text}")),
    }
}

async fn inventory(Query(q): Query<InventoryQuery>) -> Response {
    let parsed = (|| {
        Ok::<_, String>((
            number::<u32>("min_vram", &q.min_vram)?,
            number::<f64>("max_price", &q.max_price)?,
            number::<u32>("min_gpu_count", &q.min_gpu_count.clone().or(q.gpu_count.clone()))?,
            number::<f64>("min_reliability", &q.min_reliability)?,
            number::<f64>("min_availability_confidence", &q.min_availability_confidence)?,
            number::<usize>("limit", &q.limit)?,
            number::<usize>("offset", &q.offset)?,
        ))
    })();
    let (min_vram, max_price, min_count, min_rel, min_conf, limit, offset) = match parsed {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut all = offers();
    all.retain(|o| {
        q.provider.as_ref().is_none_or(|p| p == o.provider)
            && q.gpu_type.as_ref().is_none_or(|g| g == o.gpu_type)
            && q.location.as_ref().is_none_or(|l| o.location.contains(l.as_str()))
            && min_vram.is_none_or(|v| o.vram_gb >= v)
            && max_price.is_none_or(|p| o.price <= p)
            && min_count.is_none_or(|c| c <= 1)
            && min_rel.is_none_or(|r| o.reliability >= r)
            && min_conf.is_none_or(|c| o.confidence >= c)
    });
    all.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.price.total_cmp(&b.price)));
    let total = all.len();
    let now = Utc::now();
    let page: Vec<Value> =
        all.iter().skip(offset.unwrap_or(0)).take(limit.unwrap_or(usize::MAX)).map(|o| o.json(now)).collect();
    axum::Json(json!({ "offers": page, "count": page.len(), "total": total })).into_response()
}

async fn offer(Path(id): Path<String>) -> Response {
    match offers().into_iter().find(|o| o.id == id) {
        Some(o) => axum::Json(o.json(Utc::now())).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("offer not found: {id}")),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    consumer_id: Option<String>,
    status: Option<String>,
    provider: Option<String>,
    limit: Option<usize>,
}

async fn list(State(shop): State<Arc<Shop>>, Query(q): Query<ListQuery>) -> Response {
    let inner = shop.lock();
    let mut sessions: Vec<&Rental> = inner
        .sessions
        .values()
        .filter(|r| q.consumer_id.as_ref().is_none_or(|c| *c == r.consumer_id))
        .filter(|r| q.status.as_ref().is_none_or(|s| s == r.status.name()))
        .filter(|r| q.provider.as_ref().is_none_or(|p| p == r.offer.provider))
        .collect();
    sessions.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let list: Vec<Value> = sessions.iter().take(q.limit.unwrap_or(usize::MAX)).map(|r| r.json(shop.ssh_port)).collect();
    axum::Json(json!({ "count": list.len(), "sessions": list })).into_response()
}

async fn session(State(shop): State<Arc<Shop>>, Path(id): Path<String>) -> Response {
    match shop.lock().sessions.get(&id) {
        Some(r) => axum::Json(r.json(shop.ssh_port)).into_response(),
        None => error(StatusCode::NOT_FOUND, "record not found"),
    }
}

const WORKLOADS: [&str; 9] =
    ["llm", "llm_vllm", "llm_tgi", "training", "batch", "interactive", "inference", "ssh", "benchmark"];

async fn create(State(shop): State<Arc<Shop>>, body: Bytes) -> Response {
    let answer = create_now(shop.clone(), body).await;
    if answer.status() == StatusCode::CREATED {
        tokio::time::sleep(shop.timings.create).await;
    }
    answer
}

async fn create_now(shop: Arc<Shop>, body: Bytes) -> Response {
    if body.len() > 1024 * 1024 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(consumer), Some(offer_id), Some(workload)) =
        (text("consumer_id"), text("offer_id"), text("workload_type"))
    else {
        return error(StatusCode::BAD_REQUEST, "consumer_id, offer_id and workload_type are required");
    };
    if !WORKLOADS.contains(&workload.as_str()) {
        return error(StatusCode::BAD_REQUEST, format!("invalid workload_type: {workload}"));
    }
    let hours = req.get("reservation_hours").and_then(Value::as_u64).unwrap_or(0);
    if !(1..=u64::from(HARD_LIMIT_HOURS)).contains(&hours) {
        return error(StatusCode::BAD_REQUEST, "reservation_hours must be between 1 and 12");
    }
    if let Some(disk) = req.get("disk_gb").and_then(Value::as_u64)
        && disk < 20
    {
        return error_with(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("disk_gb {disk} is below the minimum"), "error_type": "insufficient_disk",
                    "requested_gb": disk, "minimum_gb": 20, "recommended_gb": 50 }),
        );
    }
    let Some(offer) = offers().into_iter().find(|o| o.id == offer_id) else {
        return error(StatusCode::NOT_FOUND, format!("offer not found: {offer_id}"));
    };
    let (key, pem) = match tokio::task::spawn_blocking(Shop::new_key).await {
        Ok(Ok(k)) => k,
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "key generation failed"),
    };
    let mut inner = shop.lock();
    if std::mem::take(&mut inner.faults.next_create_stale) {
        return error_with(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "offer is no longer available", "error_type": "stale_inventory", "offer_id": offer_id,
                    "provider": offer.provider, "retry_suggested": true,
                    "message": "Refresh the inventory and choose another offer" }),
        );
    }
    if let Some(existing) =
        inner.sessions.values().find(|r| r.consumer_id == consumer && r.offer.id == offer_id && r.status.is_active())
    {
        return error(
            StatusCode::CONFLICT,
            format!("consumer {consumer} already has active session {} for offer {offer_id}", existing.id),
        );
    }
    let id = Shop::new_id(&mut inner);
    let now = Utc::now();
    let rental = Rental {
        id: id.clone(),
        consumer_id: consumer,
        offer,
        workload_type: workload,
        reservation_hours: hours as u32,
        created_at: now,
        expires_at: now + chrono::Duration::hours(hours as i64),
        stopped_at: None,
        status: Status::Provisioning,
        error: None,
        key,
        processes: Vec::new(),
        connections: Vec::new(),
    };
    let json = rental.json(shop.ssh_port);
    inner.sessions.insert(id.clone(), rental);
    let failure = if inner.faults.provision_error_always {
        inner.faults.provision_error.clone()
    } else {
        inner.faults.provision_error.take()
    };
    drop(inner);
    let shop2 = shop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(shop2.timings.provision).await;
        let mut inner = shop2.lock();
        if let Some(r) = inner.sessions.get_mut(&id)
            && r.status == Status::Provisioning
        {
            match failure {
                Some(e) => {
                    r.status = Status::Failed;
                    r.error = Some(e);
                }
                None => r.status = Status::Running,
            }
        }
    });
    (StatusCode::CREATED, axum::Json(json!({ "session": json, "ssh_private_key": pem }))).into_response()
}

/// The synchronous destroy behind done and DELETE: `stopping`, the destroy delay, `stopped`.
async fn destroy(shop: &Arc<Shop>, id: &str) -> Result<(), Response> {
    {
        let mut inner = shop.lock();
        if let Some(r) = inner.sessions.get_mut(id) {
            r.status = Status::Stopping;
        }
        if std::mem::take(&mut inner.faults.destroy_fail_once) {
            return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "could not verify the instance was destroyed"));
        }
    }
    tokio::time::sleep(shop.timings.destroy).await;
    shop.stop(id, None);
    Ok(())
}

async fn done(State(shop): State<Arc<Shop>>, Path(id): Path<String>) -> Response {
    let status = shop.lock().sessions.get(&id).map(|r| r.status);
    match status {
        None => error(StatusCode::NOT_FOUND, "record not found"),
        Some(Status::Stopped | Status::Failed) => {
            error(StatusCode::CONFLICT, format!("session {id} is already {}", status.map_or("", |s| s.name())))
        }
        Some(_) => match destroy(&shop, &id).await {
            Ok(()) => axum::Json(json!({ "message": "session destroyed", "session_id": id })).into_response(),
            Err(r) => r,
        },
    }
}

async fn delete(State(shop): State<Arc<Shop>>, Path(id): Path<String>) -> Response {
    let status = shop.lock().sessions.get(&id).map(|r| r.status);
    match status {
        None => error(StatusCode::NOT_FOUND, "record not found"),
        Some(Status::Stopping | Status::Stopped) => {
            axum::Json(json!({ "message": "session is already stopping or stopped", "session_id": id })).into_response()
        }
        Some(Status::Failed) => {
            shop.stop(&id, None);
            axum::Json(json!({ "message": "failed session's instance destroyed", "session_id": id })).into_response()
        }
        Some(_) => match destroy(&shop, &id).await {
            Ok(()) => axum::Json(json!({ "message": "session deleted", "session_id": id })).into_response(),
            Err(r) => r,
        },
    }
}

async fn extend(State(shop): State<Arc<Shop>>, Path(id): Path<String>, body: Bytes) -> Response {
    let hours = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["additional_hours"].as_u64());
    let Some(hours) = hours.filter(|h| *h >= 1) else {
        return error(StatusCode::BAD_REQUEST, "additional_hours must be a positive integer");
    };
    let mut inner = shop.lock();
    let Some(r) = inner.sessions.get_mut(&id) else { return error(StatusCode::NOT_FOUND, "record not found") };
    if !matches!(r.status, Status::Provisioning | Status::Running) {
        return error(StatusCode::CONFLICT, format!("session {id} is {}", r.status.name()));
    }
    let new_expiry = r.expires_at + chrono::Duration::hours(hours as i64);
    if new_expiry - r.created_at > chrono::Duration::hours(i64::from(HARD_LIMIT_HOURS)) {
        return error(StatusCode::BAD_REQUEST, "the total reservation would exceed 12 hours");
    }
    r.expires_at = new_expiry;
    r.reservation_hours += hours as u32;
    axum::Json(json!({ "message": "session extended", "session_id": id, "new_expires_at": new_expiry })).into_response()
}

async fn diagnostics(State(shop): State<Arc<Shop>>, Path(id): Path<String>) -> Response {
    let inner = shop.lock();
    let Some(r) = inner.sessions.get(&id) else { return error(StatusCode::NOT_FOUND, "record not found") };
    if r.status != Status::Running {
        return error(StatusCode::BAD_REQUEST, format!("session is {}, not running", r.status.name()));
    }
    let now = Utc::now();
    axum::Json(json!({
        "session_id": id, "status": "running", "ssh_host": "127.0.0.1", "ssh_port": shop.ssh_port,
        "ssh_user": "root", "uptime": format!("{}s", (now - r.created_at).num_seconds()),
        "time_to_expiry": format!("{}s", (r.expires_at - now).num_seconds()), "ssh_available": true,
        "note": "mock-shopper: the instance is this machine",
    }))
    .into_response()
}

#[derive(Deserialize)]
struct CostQuery {
    session_id: Option<String>,
    consumer_id: Option<String>,
}

async fn cost(State(shop): State<Arc<Shop>>, Query(q): Query<CostQuery>) -> Response {
    let inner = shop.lock();
    let Some(r) = q.session_id.as_ref().and_then(|id| inner.sessions.get(id)) else {
        return error(StatusCode::NOT_FOUND, "record not found");
    };
    axum::Json(json!({ "session_id": r.id, "total_cost": r.cost(Utc::now()), "currency": "USD" })).into_response()
}

async fn cost_summary(State(shop): State<Arc<Shop>>, Query(q): Query<CostQuery>) -> Response {
    let inner = shop.lock();
    let now = Utc::now();
    let mine: Vec<&Rental> =
        inner.sessions.values().filter(|r| q.consumer_id.as_ref().is_none_or(|c| *c == r.consumer_id)).collect();
    let total: f64 = mine.iter().map(|r| r.cost(now)).sum();
    let hours: f64 =
        mine.iter().map(|r| (r.stopped_at.unwrap_or(now) - r.created_at).num_seconds() as f64 / 3600.0).sum();
    axum::Json(json!({ "total_cost": total, "session_count": mine.len(), "hours_used": hours,
                       "by_provider": {}, "by_gpu_type": {} }))
    .into_response()
}

// ----- the admin API ---------------------------------------------------------------------

async fn arm_stale(State(shop): State<Arc<Shop>>) -> StatusCode {
    shop.lock().faults.next_create_stale = true;
    StatusCode::NO_CONTENT
}

async fn arm_provision_fail(State(shop): State<Arc<Shop>>, body: Bytes) -> StatusCode {
    let error = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "SSH verification timeout".into());
    shop.lock().faults.provision_error = Some(error);
    StatusCode::NO_CONTENT
}

async fn arm_destroy_fail(State(shop): State<Arc<Shop>>) -> StatusCode {
    shop.lock().faults.destroy_fail_once = true;
    StatusCode::NO_CONTENT
}

async fn arm_health(State(shop): State<Arc<Shop>>, body: Bytes) -> StatusCode {
    let status = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["status"].as_u64()).unwrap_or(503);
    shop.lock().faults.health_unavailable = status == 503;
    StatusCode::NO_CONTENT
}

async fn ghost(State(shop): State<Arc<Shop>>, Path(id): Path<String>) -> StatusCode {
    if !shop.lock().sessions.contains_key(&id) {
        return StatusCode::NOT_FOUND;
    }
    shop.stop(&id, Some("Instance not found on provider during reconciliation".into()));
    StatusCode::NO_CONTENT
}

async fn arm_html(State(shop): State<Arc<Shop>>) -> StatusCode {
    shop.lock().faults.next_html_502 = true;
    StatusCode::NO_CONTENT
}

async fn arm_truncated(State(shop): State<Arc<Shop>>) -> StatusCode {
    shop.lock().faults.next_truncated = true;
    StatusCode::NO_CONTENT
}

/// Every session with the processes still alive in it (for tests).
async fn all_sessions(State(shop): State<Arc<Shop>>, _headers: HeaderMap) -> Response {
    let inner = shop.lock();
    let list: Vec<Value> = inner
        .sessions
        .values()
        .map(|r| {
            let mut v = r.json(shop.ssh_port);
            v["offer_id"] = json!(r.offer.id);
            v["processes"] = json!(r.processes);
            v
        })
        .collect();
    axum::Json(json!({ "sessions": list })).into_response()
}
