//! Publishing: a request written as one message for routes whose own workers consume it, to
//! a Redis stream (`XADD`), a NATS subject captured by a JetStream stream (published with an
//! ack) or a RabbitMQ exchange (published with a confirm, `mandatory`). Every target gets
//! the same parts: the body, `method`, `path`, `request_id`, `client_ip`, `consumer` (when
//! authenticated) and each selected request field. A Redis message has them all as fields
//! (`body`, and `h:NAME` for a request field); a NATS or RabbitMQ message has the body as
//! its payload and the others as headers (NATS: `h-NAME` for a request field, as NATS header
//! names take no `:`; RabbitMQ: `h:NAME`, in the message's header table).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::rabbitmq::Amqp;
use super::redis::Link;
use super::QueueError;
use crate::config::model::{PublishAction, PublishTarget, Redis};

/// Time limit of a NATS connection and of each publish.
const NATS_TIMEOUT: Duration = Duration::from_secs(2);

/// A route's publisher, with its own connection to the target's server.
pub struct Publisher {
    pub action: PublishAction,
    to: To,
}

enum To {
    Redis(Arc<Link>),
    Nats(Nats),
    RabbitMq(Amqp),
}

/// One message: the body and the other parts, named.
pub struct Message {
    pub body: Bytes,
    pub parts: Vec<(String, Vec<u8>)>,
}

/// Where a message went: its id there (the stream entry, the JetStream sequence, the
/// request id for RabbitMQ).
pub struct Published {
    pub id: String,
}

impl Publisher {
    /// A publisher for `action`; `None` when its target needs the top-level `redis` and
    /// there is none.
    pub fn new(
        action: PublishAction,
        redis: Option<&Redis>,
        runtime: tokio::runtime::Handle,
    ) -> Option<Publisher> {
        let to = match &action.target {
            PublishTarget::Redis { .. } => To::Redis(Arc::new(Link::new(redis?, runtime))),
            PublishTarget::Nats { url, .. } => To::Nats(Nats {
                url: url.clone(),
                runtime,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
            }),
            PublishTarget::RabbitMq { url, .. } => To::RabbitMq(Amqp::new(url, runtime)),
        };
        Some(Publisher { action, to })
    }

    /// Writes one message; answers its id once the server has stored it.
    pub async fn publish(&self, message: Message) -> Result<Published, QueueError> {
        match (&self.to, &self.action.target) {
            (To::Redis(link), PublishTarget::Redis { stream }) => {
                let (stream, max_len) = (stream.clone(), self.action.max_len);
                let id = link
                    .call(|mut c| async move {
                        let mut cmd = ::redis::cmd("XADD");
                        cmd.arg(stream);
                        if let Some(n) = max_len {
                            cmd.arg("MAXLEN").arg("~").arg(n);
                        }
                        cmd.arg("*").arg("body").arg(&message.body[..]);
                        for (name, value) in message.parts {
                            cmd.arg(colon(name)).arg(value);
                        }
                        cmd.query_async(&mut c).await
                    })
                    .await?;
                Ok(Published { id })
            }
            (To::Nats(nats), PublishTarget::Nats { subject, .. }) => {
                nats.publish(subject, message).await
            }
            (
                To::RabbitMq(amqp),
                PublishTarget::RabbitMq {
                    exchange,
                    routing_key,
                    ..
                },
            ) => {
                let mut headers = FieldTable::default();
                let mut id = String::new();
                for (name, value) in message.parts {
                    if name == "request_id" {
                        id = String::from_utf8_lossy(&value).into_owned();
                    }
                    headers.insert(colon(name).into(), AMQPValue::LongString(value.into()));
                }
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into())
                    .with_headers(headers);
                amqp.publish(
                    exchange,
                    routing_key,
                    message.body.to_vec(),
                    properties,
                    true,
                )
                .await?;
                Ok(Published { id })
            }
            _ => Err(QueueError::Store(
                "the publisher does not match its target".into(),
            )),
        }
    }
}

/// A NATS connection with JetStream, made on first use on a long-lived runtime and made
/// again after a failure.
struct Nats {
    url: String,
    runtime: tokio::runtime::Handle,
    current: ArcSwapOption<async_nats::jetstream::Context>,
    connecting: tokio::sync::Mutex<()>,
}

impl Nats {
    async fn context(&self) -> Result<Arc<async_nats::jetstream::Context>, QueueError> {
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        let url = self.url.clone();
        // The client's tasks run on the gateway's runtime, not on the caller's.
        let connect = self.runtime.spawn(async move {
            async_nats::ConnectOptions::new()
                .name("ferrogate")
                .connection_timeout(NATS_TIMEOUT)
                .request_timeout(Some(NATS_TIMEOUT))
                .connect(url.as_str())
                .await
        });
        let client = tokio::time::timeout(NATS_TIMEOUT * 2, connect)
            .await
            .map_err(|_| QueueError::Store("NATS did not answer in time".into()))?
            .map_err(err)?
            .map_err(err)?;
        let js = Arc::new(
            async_nats::jetstream::ContextBuilder::new()
                .timeout(NATS_TIMEOUT)
                .build(client),
        );
        self.current.store(Some(js.clone()));
        Ok(js)
    }

    async fn publish(&self, subject: &str, message: Message) -> Result<Published, QueueError> {
        let js = self.context().await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in message.parts {
            headers.append(name.as_str(), String::from_utf8_lossy(&value).as_ref());
        }
        let sent = async {
            let ack = js
                .publish_with_headers(subject.to_owned(), headers, message.body)
                .await
                .map_err(err)?;
            ack.await.map_err(err)
        };
        match tokio::time::timeout(NATS_TIMEOUT * 2, sent).await {
            Ok(Ok(ack)) => Ok(Published {
                id: format!("{}:{}", ack.stream, ack.sequence),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.current.store(None);
                Err(QueueError::Store("NATS did not answer in time".into()))
            }
        }
    }
}

/// A request field's part name as Redis and RabbitMQ messages have it: `h:NAME`.
fn colon(name: String) -> String {
    match name.strip_prefix("h-") {
        Some(field) => format!("h:{field}"),
        None => name,
    }
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}
