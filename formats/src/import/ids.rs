//! Hex ids as Jaeger and Zipkin write them: 64- or 128-bit trace ids, sometimes without leading
//! zeros. Trace ids are widened to 128 bits with leading zeros, as the OpenTelemetry Collector's
//! receivers do, so the same trace gets the same id from either format.

/// Decodes a hex id into `width` bytes, left-padding short ones with zeros. Text that is not hex
/// (or too long) comes back as its raw bytes, so that conversion rejects that span with a
/// message about its length.
fn padded(text: &str, width: usize) -> Vec<u8> {
    let digits = text.trim();
    if digits.len() > width * 2 || digits.is_empty() {
        return digits.as_bytes().to_vec();
    }
    let padded = format!("{digits:0>len$}", len = width * 2);
    hex::decode(padded).unwrap_or_else(|_| digits.as_bytes().to_vec())
}

pub fn trace_id_bytes(text: &str) -> Vec<u8> {
    padded(text, 16)
}

pub fn span_id_bytes(text: &str) -> Vec<u8> {
    padded(text, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_bit_trace_ids_widen_with_leading_zeros() {
        let wide = trace_id_bytes("a03ee8fff1dcd9b9");
        assert_eq!(hex::encode(&wide), "0000000000000000a03ee8fff1dcd9b9");
        assert_eq!(trace_id_bytes("0000000000000000a03ee8fff1dcd9b9"), wide);
    }

    #[test]
    fn ids_without_leading_zeros_are_padded() {
        assert_eq!(hex::encode(span_id_bytes("abc")), "0000000000000abc");
    }

    #[test]
    fn text_that_is_not_hex_keeps_its_bytes() {
        assert_eq!(span_id_bytes("xyz"), b"xyz".to_vec());
    }
}
