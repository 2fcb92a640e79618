//! Handing a downstream HTTP/1.1 connection over after `101 Switching Protocols`. A request
//! that asks to upgrade carries an [`OnUpgrade`] in its extensions; once the connection loop
//! has written a 101 head it sends the raw stream, with the bytes it had already read past
//! the request, to whoever took the handle, and stops serving the connection.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::Request;
use tokio::sync::oneshot;

use super::BoxIo;

/// The downstream connection after a 101: it now speaks the protocol switched to.
pub struct Upgraded {
    pub io: BoxIo,
    /// Bytes the client sent after its request head, read before the switch: they belong
    /// to the new protocol and go first.
    pub read: Bytes,
}

/// Resolves to the upgraded connection once the 101 head is written.
///
/// Cloneable only because request extensions must be; the first [`OnUpgrade::upgraded`]
/// takes the connection.
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub(crate) fn pair() -> (oneshot::Sender<Upgraded>, OnUpgrade) {
        let (tx, rx) = oneshot::channel();
        (tx, OnUpgrade(Arc::new(Mutex::new(Some(rx)))))
    }

    /// The connection, or `None` when it closed without switching (or was taken already).
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        rx.await.ok()
    }
}

/// Takes the upgrade handle of an HTTP/1.1 request that asked to switch protocols (HTTP/2
/// requests never have one).
pub fn on<B>(req: &mut Request<B>) -> Option<OnUpgrade> {
    req.extensions_mut().remove::<OnUpgrade>()
}
