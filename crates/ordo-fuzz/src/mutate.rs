//! Input mutation, deterministic from a seed: byte-level edits (bit flips, interesting integers,
//! inserts, deletes, duplicated and spliced ranges) and, for text formats, structure-aware edits that
//! swap numbers and strings for the values that break parsers (0, -1, 1e300, NaN, huge integers,
//! path tricks) and delete or repeat lines.

use rand::Rng;

/// The longest input the mutator makes (bounded inputs keep each execution's memory bounded).
pub const MAX_INPUT: usize = 64 << 10;

/// Numbers that sit on the edges parsers get wrong.
pub const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "-0.0",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "NaN",
    "Infinity",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "4294967296",
    "1000000000000",
    "100000000",
    "1e10",
    "0.5",
    "1.5",
    "65536",
    "1000000",
];

/// Strings that sit on the edges: empty, path tricks, devices, other datasets, long and odd text.
pub const STRINGS: &[&str] = &[
    "",
    ".",
    "..",
    "../../etc/hostname",
    "/dev/zero",
    "/etc/hostname",
    "cache",
    "world:corpus",
    "world:sft",
    "world:preferences",
    "world:rl_prompts",
    "hf:.",
    "gguf:/dev/zero",
    "http://user:pw@127.0.0.1:1/v1",
    "{%",
    "{{",
    "\u{0}",
    "\u{fffd}",
    "dpo",
    "grpo",
    "pretrain",
    "sft",
    "reward_model",
    "verifier",
    "cot_monitor",
    "answer_match",
    "keyword",
    "([a-z]+)*$",
];

/// Little-endian integers for binary headers (lengths, counts, offsets, type ids).
const INTEGERS: &[u64] =
    &[0, 1, 2, 7, 8, 16, 255, 256, 0x7fff_ffff, 0xffff_ffff, 0x1_0000_0000, 1 << 40, 1 << 62, u64::MAX, 99];

/// Mutates `input` with 1 to 4 edits; `others` are inputs to splice from; `text` enables the
/// structure-aware edits.
pub fn mutate(input: &[u8], others: &[Vec<u8>], text: bool, rng: &mut impl Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let kind = if text { rng.random_range(0..11) } else { rng.random_range(0..7) };
        match kind {
            0 => flip_bit(&mut out, rng),
            1 => set_integer(&mut out, rng),
            2 => insert_bytes(&mut out, rng),
            3 => delete_range(&mut out, rng),
            4 => duplicate_range(&mut out, rng),
            5 => splice(&mut out, others, rng),
            6 => set_byte(&mut out, rng),
            7 | 8 => replace_token(&mut out, true, rng),
            9 => replace_token(&mut out, false, rng),
            _ => edit_line(&mut out, rng),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

fn flip_bit(b: &mut [u8], rng: &mut impl Rng) {
    if !b.is_empty() {
        let i = rng.random_range(0..b.len());
        b[i] ^= 1 << rng.random_range(0..8);
    }
}

fn set_byte(b: &mut [u8], rng: &mut impl Rng) {
    const BYTES: &[u8] = b"\0\xff\x7f\x80019\"'{}[]=,:\n\\.-";
    if !b.is_empty() {
        let i = rng.random_range(0..b.len());
        b[i] = BYTES[rng.random_range(0..BYTES.len())];
    }
}

fn set_integer(b: &mut [u8], rng: &mut impl Rng) {
    let v = INTEGERS[rng.random_range(0..INTEGERS.len())];
    let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
    if b.len() >= width {
        let i = rng.random_range(0..=b.len() - width);
        b[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

fn insert_bytes(b: &mut Vec<u8>, rng: &mut impl Rng) {
    let at = rng.random_range(0..=b.len());
    let n = rng.random_range(1..=16);
    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    b.splice(at..at, bytes);
}

fn range(len: usize, rng: &mut impl Rng) -> Option<(usize, usize)> {
    if len == 0 {
        return None;
    }
    let a = rng.random_range(0..len);
    let n = rng.random_range(1..=(len - a).min(256));
    Some((a, a + n))
}

fn delete_range(b: &mut Vec<u8>, rng: &mut impl Rng) {
    if let Some((a, z)) = range(b.len(), rng) {
        b.drain(a..z);
    }
}

fn duplicate_range(b: &mut Vec<u8>, rng: &mut impl Rng) {
    if let Some((a, z)) = range(b.len(), rng) {
        let copy = b[a..z].to_vec();
        let at = rng.random_range(0..=b.len());
        b.splice(at..at, copy);
    }
}

fn splice(b: &mut Vec<u8>, others: &[Vec<u8>], rng: &mut impl Rng) {
    if others.is_empty() {
        return;
    }
    let other = &others[rng.random_range(0..others.len())];
    if let (Some((a, _)), Some((c, d))) = (range(b.len(), rng), range(other.len(), rng)) {
        b.truncate(a);
        b.extend_from_slice(&other[c..d]);
    }
}

/// Spans of numbers (`number`) or of the insides of double-quoted strings in text.
fn tokens(b: &[u8], number: bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if number && (b[i].is_ascii_digit() || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b".+-_".contains(&b[i])) {
                i += 1;
            }
            spans.push((start, i));
        } else if !number && b[i] == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            spans.push((start, i.min(b.len())));
            i += 1;
        } else {
            i += 1;
        }
    }
    spans
}

fn replace_token(b: &mut Vec<u8>, number: bool, rng: &mut impl Rng) {
    let spans = tokens(b, number);
    if spans.is_empty() {
        return;
    }
    let (a, z) = spans[rng.random_range(0..spans.len())];
    let new: Vec<u8> = if number {
        NUMBERS[rng.random_range(0..NUMBERS.len())].as_bytes().to_vec()
    } else if rng.random_range(0..8) == 0 {
        "x".repeat(rng.random_range(1..4096)).into_bytes()
    } else {
        STRINGS[rng.random_range(0..STRINGS.len())].as_bytes().to_vec()
    };
    b.splice(a..z, new);
}

fn edit_line(b: &mut Vec<u8>, rng: &mut impl Rng) {
    let starts: Vec<usize> =
        std::iter::once(0).chain(b.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1)).collect();
    let i = rng.random_range(0..starts.len());
    let a = starts[i];
    let z = starts.get(i + 1).copied().unwrap_or(b.len());
    if rng.random_bool(0.5) {
        b.drain(a..z);
    } else {
        let line = b[a..z].to_vec();
        b.splice(a..a, line);
    }
}
