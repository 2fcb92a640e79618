//! What counting tokens costs where a provider reports no usage: counts 1 KiB of English
//! prose, of code and of Russian text with each tokenizer many times and prints the time per
//! KiB, and the time the first count of each encoding took (building its tables).
//!
//! Usage: cargo run --release --example ai_count -- [ROUNDS=2000]

use std::hint::black_box;
use std::time::Instant;

use ferrogate::ai::usage;
use ferrogate::config::model::AiTokenizer;

const PROSE: &str = "The gateway relays each answer as it comes and counts its tokens at the end. ";
const CODE: &str = "    for (i, t) in order.iter().enumerate() { total += t.weight as u64; }\n";
const RUSSIAN: &str = "Шлюз передаёт каждый ответ по мере поступления и считает токены. ";

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let tokenizers = [
        ("o200k_base", AiTokenizer::O200kBase),
        ("cl100k_base", AiTokenizer::Cl100kBase),
        ("estimate", AiTokenizer::Estimate),
    ];
    for (name, t) in tokenizers {
        let start = Instant::now();
        usage::count(t, "warm up");
        println!("{name}: first count (tables built) {:?}", start.elapsed());
    }
    for (kind, unit) in [("prose", PROSE), ("code", CODE), ("russian", RUSSIAN)] {
        let text = kilobyte(unit);
        for (name, t) in tokenizers {
            let start = Instant::now();
            let mut tokens = 0;
            for _ in 0..rounds {
                tokens = usage::count(t, black_box(&text));
            }
            let per_kib = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
            println!("{kind:8} {name:12} {tokens:4} tokens per KiB, {per_kib:7.2} µs per KiB");
        }
    }
}

/// `unit` repeated to 1024 bytes, cut at a character boundary.
fn kilobyte(unit: &str) -> String {
    let mut s = unit.repeat(1024 / unit.len() + 1);
    let mut end = 1024;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}
