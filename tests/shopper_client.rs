//! The shopper client against `llmdeck mock-shopper`: every call of the API and every error
//! variant, including an HTML 502 page, a truncated body, and a service that is not listening
//! yet.

mod common;

use std::time::{Duration, Instant};

use common::{MockShopper, Sandbox};
use llmdeck::shopper::{CreateSession, InventoryQuery, SessionStatus, ShopperClient, ShopperError};

fn client(shop: &MockShopper) -> ShopperClient {
    ShopperClient::new(&shop.url).expect("client")
}

async fn admin(shop: &MockShopper, path: &str, body: &str) {
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let status =
        http.post(format!("{}/_fake/{path}", shop.url)).body(body.to_owned()).send().await.expect("admin").status();
    assert!(status.is_success(), "admin {path}: {status}");
}

async fn wait_status(c: &ShopperClient, id: &str, want: SessionStatus) -> llmdeck::shopper::Session {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.session(id).await.expect("session");
        if s.status == want {
            return s;
        }
        assert!(Instant::now() < deadline, "session {id} stayed {:?}, never {want:?}", s.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn create(consumer: &str, offer: &str) -> CreateSession {
    CreateSession::new(consumer, offer, "ssh", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_lifecycle() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.3", "--destroy-delay", "0.2"]);
    let c = client(&shop);
    assert_eq!(c.health().await.expect("health").status, "ok");
    assert!(c.ready().await.expect("ready").ready);

    let all = c.inventory(&InventoryQuery::default()).await.expect("inventory");
    assert_eq!(all.offers.len(), 4, "{all:?}");
    let cheap = c
        .inventory(&InventoryQuery { min_vram: Some(24), max_price: Some(1.0), ..Default::default() })
        .await
        .expect("filtered");
    assert!(cheap.offers.iter().all(|o| o.vram_gb >= 24 && o.price_per_hour <= 1.0), "{cheap:?}");
    let one = c.offer(&cheap.offers[0].id).await.expect("offer");
    assert_eq!(one.id, cheap.offers[0].id);

    let created = c.create(&create("consumer-a", "vastai-4090-1")).await.expect("create");
    assert_eq!(created.session.status, SessionStatus::Provisioning);
    assert!(created.ssh_private_key.expose().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(format!("{:?}", created.ssh_private_key), "PrivateKeyPem(***)", "the key never prints");
    let id = created.session.id.clone();
    let running = wait_status(&c, &id, SessionStatus::Running).await;
    assert_eq!(running.ssh_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(running.ssh_port, Some(shop.ssh_port));

    let listed = c.sessions("consumer-a", None).await.expect("list");
    assert_eq!(listed.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    assert!(c.sessions("someone-else", None).await.expect("list").sessions.is_empty());
    let diag = c.diagnostics(&id).await.expect("diagnostics");
    assert_eq!(diag.status, SessionStatus::Running);
    let extended = c.extend(&id, 2).await.expect("extend");
    assert!(extended.new_expires_at.is_some_and(|e| e > running.expires_at));
    assert!(matches!(c.extend(&id, 20).await, Err(ShopperError::Http { status: 400, .. })), "past 12 h");
    assert!(c.cost(&id).await.expect("cost").total_cost > 0.0);
    assert!(c.cost_summary("consumer-a").await.expect("summary").total_cost > 0.0);

    c.done(&id).await.expect("done");
    assert_eq!(c.session(&id).await.expect("session").status, SessionStatus::Stopped);
    assert!(matches!(c.done(&id).await, Err(ShopperError::Conflict { .. })), "done on a stopped session");
    c.delete(&id).await.expect("DELETE of a stopped session is a no-op");
    assert!(matches!(c.diagnostics(&id).await, Err(ShopperError::Http { status: 400, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_variant() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2", "--destroy-delay", "0.1"]);
    let c = client(&shop);

    assert!(matches!(c.offer("no-such-offer").await, Err(ShopperError::NotFound(_))));
    assert!(matches!(c.session("no-such-session").await, Err(ShopperError::NotFound(_))));
    assert!(matches!(c.create(&create("a", "no-such-offer")).await, Err(ShopperError::NotFound(_))));

    admin(&shop, "next-create-stale", "").await;
    match c.create(&create("a", "tensordock-l4-7")).await {
        Err(ShopperError::StaleInventory { offer_id }) => assert_eq!(offer_id, "tensordock-l4-7"),
        other => panic!("expected stale inventory, got {other:?}"),
    }

    let first = c.create(&create("a", "tensordock-l4-7")).await.expect("create");
    match c.create(&create("a", "tensordock-l4-7")).await {
        Err(ShopperError::Conflict { existing_session, .. }) => {
            assert_eq!(existing_session, Some(first.session.id.clone()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut small = create("b", "vastai-4090-1");
    small.disk_gb = Some(10);
    assert!(matches!(
        c.create(&small).await,
        Err(ShopperError::InsufficientDisk { requested_gb: 10, minimum_gb: 20, recommended_gb: 50 })
    ));

    admin(&shop, "provision-fail", r#"{"error":"SSH verification timeout"}"#).await;
    let doomed = c.create(&create("c", "vastai-a100-3")).await.expect("create");
    let failed = wait_status(&c, &doomed.session.id, SessionStatus::Failed).await;
    assert_eq!(failed.error.as_deref(), Some("SSH verification timeout"));
    c.delete(&doomed.session.id).await.expect("DELETE of a failed session");
    assert_eq!(c.session(&doomed.session.id).await.expect("s").status, SessionStatus::Stopped);

    admin(&shop, "next-html-502", "").await;
    match c.create(&create("d", "vastai-a100-3")).await {
        Err(ShopperError::Http { status: 502, excerpt }) => assert!(excerpt.contains("502 Bad Gateway"), "{excerpt}"),
        other => panic!("expected an HTTP 502, got {other:?}"),
    }
    admin(&shop, "next-truncated", "").await;
    assert!(matches!(c.sessions("a", None).await, Err(ShopperError::Undecodable { .. })));

    admin(&shop, "health", r#"{"status":503}"#).await;
    assert!(matches!(c.health().await, Err(ShopperError::NotReady(_))));
    assert!(matches!(c.ready().await, Err(ShopperError::NotReady(_))));
    admin(&shop, "health", r#"{"status":200}"#).await;

    admin(&shop, "destroy-fail-once", "").await;
    let id = first.session.id;
    wait_status(&c, &id, SessionStatus::Running).await;
    assert!(matches!(c.done(&id).await, Err(ShopperError::Http { status: 500, .. })));
    assert_eq!(c.session(&id).await.expect("s").status, SessionStatus::Stopping, "stuck in stopping");
    c.delete(&id).await.expect("a no-op on stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_that_is_not_listening_yet_is_not_ready() {
    // During its start-up sweep the service does not listen: refused, which reads as "not
    // ready yet", then it serves.
    let port = common::free_port();
    let mut shop = std::process::Command::new(common::BIN)
        .args(["mock-shopper", "--port", &port.to_string(), "--startup-delay", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mock-shopper");
    let c = ShopperClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
    let early = c.health().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let later = loop {
        match c.health().await {
            Ok(h) => break h,
            Err(ShopperError::NotReady(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let _ = shop.kill();
    let _ = shop.wait();
    assert!(matches!(early, Err(ShopperError::NotReady(_))), "{early:?}");
    assert_eq!(later.status, "ok");
}
