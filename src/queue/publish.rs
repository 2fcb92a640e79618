//! Publishing: a request written as one message to a Redis stream (`XADD`), for routes whose
//! own workers consume the stream. The message's fields are `body`, `method`, `path`,
//! `request_id`, `client_ip`, `consumer` (when authenticated), and `h:NAME` for each
//! selected request field.

use std::sync::Arc;

use super::redis::Link;
use super::QueueError;
use crate::config::model::{PublishAction, Redis};

/// A route's publisher, with its own connection to the deployment.
pub struct Publisher {
    pub action: PublishAction,
    link: Arc<Link>,
}

impl Publisher {
    pub fn new(action: PublishAction, redis: &Redis, runtime: tokio::runtime::Handle) -> Publisher {
        Publisher {
            action,
            link: Arc::new(Link::new(redis, runtime)),
        }
    }

    /// Appends one message; answers its stream entry id.
    pub async fn publish(&self, fields: Vec<(String, Vec<u8>)>) -> Result<String, QueueError> {
        let stream = self.action.redis_stream.clone();
        let max_len = self.action.max_len;
        self.link
            .call(|mut c| async move {
                let mut cmd = ::redis::cmd("XADD");
                cmd.arg(stream);
                if let Some(n) = max_len {
                    cmd.arg("MAXLEN").arg("~").arg(n);
                }
                cmd.arg("*");
                for (name, value) in fields {
                    cmd.arg(name).arg(value);
                }
                cmd.query_async(&mut c).await
            })
            .await
    }
}
