//! The shutdown signal every stage listens to: a `watch` channel that turns `true` once.

use tokio::sync::watch;

/// Resolves once shutdown is requested (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
