//! Small JSON writers for attribute values. Attributes are written straight into a `String`
//! (no intermediate `serde_json::Value`) because this runs for every span on the ingest path.

use std::fmt::Write;

use crate::otlp::wire::{self, Depth, Value};
use base64::Engine;

pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
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
