//! Optional bearer-token authentication shared by the OTLP and admin listeners.

use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl Auth {
    pub fn new(token: Option<String>) -> Self {
        Auth {
            token: token.map(Arc::from),
        }
    }

    /// Checks an `Authorization` header value; everything passes when no token is set.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let presented = header
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .unwrap_or_default();
        constant_time_eq(presented.as_bytes(), expected.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte, so the time taken does not tell
/// an attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_everything_passes() {
        assert!(Auth::new(None).allows(None));
    }

    #[test]
    fn the_token_must_match_exactly() {
        let auth = Auth::new(Some("s3cret".into()));
        assert!(auth.allows(Some("Bearer s3cret")));
        assert!(auth.allows(Some("bearer s3cret")));
        assert!(!auth.allows(Some("Bearer s3cre")));
        assert!(!auth.allows(Some("Bearer s3cret2")));
        assert!(!auth.allows(Some("Basic s3cret")));
        assert!(!auth.allows(None));
    }
}
