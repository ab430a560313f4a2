//! Small JSON writers for attribute values. Attributes are written straight into a `String`
//! (no intermediate `serde_json::Value`) because this runs for every span on the ingest path.

use std::fmt::Write;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

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

pub fn write_any_value(out: &mut String, value: &AnyValue) {
    let Some(value) = &value.value else {
        out.push_str("null");
        return;
    };
    match value {
        any_value::Value::StringValue(s) => push_json_string(out, s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) if d.is_finite() => {
            let _ = write!(out, "{d:?}");
        }
        // JSON has no NaN or infinity; keep them readable as strings.
        any_value::Value::DoubleValue(d) => push_json_string(out, &d.to_string()),
        any_value::Value::BytesValue(bytes) => push_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        any_value::Value::ArrayValue(array) => {
            out.push('[');
            for (index, item) in array.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_any_value(out, item);
            }
            out.push(']');
        }
        any_value::Value::KvlistValue(list) => {
            out.push('{');
            for (index, kv) in list.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json_string(out, &kv.key);
                out.push(':');
                match &kv.value {
                    Some(v) => write_any_value(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        any_value::Value::StringValueStrindex(index) => {
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
        write_any_value(
            &mut out,
            &AnyValue {
                value: Some(any_value::Value::DoubleValue(f64::NAN)),
            },
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
    }
}
