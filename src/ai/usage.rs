//! Token counts of one exchange: from the provider's usage fields when it gives them,
//! otherwise estimated from the text (marked so), and their cost from the price table.

use crate::config::model::AiPrice;

/// Input (prompt) and output (completion) tokens of one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Counted by the gateway, not reported by the provider.
    pub estimated: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    /// The cost in the price table's currency.
    pub fn cost(&self, price: Option<&AiPrice>) -> f64 {
        price.map_or(0.0, |p| {
            (self.input as f64 * p.input + self.output as f64 * p.output) / 1_000_000.0
        })
    }
}

/// Tokens of `text` as the gateway estimates them when a provider reports none: one per
/// four bytes of text, rounded up, and one per word at least (the usual size of a BPE
/// token in English text; a real tokenizer differs by up to a few percent on prose and
/// more on code and other scripts).
pub fn estimate(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let by_bytes = text.len().div_ceil(4) as u64;
    let words = text.split_whitespace().count() as u64;
    by_bytes.max(words)
}

/// Tokens of the text of a chat request's messages (every string under `content`), plus
/// four per message for the roles and separators.
pub fn estimate_messages(messages: &serde_json::Value) -> u64 {
    let Some(list) = messages.as_array() else {
        return 0;
    };
    list.iter()
        .map(|m| 4 + text_of(m.get("content")).map_or(0, |t| estimate(&t)))
        .sum()
}

/// The text of a message's `content`: a string, or the `text` of its parts.
pub fn text_of(content: Option<&serde_json::Value>) -> Option<String> {
    match content? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_the_price_per_million_tokens() {
        let u = Usage {
            input: 1000,
            output: 500,
            estimated: false,
        };
        let p = AiPrice {
            input: 3.0,
            output: 15.0,
        };
        assert!((u.cost(Some(&p)) - 0.0105).abs() < 1e-12);
        assert_eq!(u.cost(None), 0.0);
    }

    #[test]
    fn estimates_count_bytes_and_words() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("Hello"), 2);
        assert_eq!(estimate("a b c d e"), 5);
        let m = serde_json::json!([{"role": "user", "content": "abcdefgh"}]);
        assert_eq!(estimate_messages(&m), 6);
    }
}
