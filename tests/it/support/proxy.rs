//! A fault-injecting TCP proxy on loopback, placed between sdl and a server.
//!
//! - [`Mode::Pass`]: bytes flow both ways.
//! - [`Mode::Drop`]: every open connection is closed and new ones are closed on accept (a server
//!   or network that refuses).
//! - [`Mode::Blackhole`]: connections stay open (and new ones are accepted) but no byte is
//!   forwarded in either direction (a cut cable: the peer only notices by timing out).
//!
//! [`Proxy::throttle`] slows every connection's bytes to a rate (a slow link), in any mode.
//!
//! Switching back to `Pass` affects new connections; a connection open during a blackhole stays
//! silent for good (until `Drop` closes it), as after a cut that lost the connection's state:
//! bytes it swallowed are never delivered, and nothing after them either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Drop,
    Blackhole,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    /// Bytes per second per direction and connection; 0 = unlimited.
    rate: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(tx);
        let accept_mode = mode.clone();
        let rate = Arc::new(AtomicU64::new(0));
        let accept_rate = rate.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut mode_rx = accept_mode.subscribe();
                let current = *mode_rx.borrow_and_update();
                match current {
                    Mode::Drop => drop(client),
                    Mode::Blackhole => {
                        tokio::spawn(async move {
                            // Hold the socket open, silently, until the proxy says Drop.
                            let _client = client;
                            let _ = mode_rx.wait_for(|m| *m == Mode::Drop).await;
                        });
                    }
                    Mode::Pass => {
                        let rate = accept_rate.clone();
                        tokio::spawn(async move {
                            if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await
                            {
                                relay(client, server, mode_rx, rate).await;
                            }
                        });
                    }
                }
            }
        });
        Self {
            port,
            mode,
            rate,
            task,
        }
    }

    /// Limits every connection to `bytes_per_second` in each direction (0: no limit).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Drop);
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut mode: watch::Receiver<Mode>,
    rate: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // When either direction ends, both sockets are dropped: the connection closes.
    tokio::select! {
        _ = pump(&mut client_read, &mut server_write, mode.clone(), &rate) => return,
        _ = pump(&mut server_read, &mut client_write, mode.clone(), &rate) => return,
        _ = mode.wait_for(|m| *m == Mode::Blackhole) => {}
    }
    // Cut: the connection stays open and silent in both directions, also after the proxy passes
    // bytes again (what was swallowed is gone, so the stream could never be resumed), until the
    // proxy drops it.
    let _ = mode.wait_for(|m| *m == Mode::Drop).await;
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    rate: &AtomicU64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Throttled, a read takes at most a tenth of a second's worth of bytes, then waits for
        // the time they take at the rate.
        let limit = rate.load(Ordering::Relaxed);
        let chunk = if limit == 0 {
            buf.len()
        } else {
            ((limit / 10) as usize).clamp(1, buf.len())
        };
        tokio::select! {
            read = from.read(&mut buf[..chunk]) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if limit > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / limit as f64)).await;
                }
                let current = *mode.borrow();
                match current {
                    Mode::Pass => {
                        // A slow reader must not keep a Drop from taking effect.
                        tokio::select! {
                            written = to.write_all(&buf[..n]) => if written.is_err() { return },
                            _ = mode.wait_for(|m| *m == Mode::Drop) => return,
                        }
                    }
                    Mode::Blackhole => {} // swallowed
                    Mode::Drop => return,
                }
            }
            changed = mode.changed() => {
                let current = *mode.borrow();
                if changed.is_err() || current == Mode::Drop {
                    return;
                }
            }
        }
    }
}
