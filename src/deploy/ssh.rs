//! SSH to a rented instance (russh): connect with the session's private key held in memory,
//! run commands with their environment passed through the SSH `env` request (never on the
//! command line), stream their output, and tunnel a local port to one on the instance.
//!
//! Host keys: the instance is new, its address came from the shopper a moment ago and nothing
//! about its key is known beforehand, so the first key it shows is accepted and recorded for
//! the rest of the run (OpenSSH's `accept-new`); it never changes within a connection.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::PrivateKeyWithHashAlg;
use russh::{ChannelMsg, Disconnect};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Output lines longer than this are cut (a binary dump must not grow a buffer forever).
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SshError {
    #[error("cannot read the session's private key: {0}")]
    Key(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0} refused the session's key")]
    Refused(String),
    #[error("the SSH connection failed: {0}")]
    Session(String),
}

/// Where the instance listens for SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

struct Client {
    host_key: Arc<std::sync::Mutex<Option<russh::keys::ssh_key::public::KeyData>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone(),
        };
        let mut seen = self.host_key.lock().unwrap_or_else(|p| p.into_inner());
        match seen.as_ref() {
            Some(known) => Ok(*known == key),
            None => {
                *seen = Some(key);
                Ok(true)
            }
        }
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub text: String,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    Code(u32),
    Signal(String),
    /// The channel closed without an exit status (the connection dropped, or it was cancelled).
    Closed,
}

/// A connection to an instance.
pub struct SshSession {
    handle: Arc<Handle<Client>>,
    target: SshTarget,
    /// The host key accepted on first contact (`accept-new`).
    pub host_key: Option<String>,
}

impl SshSession {
    /// Connects and authenticates with `key_pem` (PKCS#1 or OpenSSH PEM), within `timeout`.
    pub async fn connect(target: &SshTarget, key_pem: &str, timeout: Duration) -> Result<SshSession, SshError> {
        let key = russh::keys::decode_secret_key(key_pem, None).map_err(|e| SshError::Key(e.to_string()))?;
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            ..Default::default()
        });
        let host_key = Arc::new(std::sync::Mutex::new(None));
        let client = Client { host_key: host_key.clone() };
        let addr = (target.host.clone(), target.port);
        let connecting = client::connect(config, addr, client);
        let mut handle = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(SshError::Connect(target.to_string(), format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => return Err(SshError::Connect(target.to_string(), e.to_string())),
            Ok(Ok(h)) => h,
        };
        let hash = handle.best_supported_rsa_hash().await.map_err(|e| SshError::Session(e.to_string()))?.flatten();
        let auth = handle
            .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| SshError::Session(e.to_string()))?;
        if !auth.success() {
            return Err(SshError::Refused(target.to_string()));
        }
        let host_key = host_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|k| k.fingerprint(Default::default()).to_string());
        Ok(SshSession { handle: Arc::new(handle), target: target.clone(), host_key })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Starts `command` with `env` set through SSH `env` requests. Its output lines go to
    /// `output` (bounded: a slow reader slows the command's output, nothing is lost); the
    /// returned handle says how it ended, and cancelling it closes the channel.
    pub async fn exec(
        &self,
        command: &str,
        env: &[(String, String)],
        output: mpsc::Sender<OutputLine>,
    ) -> Result<RemoteCommand, SshError> {
        let channel = self.handle.channel_open_session().await.map_err(|e| SshError::Session(e.to_string()))?;
        for (name, value) in env {
            channel.set_env(true, name.as_str(), value.as_str()).await.map_err(|e| SshError::Session(e.to_string()))?;
        }
        channel.exec(true, command).await.map_err(|e| SshError::Session(e.to_string()))?;
        let cancel = CancellationToken::new();
        let (done_tx, done) = oneshot::channel();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut channel = channel;
            let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
            let mut outcome = ExitOutcome::Closed;
            loop {
                let msg = tokio::select! {
                    () = stop.cancelled() => {
                        let _ = channel.close().await;
                        break;
                    }
                    msg = channel.wait() => msg,
                };
                let Some(msg) = msg else { break };
                match msg {
                    ChannelMsg::Data { data } => {
                        for text in out.push(&data) {
                            let _ = output.send(OutputLine { stream: Stream::Stdout, text }).await;
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        for text in err.push(&data) {
                            let _ = output.send(OutputLine { stream: Stream::Stderr, text }).await;
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => outcome = ExitOutcome::Code(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        outcome = ExitOutcome::Signal(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            for (stream, splitter) in [(Stream::Stdout, out), (Stream::Stderr, err)] {
                if let Some(text) = splitter.rest() {
                    let _ = output.send(OutputLine { stream, text }).await;
                }
            }
            let _ = done_tx.send(outcome);
        });
        Ok(RemoteCommand { done, cancel })
    }

    /// Runs `command` to its end and collects its output (for short commands).
    pub async fn run(
        &self,
        command: &str,
        env: &[(String, String)],
    ) -> Result<(ExitOutcome, Vec<OutputLine>), SshError> {
        let (tx, mut rx) = mpsc::channel(256);
        let remote = self.exec(command, env, tx).await?;
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        Ok((remote.wait().await, lines))
    }

    /// Forwards a new local port on 127.0.0.1 to `127.0.0.1:remote_port` on the instance
    /// (direct-tcpip): each connection to it gets its own channel. Ends when dropped.
    pub async fn tunnel(&self, remote_port: u16) -> Result<Tunnel, SshError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| SshError::Session(format!("a local port for the tunnel: {e}")))?;
        let local_port = listener.local_addr().map_err(|e| SshError::Session(e.to_string()))?.port();
        let handle = self.handle.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, peer)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let opened = handle
                        .channel_open_direct_tcpip(
                            "127.0.0.1",
                            u32::from(remote_port),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    if let Ok(channel) = opened {
                        let mut stream = channel.into_stream();
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                    }
                });
            }
        });
        Ok(Tunnel { local_port, task })
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

