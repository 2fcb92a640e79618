//! Waiting on the gateway's signals: the `watch` flags that ask connections and loops to
//! finish (shutdown) or to end at once (stop).

use tokio::sync::watch;

/// Resolves once the signal has been raised (or its sender is gone).
pub async fn raised(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
