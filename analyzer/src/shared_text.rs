//! Serde for texts many spans share (service, scope, resource attributes): inside
//! [`write_shared`] and [`read_shared`], each distinct text is written once per stream and then
//! referred to by number. The deriver saves a hundred thousand waiting spans every few seconds,
//! and these texts were half of every saved span. Outside those scopes the texts are plain
//! strings, as serde writes them by default.
//!
//! The references number texts in the order they are first written, so a stream is read in the
//! order it was written (postcard, serde's sequential formats).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

enum Scope {
    Plain,
    Writing(HashMap<Arc<str>, u32, foldhash::fast::RandomState>),
    Reading(Vec<Arc<str>>),
}

thread_local! {
    static SCOPE: RefCell<Scope> = const { RefCell::new(Scope::Plain) };
}

/// Puts the thread's scope back to plain when a closure returns or panics.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        SCOPE.with(|scope| *scope.borrow_mut() = Scope::Plain);
    }
}

fn within<R>(scope: Scope, run: impl FnOnce() -> R) -> R {
    SCOPE.with(|current| *current.borrow_mut() = scope);
    let _restore = Restore;
    run()
}

/// Runs `serialize` with shared texts written once each.
pub fn write_shared<R>(serialize: impl FnOnce() -> R) -> R {
    within(Scope::Writing(HashMap::default()), serialize)
}

/// Runs `deserialize` over what [`write_shared`] wrote.
pub fn read_shared<R>(deserialize: impl FnOnce() -> R) -> R {
    within(Scope::Reading(Vec::new()), deserialize)
}

/// A text as written in a shared stream: the first time in full, then by its number.
#[derive(Serialize, Deserialize)]
enum Shared<T> {
    New(T),
    Seen(u32),
}

pub fn serialize<S: Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    let seen = SCOPE.with(|scope| match &mut *scope.borrow_mut() {
        Scope::Plain | Scope::Reading(_) => None,
        Scope::Writing(numbers) => Some(numbers.get(text).copied().ok_or_else(|| {
            // Past u32::MAX texts, later ones are written in full and never referred to.
            if let Ok(next) = u32::try_from(numbers.len()) {
                numbers.insert(text.clone(), next);
            }
        })),
    });
    match seen {
        None => serializer.serialize_str(text),
        Some(Ok(number)) => Shared::<&str>::Seen(number).serialize(serializer),
        Some(Err(())) => Shared::New(&**text).serialize(serializer),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    let shared = SCOPE.with(|scope| matches!(*scope.borrow(), Scope::Reading(_)));
    if !shared {
        return Ok(Arc::from(String::deserialize(deserializer)?));
    }
    let read = Shared::<String>::deserialize(deserializer)?;
    SCOPE.with(|scope| match (&mut *scope.borrow_mut(), read) {
        (Scope::Reading(texts), Shared::New(text)) => {
            let text = Arc::<str>::from(text);
            texts.push(text.clone());
            Ok(text)
        }
        (Scope::Reading(texts), Shared::Seen(number)) => {
            texts.get(number as usize).cloned().ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "shared text {number} referred to before it was written"
                ))
            })
        }
        _ => Err(serde::de::Error::custom(
            "shared texts read outside read_shared",
        )),
    })
}

/// The same for an optional text.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        text: &Option<Arc<str>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        struct Text<'a>(&'a Arc<str>);
        impl Serialize for Text<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, serializer)
            }
        }
        text.as_ref().map(Text).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Arc<str>>, D::Error> {
        struct Text(Arc<str>);
        impl<'de> Deserialize<'de> for Text {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                super::deserialize(deserializer).map(Text)
            }
        }
        Ok(Option::<Text>::deserialize(deserializer)?.map(|text| text.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Span, SpanKind};

    /// Spans of two services, each of one resource, as a request's conversion shares them.
    fn spans() -> Vec<Span> {
        let resources: Vec<(Arc<str>, Arc<str>)> = ["checkout", "payments"]
            .into_iter()
            .map(|service| {
                let json = format!(r#"{{"service.name":"{service}","host.name":"node-1"}}"#);
                (Arc::from(service), Arc::from(json))
            })
            .collect();
        (0u8..6)
            .map(|i| {
                let (service, resource) = &resources[usize::from(i % 2)];
                let mut span = Span::new([1; 16], [i + 1; 8], "", SpanKind::Server);
                span.service = service.clone();
                span.environment = (i < 4).then(|| Arc::from("prod"));
                span.detail.resource_attributes_json = resource.clone();
                span.detail.scope_name = Arc::from("opentelemetry-instrumentation-http");
                span
            })
            .collect()
    }

    #[test]
    fn shared_texts_are_written_once_and_read_back_shared() {
        let spans = spans();
        let plain = serde_json::to_string(&spans).unwrap();
        let shared = write_shared(|| serde_json::to_string(&spans)).unwrap();
        assert_eq!(plain.matches("node-1").count(), 6);
        assert_eq!(shared.matches("node-1").count(), 2, "{shared}");
        assert_eq!(
            shared.matches("opentelemetry-instrumentation-http").count(),
            1
        );
        assert_eq!(shared.matches("prod").count(), 1);

        let read: Vec<Span> = read_shared(|| serde_json::from_str(&shared)).unwrap();
        assert_eq!(read, spans);
        assert!(Arc::ptr_eq(&read[0].service, &read[2].service));
        assert!(Arc::ptr_eq(
            &read[1].detail.resource_attributes_json,
            &read[5].detail.resource_attributes_json
        ));
        // Outside the scopes texts are plain strings, as before shared texts existed.
        assert!(plain.contains(r#""service":"checkout""#), "{plain}");
        let read_plain: Vec<Span> = serde_json::from_str(&plain).unwrap();
        assert_eq!(read_plain, spans);
    }

    #[test]
    fn a_reference_to_a_text_never_written_is_an_error_not_a_panic() {
        let shared = write_shared(|| serde_json::to_string(&spans())).unwrap();
        // The first span's service made a reference to a text that was never written.
        let truncated = shared.replacen(r#"{"New":"checkout"}"#, r#"{"Seen":7}"#, 1);
        let read = read_shared(|| serde_json::from_str::<Vec<Span>>(&truncated));
        let err = read.unwrap_err().to_string();
        assert!(
            err.contains("shared text 7 referred to before it was written"),
            "{err}"
        );
        // The scope ended with the error: plain texts read again.
        assert!(
            serde_json::from_str::<Vec<Span>>(&serde_json::to_string(&spans()).unwrap()).is_ok()
        );
    }
}
