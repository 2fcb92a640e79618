//! The admin listener's TLS, built again from the running configuration after each reload
//! so that renewed certificates (and a renewed `client_auth` CA) are served without a
//! restart. Whether the listener speaks TLS at all is fixed at start.

use std::sync::{Arc, Weak};

use tokio_rustls::TlsAcceptor;

use crate::runtime::Shared;
use crate::snapshot::Snapshot;

/// The acceptor, and the snapshot it was built for.
pub(super) struct ListenerTls {
    acceptor: TlsAcceptor,
    /// Weak, so that no old configuration is kept alive; its allocation stays, so a newer
    /// snapshot cannot take its address and pass for it.
    built_for: Weak<Snapshot>,
}

impl ListenerTls {
    pub(super) fn new(acceptor: TlsAcceptor, shared: &Shared) -> ListenerTls {
        ListenerTls {
            acceptor,
            built_for: Arc::downgrade(&shared.snapshot.load_full()),
        }
    }

    /// The acceptor for a new connection: rebuilt when the configuration changed since the
    /// last one (a certificate that no longer loads keeps the previous acceptor, logged;
    /// a reload checks them first, so this is a file changed since).
    pub(super) fn current(&mut self, shared: &Shared) -> TlsAcceptor {
        let snap = shared.snapshot.load_full();
        if !Weak::ptr_eq(&self.built_for, &Arc::downgrade(&snap)) {
            self.built_for = Arc::downgrade(&snap);
            if let Some(tls) = snap.config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
                match crate::tls::server_config(tls) {
                    Ok(config) => self.acceptor = TlsAcceptor::from(config),
                    Err(e) => tracing::error!(
                        "admin.tls: {e}; the admin listener keeps its previous certificates"
                    ),
                }
            }
        }
        self.acceptor.clone()
    }
}
