//! Small JSON writers for attribute values. Attributes are written straight into a `String`
//! (no intermediate `serde_json::Value`) because this runs for every span on the ingest path.

use std::fmt::Write;

use crate::otlp::wire::{self, Depth, Value};
use base64::Engine;

pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for index in clean_prefix(bytes)..bytes.len() {
        let byte = bytes[index];
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..index]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = index + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// How many leading bytes surely need no escaping, tested eight at a time: most attribute
/// texts need none, and a byte at a time this was a tenth of converting a span.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES << 7;
    // The high bit of each byte below `n` (for n <= 128), or equal to zero; exact in
    // telling whether any byte matches.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS;
    let mut chunks = bytes.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().enumerate() {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        let escapes = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if escapes != 0 {
            return index * 8;
        }
    }
    bytes.len() - chunks.remainder().len()
}

/// Writes an attribute value read from a request's bytes (and checked) as JSON.
pub fn write_value(out: &mut String, value: Value<'_>) {
    match value {
        Value::Empty => out.push_str("null"),
        Value::Text(s) => push_json_string(out, s),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Double(d) if d.is_finite() => {
            let _ = write!(out, "{d:?}");
        }
        // JSON has no NaN or infinity; keep them readable as strings.
        Value::Double(d) => push_json_string(out, &d.to_string()),
        Value::Bytes(bytes) => push_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        Value::Array(items) => {
            out.push('[');
            let mut first = true;
            // Checked when the span was read: errors cannot happen here.
            let _ = wire::nested_items(items, |item| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                write_value(
                    out,
                    wire::any_value(item, Depth::Checked).unwrap_or(Value::Empty),
                );
            });
            out.push(']');
        }
        Value::List(pairs) => {
            out.push('{');
            let mut first = true;
            let _ = wire::nested_items(pairs, |pair| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                let (key, value) =
                    wire::key_value(pair, Depth::Checked).unwrap_or(("", Value::Empty));
                push_json_string(out, key);
                out.push(':');
                write_value(out, value);
            });
            out.push('}');
        }
        Value::TextIndex(index) => {
            let _ = write!(out, "{{\"string_index\":{index}}}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) {
        let mut out = String::new();
        push_json_string(&mut out, text);
        let parsed: String = serde_json::from_str(&out).expect("valid JSON string");
        assert_eq!(parsed, text);
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        check("plain");
        check("quote \" and backslash \\");
        check("control \u{1} \n \t \r chars");
        check("unicode ☃ 𝄞 <script>");
        check("");
        // Escapes at every place within and across the eight-byte words tested at once.
        for at in 0..20 {
            for special in ["\"", "\\", "\u{0}", "\u{1f}", "\n", "☃", "\u{7f}", " "] {
                let mut text = "x".repeat(at);
                text.push_str(special);
                text.push_str("ab𝄞cdefghij\"k");
                check(&text);
                check(&text[..text.len() - 2]);
            }
        }
    }

    #[test]
    fn non_finite_doubles_stay_valid_json() {
        let mut out = String::new();
        write_value(&mut out, Value::Double(f64::NAN));
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
    }
}
