//! Request validation: JSON Schema (draft 2020-12) for bodies by content type, and rules for
//! query and header parameters. Violations name their location and never echo values.

pub mod params;
pub mod schema;
