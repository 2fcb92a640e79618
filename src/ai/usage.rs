//! Token counts of one exchange: from the provider's usage fields when it gives them,
//! otherwise counted from the text with the model's tokenizer (marked estimated), and their
//! cost from the price table.

use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

use crate::config::model::{AiPrice, AiTokenizer};

/// Each encoding is built from its table on first use, once per process (a few tens of
/// milliseconds and a few MB of memory), and never by a route that counts no tokens.
static O200K_BASE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());
static CL100K_BASE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::cl100k_base().ok());

/// Builds the encodings `tokenizers` name on a thread of its own (a tenth to a third of a
/// second each), so that the first answer counted does not stall a worker for it. Called
/// when a configuration with AI routes is loaded.
pub fn warm(tokenizers: impl IntoIterator<Item = AiTokenizer>) {
    let (mut o200k, mut cl100k) = (false, false);
    for t in tokenizers {
        match t {
            AiTokenizer::O200kBase => o200k = true,
            AiTokenizer::Cl100kBase => cl100k = true,
            AiTokenizer::Estimate => {}
        }
    }
    if !(o200k || cl100k) {
        return;
    }
    let built = std::thread::Builder::new()
        .name("ferrogate-tokenizer".into())
        .spawn(move || {
            if o200k {
                LazyLock::force(&O200K_BASE);
            }
            if cl100k {
                LazyLock::force(&CL100K_BASE);
            }
        });
    if let Err(e) = built {
        tracing::warn!(error = %e, "the tokenizer tables will be built on first use");
    }
}

/// Text is counted in segments of at most this many bytes: the encodings' splitting
/// patterns backtrack, and on long runs of whitespace or punctuation the regex engine
/// gives up (and the crate panics), which short segments never reach.
const SEGMENT: usize = 512;

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

/// Tokens of `text` in `tokenizer`'s encoding.
pub fn count(tokenizer: AiTokenizer, text: &str) -> u64 {
    let bpe = match tokenizer {
        AiTokenizer::O200kBase => O200K_BASE.as_ref(),
        AiTokenizer::Cl100kBase => CL100K_BASE.as_ref(),
        AiTokenizer::Estimate => None,
    };
    match bpe {
        Some(bpe) => segments(text).map(|s| bpe.count_ordinary(s) as u64).sum(),
        None => estimate(text),
    }
}

/// Prompt tokens of a chat request's messages as OpenAI counts them: per message three
/// for its framing plus its role, name and text, and three that prime the answer.
pub fn count_messages(tokenizer: AiTokenizer, messages: &serde_json::Value) -> u64 {
    if tokenizer == AiTokenizer::Estimate {
        return estimate_messages(messages);
    }
    let Some(list) = messages.as_array() else {
        return 0;
    };
    let field = |m: &serde_json::Value, k: &str| {
        m.get(k)
            .and_then(|v| v.as_str())
            .map_or(0, |t| count(tokenizer, t))
    };
    let framing = |m: &serde_json::Value| match m.get("name") {
        Some(_) => 4,
        None => 3,
    };
    3 + list
        .iter()
        .map(|m| {
            let text = text_of(m.get("content")).map_or(0, |t| count(tokenizer, &t));
            framing(m) + field(m, "role") + field(m, "name") + text
        })
        .sum::<u64>()
}

/// `text` in pieces of at most [`SEGMENT`] bytes, cut where the encodings start a new
/// word (before a single space) when there is such a place in the second half, else at a
/// character boundary.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = match rest.len() <= SEGMENT {
            true => rest.len(),
            false => cut_point(rest),
        };
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

fn cut_point(text: &str) -> usize {
    let b = text.as_bytes();
    (SEGMENT / 2..SEGMENT)
        .rev()
        .find(|&i| b[i] == b' ' && !b[i - 1].is_ascii_whitespace())
        .or_else(|| (1..=SEGMENT).rev().find(|&i| text.is_char_boundary(i)))
        .unwrap_or(text.len())
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

    #[test]
    fn the_encodings_count_as_openai_does() {
        use AiTokenizer::{Cl100kBase, Estimate, O200kBase};
        assert_eq!(count(Cl100kBase, "hello world"), 2);
        assert_eq!(count(O200kBase, "hello world"), 2);
        assert_eq!(count(Cl100kBase, ""), 0);
        // The encodings differ on other scripts, and from the byte estimate.
        let ru = "Привет, как у тебя дела сегодня?";
        assert_eq!(count(Cl100kBase, ru), 16);
        assert_eq!(count(O200kBase, ru), 9);
        assert_eq!(count(Estimate, ru), 15);
        let ja = "日本語のテキストです";
        assert_eq!(count(Cl100kBase, ja), 9);
        assert_eq!(count(O200kBase, ja), 7);
        assert_eq!(count(Estimate, ja), 8);
        let code = "    if (x) {\n        return y;\n    }";
        assert_eq!(count(Cl100kBase, code), 12);
        assert_eq!(estimate(code), 9);
        let m = serde_json::json!([{"role": "user", "content": "hello world"}]);
        // 3 framing + 1 role + 2 text + 3 priming.
        assert_eq!(count_messages(Cl100kBase, &m), 9);
        assert_eq!(count_messages(Estimate, &m), estimate_messages(&m));
    }

    #[test]
    fn long_text_is_counted_in_segments_without_failing() {
        let spaces = " ".repeat(200_000);
        assert!(count(AiTokenizer::Cl100kBase, &spaces) > 0);
        let marks = "^".repeat(200_000) + &"\n \n".repeat(50_000);
        assert!(count(AiTokenizer::O200kBase, &marks) > 0);
        let prose = "the quick brown fox jumps over the lazy dog ".repeat(100);
        // Cut before a word, segments count as the whole text does: 9 tokens a sentence
        // and the last space; a run of "é" is cut between characters.
        assert_eq!(count(AiTokenizer::Cl100kBase, &prose), 900 + 1);
        let accents = "é".repeat(1000);
        assert!(segments(&accents).all(|s| s.len() <= SEGMENT));
        assert_eq!(
            segments(&accents).map(str::len).sum::<usize>(),
            accents.len()
        );
    }
}
