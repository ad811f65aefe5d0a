//! Byte-level liveness of the binlog connection: a loopback relay that notes when the source last
//! sent a byte.
//!
//! # Why
//! A dead connection (a cut cable) is only noticed by its silence: the source sends a heartbeat
//! when it has had nothing newer for `source.heartbeat_interval`, so three intervals without
//! anything mean the connection is gone. But the source sends no heartbeat *inside* an event, and
//! `mysql_async` yields an event only once all of it has arrived (a binlog event can be up to
//! 1 GiB) and tells nothing of the bytes before that. Timing whole events would cut a large
//! event arriving over a slow link, again at every retry: the relay stalls for good. So the
//! binlog connection runs through this relay, which forwards bytes unchanged in both directions
//! (TLS, when configured, still runs end to end between the client and the source) and records
//! the instant of the last byte from the source: the liveness timeout measures silence, not the
//! length of an event.
//!
//! # Guarantees
//! - Bytes are forwarded unchanged and in order; when either side closes or fails, both are
//!   closed (the client sees the connection end, as without the relay).
//! - The listener accepts one connection, the first, and is then closed. It is bound to the
//!   loopback address only.
//! - [`Relay::last_byte`] never goes backwards. Dropping the [`Relay`] ends its task and closes
//!   both connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A running relay for one connection.
pub struct Relay {
    /// The loopback port the client connects to.
    pub port: u16,
    started: Instant,
    /// Milliseconds after `started` when the last byte from the source arrived.
    last_byte_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Connects to the source at `host:port` (within `connect_timeout`) and listens on a free
    /// loopback port for the client's connection, which must come within `connect_timeout`.
    pub async fn start(host: &str, port: u16, connect_timeout: Duration) -> std::io::Result<Self> {
        let upstream = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TCP connection to {host}:{port} within {connect_timeout:?}"),
                )
            })??;
        upstream.set_nodelay(true)?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local_port = listener.local_addr()?.port();
        let started = Instant::now();
        let last_byte_ms = Arc::new(AtomicU64::new(0));
        let seen = last_byte_ms.clone();
        let task = tokio::spawn(async move {
            let accepted = tokio::time::timeout(connect_timeout, listener.accept()).await;
            drop(listener);
            let Ok(Ok((client, _))) = accepted else {
                return;
            };
            let _ = client.set_nodelay(true);
            relay(client, upstream, started, &seen).await;
        });
        Ok(Self {
            port: local_port,
            started,
            last_byte_ms,
            task,
        })
    }

    /// When the last byte from the source arrived (the relay's start if none has yet).
    pub fn last_byte(&self) -> Instant {
        self.started + Duration::from_millis(self.last_byte_ms.load(Ordering::Relaxed))
    }
}

async fn relay(client: TcpStream, upstream: TcpStream, started: Instant, seen: &AtomicU64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let to_source = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
    };
    let from_source = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match upstream_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // When either direction ends, both connections are dropped: the other side sees the close.
    tokio::select! {
        _ = to_source => {}
        _ = from_source => {}
    }
}
