//! Cluster-wide purges: a purge published on one gateway instance reaches the in-memory
//! store of every instance through a Redis pub/sub channel (`<prefix>purge`).
//!
//! Delivery is at most once per subscriber, like Redis pub/sub itself: a message published
//! while an instance is unsubscribed (Redis down, reconnecting) is lost to it. Because it
//! cannot know what it missed, an instance that subscribes again after losing its
//! subscription empties its local store (unless `purge_local_on_resubscribe` is off):
//! refilling from the origin is cheaper than serving a purged response until it expires.
//! Applying a message twice, including one the instance published itself, is harmless:
//! every purge is idempotent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::Value;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::link::{backoff, Connector, Timing};
use super::{RedisTier, TierError};
use crate::cache::store::CacheStore;

/// Longest encoded message accepted (URLs beyond a few KiB are refused by servers anyway).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// What to purge on every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeMessage {
    /// Every entry stored under exactly this normalised URL.
    Url(String),
    /// Every entry whose normalised URL starts with this.
    Prefix(String),
    /// Every entry tagged with this surrogate key.
    Surrogate(String),
    All,
}

/// Why bytes received on the channel are not a purge message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("purge message of {0} bytes is longer than {MAX_MESSAGE_BYTES}")]
    TooLong(usize),
    #[error("unknown purge message kind {0:?}")]
    Kind(String),
    #[error("purge message kind {0:?} needs a non-empty argument after one space")]
    Argument(char),
    #[error("purge message argument is not utf-8")]
    NotUtf8,
    #[error("control character in purge message argument at byte {0}")]
    Control(usize),
}

/// Publishes purges through a tier's connection and, if subscribed, applies the purges of
/// every instance to a local store. Dropping it stops the subscriber.
pub struct PurgeBus {
    tier: RedisTier,
    channel: Arc<str>,
    state: Arc<BusState>,
    /// Dropped with the bus: the subscriber sees it and ends.
    _stop: Option<watch::Sender<()>>,
}

/// The subscriber's counters, for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Subscribed now.
    pub subscribed: bool,
    /// Subscriptions made: 1 at the first, +1 per resubscription.
    pub subscriptions: u64,
    /// Messages applied to the local store.
    pub applied: u64,
    /// Messages received that did not decode.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct BusState {
    subscribed: AtomicBool,
    subscriptions: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
}

/// Everything the subscriber task owns.
struct Subscriber {
    connector: Connector,
    channel: Arc<str>,
    store: Arc<CacheStore>,
    state: Arc<BusState>,
    timing: Timing,
    purge_local_on_resubscribe: bool,
}

impl PurgeMessage {
    /// `U <url>`, `P <prefix>`, `S <surrogate key>` or `A`.
    pub fn encode(&self) -> String {
        let (kind, argument) = match self {
            PurgeMessage::Url(url) => ('U', url.as_str()),
            PurgeMessage::Prefix(prefix) => ('P', prefix.as_str()),
            PurgeMessage::Surrogate(key) => ('S', key.as_str()),
            PurgeMessage::All => return "A".to_owned(),
        };
        let mut out = String::with_capacity(argument.len() + 2);
        out.push(kind);
        out.push(' ');
        out.push_str(argument);
        out
    }

    /// Parses a message; anything but exactly what [`PurgeMessage::encode`] writes for a
    /// valid message is an error.
    pub fn decode(bytes: &[u8]) -> Result<PurgeMessage, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLong(bytes.len()));
        }
        let (kind, rest) = match bytes {
            [b'A'] => return Ok(PurgeMessage::All),
            [kind @ (b'U' | b'P' | b'S'), rest @ ..] => (char::from(*kind), rest),
            _ => {
                let shown = bytes.get(..8).unwrap_or(bytes);
                return Err(MessageError::Kind(
                    String::from_utf8_lossy(shown).into_owned(),
                ));
            }
        };
        let argument = match rest {
            [b' ', argument @ ..] if !argument.is_empty() => argument,
            _ => return Err(MessageError::Argument(kind)),
        };
        if let Some(at) = argument.iter().position(|&b| b < 0x20 || b == 0x7f) {
            return Err(MessageError::Control(at));
        }
        let argument = std::str::from_utf8(argument)
            .map_err(|_| MessageError::NotUtf8)?
            .to_owned();
        Ok(match kind {
            'U' => PurgeMessage::Url(argument),
            'P' => PurgeMessage::Prefix(argument),
            _ => PurgeMessage::Surrogate(argument),
        })
    }

    /// Applies the purge to a local store; returns how many entries went.
    pub fn apply(&self, store: &CacheStore) -> usize {
        match self {
            PurgeMessage::Url(url) => store.purge_url(url),
            PurgeMessage::Prefix(prefix) => store.purge_prefix(prefix),
            PurgeMessage::Surrogate(key) => store.purge_surrogate(key),
            PurgeMessage::All => store.purge_all(),
        }
    }

    /// Whether the message survives encoding (decode rejects what encode cannot carry).
    fn check(&self) -> Result<(), MessageError> {
        PurgeMessage::decode(self.encode().as_bytes()).map(|_| ())
    }
}

