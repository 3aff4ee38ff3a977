//! SSH to a session of `llmdeck mock-shopper` with the key it returned: our client (russh) and
//! OpenSSH's `ssh` run commands and read their output and exit codes, environment variables
//! travel through the SSH `env` request, a tunnel reaches a server on the "instance", a wrong
//! key is refused, and destroying the session ends what it started.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{BIN, MockShopper, Sandbox, alive, wait_gone};
use llmdeck::deploy::ssh::{ExitOutcome, SshSession, SshTarget, Stream};
use llmdeck::shopper::{CreateSession, SessionStatus, ShopperClient};

async fn running_session(shop: &MockShopper) -> (ShopperClient, String, String, SshTarget) {
    let c = ShopperClient::new(&shop.url).expect("client");
    let created = c.create(&CreateSession::new("ssh-test", "vastai-4090-1", "ssh", 1)).await.expect("create");
    let id = created.session.id.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let session = loop {
        let s = c.session(&id).await.expect("session");
        if s.status == SessionStatus::Running {
            break s;
        }
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let target = SshTarget {
        host: session.ssh_host.clone().expect("ssh host"),
        port: session.ssh_port.expect("ssh port"),
        user: session.ssh_user.clone().unwrap_or_else(|| "root".into()),
    };
    (c, id, created.ssh_private_key.expose().to_owned(), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_runs_commands_passes_env_and_tunnels() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2", "--destroy-delay", "0.2"]);
    let (c, id, key, target) = running_session(&shop).await;
    let ssh = SshSession::connect(&target, &key, Duration::from_secs(20)).await.expect("connect");

    let env = vec![("DEPLOY_SECRET".to_owned(), "s3cr3t-value".to_owned())];
    let (outcome, lines) =
        ssh.run("echo out-line; echo err-line >&2; echo \"secret=$DEPLOY_SECRET\"; exit 3", &env).await.expect("run");
    assert_eq!(outcome, ExitOutcome::Code(3));
    let text = |s: Stream| lines.iter().filter(|l| l.stream == s).map(|l| l.text.clone()).collect::<Vec<_>>();
    assert_eq!(text(Stream::Stdout), ["out-line", "secret=s3cr3t-value"]);
    assert_eq!(text(Stream::Stderr), ["err-line"]);

    // A model server on the instance, reached through a tunnel.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let server = ssh.exec(&format!("exec '{BIN}' mock-llm --port 0"), &[], tx).await.expect("start mock-llm");
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if let Some(rest) = line.text.split("Uvicorn running on http://127.0.0.1:").nth(1) {
                return rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .expect("mock-llm listens")
    .expect("its port");
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let tunnel = ssh.tunnel(port).await.expect("tunnel");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let health =
        http.get(format!("http://127.0.0.1:{}/health", tunnel.local_port)).send().await.expect("through the tunnel");
    assert_eq!(health.status(), 200);

    // Destroying the session ends what it started, and the connection.
    let pids: Vec<u64> = {
        let v: serde_json::Value =
            http.get(format!("{}/_fake/sessions", shop.url)).send().await.expect("admin").json().await.expect("json");
        v["sessions"][0]["processes"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
            .unwrap_or_default()
    };
    assert!(!pids.is_empty());
    c.done(&id).await.expect("done");
    for pid in &pids {
        assert!(wait_gone(*pid as u32, Duration::from_secs(10)), "process {pid} outlived its session");
    }
    // Killed or just cut off: either way the remote command ends with its session.
    let _ended =
        tokio::time::timeout(Duration::from_secs(10), server.wait()).await.expect("the command ends with its session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_works_with_the_returned_key_and_a_wrong_key_is_refused() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2"]);
    let (_c, _id, key, target) = running_session(&shop).await;
    let key_file = sb.path().join("session.key");
    std::fs::write(&key_file, &key).expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("0600");
    let ssh = |key: &std::path::Path, command: &str| {
        std::process::Command::new("ssh")
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-p"])
            .arg(target.port.to_string())
            .arg("-i")
            .arg(key)
            .arg(format!("{}@{}", target.user, target.host))
            .arg(command)
            .output()
            .expect("OpenSSH's ssh is installed (.ci/run installs it)")
    };
    let out = ssh(&key_file, "echo from-openssh; exit 5");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-openssh");

    // Another RSA key: refused, by OpenSSH's client and by ours.
    let wrong = sb.path().join("wrong.key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let refused = ssh(&wrong, "true");
    assert_eq!(refused.status.code(), Some(255), "a wrong key is refused");
    let wrong_pem = std::fs::read_to_string(&wrong).expect("read");
    let ours = SshSession::connect(&target, &wrong_pem, Duration::from_secs(20)).await;
    assert!(matches!(ours, Err(llmdeck::deploy::ssh::SshError::Refused(_))), "{:?}", ours.err());
    assert!(alive(shop.child.id()));
}