impl Clone for SshSession {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), target: self.target.clone(), host_key: self.host_key.clone() }
    }
}

/// A command running on the instance.
pub struct RemoteCommand {
    done: oneshot::Receiver<ExitOutcome>,
    cancel: CancellationToken,
}

impl RemoteCommand {
    /// How it ended.
    pub async fn wait(mut self) -> ExitOutcome {
        (&mut self.done).await.unwrap_or(ExitOutcome::Closed)
    }

    /// A handle that closes its channel when cancelled.
    pub fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether it has ended, without waiting.
    pub fn try_outcome(&mut self) -> Option<ExitOutcome> {
        self.done.try_recv().ok()
    }
}

impl Drop for RemoteCommand {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A local port forwarded to the instance.
pub struct Tunnel {
    pub local_port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lines of a remote stream as text ([`crate::logs::split::LineSplitter`], bounded per line).
struct LineSplitter(crate::logs::split::LineSplitter);

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter(crate::logs::split::LineSplitter::new(MAX_LINE))
    }
}

impl LineSplitter {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        self.0.feed(data, &mut lines);
        lines.into_iter().map(|(line, _)| String::from_utf8_lossy(&line).into_owned()).collect()
    }

    fn rest(mut self) -> Option<String> {
        let mut lines = Vec::new();
        self.0.finish(&mut lines);
        lines.pop().map(|(line, _)| String::from_utf8_lossy(&line).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_any_line_end_and_stay_bounded() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\r\nb\nc"), ["a", "b"]);
        assert_eq!(s.push(b"d\rprogress"), ["cd"]);
        assert_eq!(s.rest().as_deref(), Some("progress"));
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE * 2];
        assert_eq!(s.push(&long).iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE]);
        assert!(s.push(b"\n").is_empty(), "the rest of the long line is skipped");
        assert_eq!(s.push(b"next\n"), ["next"]);
    }
}
