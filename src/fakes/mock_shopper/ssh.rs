//! The fake's SSH server (russh) on 127.0.0.1: every session's "instance". It accepts exactly
//! the key of an active session, runs exec requests as local processes (`sh -c`, in the
//! session's directory, with the environment the client sent), streams their output and exit
//! status, and forwards direct-tcpip channels to 127.0.0.1. Destroying a session kills what it
//! started and closes its connections.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use russh::keys::PrivateKey;
use russh::server::{Auth, Handle, Msg, Session as SshSession, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::state::Shop;

/// Serves SSH on `listener` until the process ends.
pub async fn serve(listener: TcpListener, shop: Arc<Shop>) -> std::io::Result<()> {
    let host_key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .map_err(|e| std::io::Error::other(format!("generating the host key: {e}")))?;
    let config = russh::server::Config {
        keys: vec![host_key],
        auth_rejection_time: std::time::Duration::from_millis(200),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        inactivity_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let mut server = Server { shop };
    use russh::server::Server as _;
    server.run_on_socket(Arc::new(config), &listener).await
}

#[derive(Clone)]
struct Server {
    shop: Arc<Shop>,
}

impl russh::server::Server for Server {
    type Handler = Connection;

    fn new_client(&mut self, _peer: Option<std::net::SocketAddr>) -> Connection {
        Connection { shop: self.shop.clone(), session: None, env: HashMap::new() }
    }
}

/// One SSH connection.
struct Connection {
    shop: Arc<Shop>,
    /// The shopper session whose key authenticated this connection.
    session: Option<String>,
    /// Environment variables the client sent, per channel.
    env: HashMap<ChannelId, Vec<(String, String)>>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.shop.session_of_key(offer.public_key) {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        match self.shop.session_of_key(key.public_key) {
            Some(id) => {
                self.session = Some(id);
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        if let Some(id) = &self.session {
            self.shop.register_connection(id, session.handle());
        }
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        self.env.entry(channel).or_default().push((name.to_owned(), value.to_owned()));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        let Some(id) = self.session.clone() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let command = String::from_utf8_lossy(data).into_owned();
        let env = self.env.remove(&channel).unwrap_or_default();
        match self.start(&id, &command, env, channel, session.handle()) {
            Ok(()) => session.channel_success(channel)?,
            Err(e) => {
                session.channel_failure(channel)?;
                tracing::warn!("mock-shopper: exec in session {id} failed: {e}");
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        // The instance is this machine: only its loopback ports are reachable.
        let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1");
        let Ok(port) = u16::try_from(port) else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if !loopback || self.session.is_none() {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        if let Some(id) = &self.session {
            self.shop.register_connection(id, session.handle());
        }
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut tcp) => {
                reply.accept().await;
                tokio::spawn(async move {
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                });
            }
            Err(_) => reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
        }
        Ok(())
    }
}

impl Connection {
    /// Starts `sh -c command` for the session and streams it to `channel`.
    fn start(
        &self,
        id: &str,
        command: &str,
        env: Vec<(String, String)>,
        channel: ChannelId,
        handle: Handle,
    ) -> std::io::Result<()> {
        let dir = self.shop.session_dir(id)?;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&dir)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        if let Some(pid) = child.id() {
            self.shop.register_process(id, pid);
        }
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(std::io::Error::other("no output pipes"));
        };
        let (out_handle, err_handle) = (handle.clone(), handle.clone());
        let out = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = stdout.read(&mut buf).await {
                if out_handle.data(channel, bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        });
        let err = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                if err_handle.extended_data(channel, 1, bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = out.await;
            let _ = err.await;
            // Killed by a signal: 128 + the signal, as a shell reports it.
            let code = match status {
                Ok(s) => s.code().map_or_else(
                    || 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0) as u32,
                    |c| c as u32,
                ),
                Err(_) => 255,
            };
            let _ = handle.exit_status_request(channel, code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}
