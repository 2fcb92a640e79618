//! The AI gateway's building blocks (docs/ai-gateway.md): the OpenAI-compatible front's
//! request checks and errors, the providers' wire formats (OpenAI and compatible servers,
//! Azure OpenAI, Anthropic's Messages API, with translation both ways), server-sent events,
//! routing of a model alias to its targets with fallback, token accounting and the answer
//! cache. It knows nothing of the pipeline: `proxy/ai.rs` calls [`Service`].

pub mod anthropic;
pub mod budget;
pub mod cache;
pub mod error;
pub mod exchange;
pub mod front;
pub mod openai;
pub mod sse;
pub mod template;
pub mod usage;

pub use error::ApiError;
pub use exchange::{Answer, Service, Tally};
pub use usage::Usage;
