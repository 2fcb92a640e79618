//! Configuration: YAML file → validated model, with every problem reported at once.

mod access;
mod admin;
mod ai;
mod alerts;
mod cache;
mod dns;
pub mod document;
mod duplicates;
pub mod file;
mod geo;
mod locality;
pub mod model;
mod oidc;
mod queue;
mod ratelimit;
mod resilience;
mod shadow;
mod tracing;
mod transform;
mod upstream_tls;
mod validate;

use std::fmt;
use std::path::Path;

pub use validate::validate;

/// One problem in a configuration, with the key path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[2].match.path.regex`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The JSON Schema of the configuration file, generated from the file types (`file.rs`):
/// what `ferrogate schema` prints and docs/ferrogate.schema.json holds, for editors.
/// Values the validator parses from text (durations, addresses) are strings here.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(file::File);
    schema.insert("title".into(), "Ferrogate configuration".into());
    schema.insert(
        "description".into(),
        "The YAML configuration of the Ferrogate gateway (docs/config.md).".into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses and validates configuration text; `base_dir` resolves relative file paths.
pub fn parse(text: &str, base_dir: &Path) -> Result<model::Config, ConfigErrors> {
    let duplicates = duplicates::find(text);
    // With duplicates reported, the rest of the file is still checked (reading the first
    // of each), so that one run lists every problem.
    let mut options = serde_saphyr::Options::default();
    if !duplicates.is_empty() {
        options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
    }
    let file: file::File = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("invalid YAML: {e}"),
        }])
    })?;
    match (validate(file, base_dir), duplicates.is_empty()) {
        (result, true) => result,
        (Ok(_), false) => Err(ConfigErrors(duplicates)),
        (Err(ConfigErrors(more)), false) => {
            Err(ConfigErrors(duplicates.into_iter().chain(more).collect()))
        }
    }
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<model::Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}
