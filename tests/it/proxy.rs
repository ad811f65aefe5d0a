//! The fault-injecting proxy used by the fault tests does what its modes say.

use std::time::Duration;

use crate::support::proxy::{Mode, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn round_trip(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    stream.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(within, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf.to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn pass_blackhole_and_drop() {
    let proxy = Proxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(
        round_trip(&mut conn, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(&b"ping"[..])
    );

    // Blackhole: the connection stays open but nothing comes back.
    proxy.set(Mode::Blackhole);
    assert_eq!(
        round_trip(&mut conn, Duration::from_millis(500)).await,
        None
    );
    let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(
        round_trip(&mut fresh, Duration::from_millis(500)).await,
        None
    );

    // Drop: open connections are closed.
    proxy.set(Mode::Drop);
    let mut buf = [0u8; 1];
    let eof = tokio::time::timeout(Duration::from_secs(5), fresh.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(eof, Ok(0) | Err(_)),
        "connection not closed: {eof:?}"
    );

    // Pass again: new connections work.
    proxy.set(Mode::Pass);
    let mut again = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(
        round_trip(&mut again, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(&b"ping"[..])
    );
}
