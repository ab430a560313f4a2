//! How many spans one span stands for (its *adjusted count*): the inverse of the probability
//! it was sampled with. Rates and charts use the counts estimated from it, so a service sampled
//! at 10% is not drawn ten times quieter than one kept whole.
//!
//! The sources, most explicit first ([`adjusted_count`]):
//! 1. a multiplier attribute the operator names (as Tempo's `span_multiplier_key`), on the span
//!    or its resource;
//! 2. OpenTelemetry's `tracestate` entry `ot=th:<threshold>` (the 56-bit rejection threshold
//!    of consistent probability sampling): 2^56 / (2^56 − threshold);
//! 3. Jaeger's `sampler.type` = `probabilistic` or `lowerbound` with `sampler.param` = the
//!    probability (on the root span of each trace), or `const` (everything kept);
//! 4. `sampling.priority` > 0: kept on purpose, so it stands for itself.
//!
//! A span with none of these stands for itself too, and is counted as having no sampling
//! information, so a snapshot can say which services it could not correct for.

/// 2^56: thresholds are 56-bit numbers.
const THRESHOLD_RANGE: f64 = 72_057_594_037_927_936.0;

/// The sampling information found on a span, before the precedence is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The value of the configured multiplier attribute.
    pub multiplier: Option<f64>,
    /// The adjusted count the `tracestate` gives.
    pub trace_state: Option<f64>,
    /// Jaeger's `sampler.type`, as far as it says anything about the count.
    pub jaeger_type: Option<JaegerSampler>,
    /// Jaeger's `sampler.param`.
    pub jaeger_param: Option<f64>,
    /// `sampling.priority`.
    pub priority: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JaegerSampler {
    /// `probabilistic` or `lowerbound`: the parameter is the probability.
    Probabilistic,
    /// `const`: the parameter is 1 (all kept) or 0.
    Constant,
}

impl JaegerSampler {
    /// The samplers whose parameter tells the count; rate limiting does not.
    pub fn parse(sampler_type: &str) -> Option<JaegerSampler> {
        match sampler_type {
            "probabilistic" | "lowerbound" => Some(JaegerSampler::Probabilistic),
            "const" => Some(JaegerSampler::Constant),
            _ => None,
        }
    }
}

/// The span's adjusted count by the precedence above, `None` when nothing says. Counts below
/// one are impossible for a kept span and are ignored as malformed.
pub fn adjusted_count(evidence: &Evidence) -> Option<f64> {
    let usable = |count: f64| (count.is_finite() && count >= 1.0).then_some(count);
    let jaeger = match (evidence.jaeger_type, evidence.jaeger_param) {
        (Some(JaegerSampler::Probabilistic), Some(p)) if p > 0.0 => Some(1.0 / p),
        (Some(JaegerSampler::Constant), Some(p)) if p > 0.0 => Some(1.0),
        _ => None,
    };
    evidence
        .multiplier
        .and_then(usable)
        .or_else(|| evidence.trace_state.and_then(usable))
        .or_else(|| jaeger.and_then(usable))
        .or_else(|| evidence.priority.filter(|p| *p > 0.0).map(|_| 1.0))
}

/// A number in attribute text, as stores that keep attributes as strings write it (Jaeger's
/// `const` sampler's parameter is a boolean).
pub fn parse_number(text: &str) -> Option<f64> {
    match text.trim() {
        "true" => Some(1.0),
        "false" => Some(0.0),
        number => number.parse().ok(),
    }
}

/// The adjusted count in a W3C `tracestate` header value: the `th` field of its `ot` entry
/// (lowercase hex, at most 14 digits, trailing zeros dropped). `None` when there is none or it
/// is malformed.
pub fn trace_state_count(trace_state: &str) -> Option<f64> {
    let ot = trace_state
        .split(',')
        .map(str::trim)
        .find_map(|entry| entry.strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|field| field.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // The digits are the threshold's most significant ones: pad to 14 on the right.
    let threshold = u64::from_str_radix(th, 16).ok()? << (4 * (14 - th.len()));
    Some(THRESHOLD_RANGE / (THRESHOLD_RANGE - threshold as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_give_the_counts_of_the_specification_examples() {
        // The OpenTelemetry TraceState specification's examples: th:0 keeps everything,
        // th:8 keeps half, th:c a quarter, th:fd70a4 about 1%.
        assert_eq!(trace_state_count("ot=th:0"), Some(1.0));
        assert_eq!(trace_state_count("ot=th:8"), Some(2.0));
        assert_eq!(trace_state_count("ot=th:c"), Some(4.0));
        assert_eq!(trace_state_count("ot=th:c0"), Some(4.0));
        let one_percent = trace_state_count("ot=th:fd70a4").unwrap();
        assert!((one_percent - 100.0).abs() < 0.01, "{one_percent}");
    }

    #[test]
    fn the_threshold_is_found_among_other_entries_and_fields() {
        assert_eq!(
            trace_state_count("vendor=abc, ot=rv:0123456789abcd;th:8 ,x=y"),
            Some(2.0)
        );
    }

    #[test]
    fn malformed_or_missing_thresholds_say_nothing() {
        for state in [
            "",
            "ot=rv:0123456789abcd",
            "ot=th:",
            "ot=th:xyz",
            "ot=th:123456789abcdef",
            "vendor=th:8",
        ] {
            assert_eq!(trace_state_count(state), None, "{state}");
        }
    }

    #[test]
    fn the_multiplier_wins_over_the_trace_state_which_wins_over_jaeger() {
        let mut evidence = Evidence {
            multiplier: Some(10.0),
            trace_state: Some(4.0),
            jaeger_type: Some(JaegerSampler::Probabilistic),
            jaeger_param: Some(0.5),
            priority: Some(1.0),
        };
        assert_eq!(adjusted_count(&evidence), Some(10.0));
        evidence.multiplier = None;
        assert_eq!(adjusted_count(&evidence), Some(4.0));
        evidence.trace_state = None;
        assert_eq!(adjusted_count(&evidence), Some(2.0));
        evidence.jaeger_type = None;
        assert_eq!(adjusted_count(&evidence), Some(1.0));
        evidence.priority = Some(0.0);
        assert_eq!(adjusted_count(&evidence), None);
    }

    #[test]
    fn jaeger_samplers_count_by_their_parameter() {
        let jaeger = |kind: &str, param: f64| {
            adjusted_count(&Evidence {
                jaeger_type: JaegerSampler::parse(kind),
                jaeger_param: Some(param),
                ..Evidence::default()
            })
        };
        assert_eq!(jaeger("probabilistic", 0.25), Some(4.0));
        assert_eq!(jaeger("lowerbound", 0.5), Some(2.0));
        assert_eq!(jaeger("const", 1.0), Some(1.0));
        // Rate limiting keeps so many traces a second: the probability is unknown.
        assert_eq!(jaeger("ratelimiting", 2.0), None);
        assert_eq!(jaeger("probabilistic", 0.0), None);
    }

    #[test]
    fn counts_below_one_are_ignored() {
        let evidence = Evidence {
            multiplier: Some(0.5),
            ..Evidence::default()
        };
        assert_eq!(adjusted_count(&evidence), None);
    }
}