impl PurgeBus {
    /// A bus that only publishes, through `tier`'s connection.
    pub fn publisher(tier: &RedisTier) -> PurgeBus {
        PurgeBus {
            tier: tier.clone(),
            channel: channel(tier),
            state: Arc::default(),
            _stop: None,
        }
    }

    /// A bus that publishes through `tier`'s connection and applies every purge published
    /// on the channel to `store`, from a task spawned on the current runtime, with its own
    /// pub/sub connection (resubscribing with back-off when Redis goes away).
    pub fn subscribe(tier: &RedisTier, store: Arc<CacheStore>) -> Result<PurgeBus, TierError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TierError::NoRuntime)?;
        let settings = &tier.inner.settings;
        let (stop, stopped) = watch::channel(());
        let bus = PurgeBus {
            tier: tier.clone(),
            channel: channel(tier),
            state: Arc::default(),
            _stop: Some(stop),
        };
        let subscriber = Subscriber {
            connector: Connector::new(settings)?,
            channel: Arc::clone(&bus.channel),
            store,
            state: Arc::clone(&bus.state),
            timing: settings.timing(),
            purge_local_on_resubscribe: settings.purge_local_on_resubscribe,
        };
        runtime.spawn(subscriber.run(stopped));
        Ok(bus)
    }

    /// Sends a purge to every subscribed instance (this one included, if subscribed).
    /// Returns how many subscriptions received it (per node reached, on a cluster).
    pub async fn publish(&self, message: &PurgeMessage) -> Result<u64, TierError> {
        message.check()?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&*self.channel).arg(message.encode());
        self.tier
            .call(|mut conn| async move { publish.query_async(&mut conn).await })
            .await
    }

    pub fn stats(&self) -> BusStats {
        BusStats {
            subscribed: self.state.subscribed.load(Relaxed),
            subscriptions: self.state.subscriptions.load(Relaxed),
            applied: self.state.applied.load(Relaxed),
            rejected: self.state.rejected.load(Relaxed),
        }
    }
}

impl std::fmt::Debug for PurgeBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeBus")
            .field("channel", &self.channel)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Subscribes, applies messages, and resubscribes after losing the subscription, until
    /// the bus is dropped.
    async fn run(mut self, mut stop: watch::Receiver<()>) {
        let mut failures = 0u32;
        // Warned for the current outage already.
        let mut outage = false;
        let mut ever_subscribed = false;
        loop {
            let attempt = tokio::time::timeout(self.timing.connect_timeout, self.open(failures));
            let result = tokio::select! {
                result = attempt => result,
                _ = stop.changed() => return,
            };
            let pubsub = match result {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    if !outage {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "connection attempt timed out".to_owned(),
                        };
                        tracing::warn!(%error, "cache purge bus: cannot subscribe on Redis, retrying");
                        outage = true;
                    }
                    let wait = backoff(&self.timing, failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            if outage {
                tracing::info!("cache purge bus: subscribed after an outage");
            }
            failures = 0;
            self.state.subscribed.store(true, Relaxed);
            self.state.subscriptions.fetch_add(1, Relaxed);
            if ever_subscribed && self.purge_local_on_resubscribe {
                let removed = self.store.purge_all();
                tracing::info!(
                    removed,
                    "cache purge bus: local store emptied, purges may have been missed"
                );
            }
            ever_subscribed = true;
            let Some(reason) = self.listen(pubsub, &mut stop).await else {
                return;
            };
            self.state.subscribed.store(false, Relaxed);
            tracing::warn!(
                reason,
                "cache purge bus: lost the Redis subscription, resubscribing"
            );
            outage = true;
        }
    }

    /// Connects and subscribes; `rotate` moves the first cluster node tried.
    async fn open(&mut self, rotate: u32) -> redis::RedisResult<PubSub> {
        let mut pubsub = self.connector.pubsub(rotate as usize).await?;
        pubsub.subscribe(&*self.channel).await?;
        Ok(pubsub)
    }

    /// Applies messages until the subscription is lost (returns why) or the bus is dropped
    /// (returns `None`). A PING every `health_interval` notices a server that stopped
    /// answering without closing the connection.
    async fn listen(&self, pubsub: PubSub, stop: &mut watch::Receiver<()>) -> Option<&'static str> {
        let (mut sink, mut messages) = pubsub.split();
        let mut health = tokio::time::interval(self.timing.health_interval);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.apply(message.get_payload_bytes()),
                    None => return Some("connection closed"),
                },
                _ = health.tick() => {
                    let ping = tokio::time::timeout(self.timing.timeout, sink.ping::<Value>());
                    if !matches!(ping.await, Ok(Ok(_))) {
                        return Some("no answer to ping");
                    }
                }
                _ = stop.changed() => return None,
            }
        }
    }

    fn apply(&self, payload: &[u8]) {
        match PurgeMessage::decode(payload) {
            Ok(message) => {
                let removed = message.apply(&self.store);
                self.state.applied.fetch_add(1, Relaxed);
                tracing::debug!(?message, removed, "cache purge bus: applied");
            }
            Err(error) => {
                self.state.rejected.fetch_add(1, Relaxed);
                tracing::debug!(%error, "cache purge bus: ignored a malformed message");
            }
        }
    }
}

fn channel(tier: &RedisTier) -> Arc<str> {
    let mut channel = tier.inner.settings.prefix.clone();
    channel.push_str("purge");
    channel.into()
}
