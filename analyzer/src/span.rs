//! The span model: what archtrace keeps of one OpenTelemetry span, whatever format it came in.

use std::fmt;
use std::sync::Arc;

/// A 128-bit trace id. Never all zero (the receivers reject such spans).
pub type TraceId = [u8; 16];
/// A 64-bit span id. Never all zero.
pub type SpanId = [u8; 8];

/// The service name OpenTelemetry SDKs report when none is configured; the edge contract uses it
/// for spans whose resource has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum SpanKind {
    #[default]
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    /// Maps the OTLP enum value; unknown values are treated as unspecified, as the spec asks.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The OTLP enum value (the discriminants are OTLP's).
    pub fn to_otlp(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The OTLP enum value (the discriminants are OTLP's).
    pub fn to_otlp(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// A link to another span (possibly in another trace), as batch consumers use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The link's attributes as a JSON object (`{}` when it has none; empty when converted
    /// without detail, for derivation only).
    pub attributes_json: String,
}

/// A text attribute the edge derivation reads (see the edge-derivation contract); each has its
/// own column in the store so a window can be re-derived without parsing JSON.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PeerKey {
    PeerService,
    ServerAddress,
    NetworkPeerAddress,
    NetPeerName,
    NetSockPeerAddr,
    DbSystem,
    DbSystemName,
    DbNamespace,
    DbName,
    MessagingSystem,
    MessagingDestinationName,
    RpcService,
    HttpRoute,
    /// `http.request.method`, or the legacy `http.method`.
    HttpMethod,
}

/// The span and resource attributes the edge derivation reads. A span carries two or three of
/// the fourteen texts, so only those present are held (sorted by key): a field for each made
/// every span some 300 bytes larger, and spans wait in memory by the hundred thousand.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerAttributes {
    texts: Box<[(PeerKey, Box<str>)]>,
    pub server_port: Option<i64>,
    pub network_peer_port: Option<i64>,
}

macro_rules! peer_text_getters {
    ($($getter:ident => $key:ident),* $(,)?) => {
        impl PeerAttributes {
            $(
                pub fn $getter(&self) -> Option<&str> {
                    self.get(PeerKey::$key)
                }
            )*
        }
    };
}

peer_text_getters! {
    peer_service => PeerService,
    server_address => ServerAddress,
    network_peer_address => NetworkPeerAddress,
    net_peer_name => NetPeerName,
    net_sock_peer_addr => NetSockPeerAddr,
    db_system => DbSystem,
    db_system_name => DbSystemName,
    db_namespace => DbNamespace,
    db_name => DbName,
    messaging_system => MessagingSystem,
    messaging_destination_name => MessagingDestinationName,
    rpc_service => RpcService,
    http_route => HttpRoute,
    http_method => HttpMethod,
}

impl PeerAttributes {
    pub fn get(&self, key: PeerKey) -> Option<&str> {
        self.texts
            .iter()
            .find(|(held, _)| *held == key)
            .map(|(_, text)| &**text)
    }

    /// Sets `key`, replacing what it held.
    pub fn set(&mut self, key: PeerKey, text: impl Into<Box<str>>) {
        let mut texts = std::mem::take(&mut self.texts).into_vec();
        texts.push((key, text.into()));
        *self = PeerAttributes {
            server_port: self.server_port,
            network_peer_port: self.network_peer_port,
            ..PeerAttributes::from_pairs(&mut texts)
        };
    }

    /// The texts of `pairs` (which it empties), and no ports. Of a key given twice, the later
    /// text is kept, as a later attribute replaces an earlier one.
    pub fn from_pairs(pairs: &mut Vec<(PeerKey, Box<str>)>) -> Self {
        // Stable: the texts of one key stay in the order given.
        pairs.sort_by_key(|(key, _)| *key);
        pairs.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(&mut later.1, &mut earlier.1);
            }
            same
        });
        PeerAttributes {
            // Exactly as long as it needs: spans are held by the hundred thousand.
            texts: pairs.drain(..).collect(),
            server_port: None,
            network_peer_port: None,
        }
    }

    /// The texts given as `Some`, and no ports.
    pub fn from_texts(texts: impl IntoIterator<Item = (PeerKey, Option<String>)>) -> Self {
        let mut pairs = texts
            .into_iter()
            .filter_map(|(key, text)| Some((key, text?.into_boxed_str())))
            .collect();
        PeerAttributes::from_pairs(&mut pairs)
    }
}

/// Everything else a span carried, kept so that nothing a later analysis may want is lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpanDetail {
    pub trace_state: String,
    pub status_message: String,
    /// Shared by the spans of one instrumentation scope.
    #[serde(with = "crate::shared_text")]
    pub scope_name: Arc<str>,
    #[serde(with = "crate::shared_text")]
    pub scope_version: Arc<str>,
    /// The span attributes not held in [`PeerAttributes`], as a JSON object.
    pub attributes_json: String,
    /// All resource attributes as a JSON object; shared by the spans of one resource.
    #[serde(with = "crate::shared_text")]
    pub resource_attributes_json: Arc<str>,
    /// A stable hash of `resource_attributes_json`, under which the store keeps it once.
    pub resource_id: u64,
    pub events_count: u32,
}

/// A span's [`SpanDetail`], allocated only when it has any. Derivation reads none of it, so
/// the spans a server holds by the hundred thousand while their traces complete go without:
/// a third of a span's size. Reads as an empty detail when there is none; writing to it makes
/// room for one. Saved exactly as a [`SpanDetail`] is.
#[derive(Clone, Default)]
pub struct OptionalDetail(Option<Box<SpanDetail>>);

static NO_DETAIL: std::sync::LazyLock<SpanDetail> = std::sync::LazyLock::new(SpanDetail::default);

impl From<SpanDetail> for OptionalDetail {
    fn from(detail: SpanDetail) -> Self {
        OptionalDetail((detail != *NO_DETAIL).then(|| Box::new(detail)))
    }
}

impl std::ops::Deref for OptionalDetail {
    type Target = SpanDetail;

    fn deref(&self) -> &SpanDetail {
        self.0.as_deref().unwrap_or(&NO_DETAIL)
    }
}

impl std::ops::DerefMut for OptionalDetail {
    fn deref_mut(&mut self) -> &mut SpanDetail {
        self.0.get_or_insert_default()
    }
}

impl PartialEq for OptionalDetail {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for OptionalDetail {}

impl fmt::Debug for OptionalDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl serde::Serialize for OptionalDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for OptionalDetail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SpanDetail::deserialize(deserializer).map(OptionalDetail::from)
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// `service.name`, prefixed `namespace/` when `service.namespace` is set; never empty.
    #[serde(with = "crate::shared_text")]
    pub service: Arc<str>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status: StatusCode,
    pub links: Vec<Link>,
    pub peer: PeerAttributes,
    /// `deployment.environment.name` (or the legacy `deployment.environment`) of the resource.
    #[serde(with = "crate::shared_text::option")]
    pub environment: Option<Arc<str>>,
    /// `service.version` of the resource: the release that reported the span.
    #[serde(default, with = "crate::shared_text::option")]
    pub version: Option<Arc<str>>,
    /// How many spans this one stands for, when its sampling is known
    /// ([`crate::sampling::adjusted_count`]).
    pub adjusted_count: Option<f64>,
    /// `http.request.resend_count` (or the legacy `http.resend_count`): how many times the
    /// client sent this request before; 0 when absent.
    #[serde(default)]
    pub resend_count: u32,
    pub detail: OptionalDetail,
}

impl Span {
    /// A span of `service` with no parent, name, time, status, links, peer attributes,
    /// environment or detail: what generators and tests build on.
    pub fn new(trace_id: TraceId, span_id: SpanId, service: &str, kind: SpanKind) -> Span {
        Span {
            trace_id,
            span_id,
            parent_span_id: None,
            service: Arc::from(service),
            name: String::new(),
            kind,
            start_ns: 0,
            end_ns: 0,
            status: StatusCode::Unset,
            links: Vec::new(),
            peer: PeerAttributes::default(),
            environment: None,
            version: None,
            adjusted_count: None,
            resend_count: 0,
            detail: OptionalDetail::default(),
        }
    }

    pub fn with_parent(mut self, parent: Option<SpanId>) -> Span {
        self.parent_span_id = parent;
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Span {
        self.name = name.into();
        self
    }

    pub fn with_adjusted_count(mut self, adjusted_count: Option<f64>) -> Span {
        self.adjusted_count = adjusted_count;
        self
    }

    pub fn with_time(mut self, start_ns: i64, end_ns: i64) -> Span {
        self.start_ns = start_ns;
        self.end_ns = end_ns;
        self
    }

    /// About how many bytes the span holds in memory, its own strings included (the resource
    /// attributes are shared between spans and not counted): what bounds a queue of spans.
    pub fn memory_size(&self) -> usize {
        let peer_text = self
            .peer
            .texts
            .iter()
            .map(|(_, text)| std::mem::size_of::<(PeerKey, Box<str>)>() + text.len())
            .sum::<usize>();
        let detail = &self.detail;
        let detail_size = detail
            .0
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<SpanDetail>());
        std::mem::size_of::<Span>()
            + detail_size
            + self.name.len()
            + peer_text
            + self
                .links
                .iter()
                .map(|link| std::mem::size_of::<Link>() + link.attributes_json.len())
                .sum::<usize>()
            + detail.trace_state.len()
            + detail.status_message.len()
            + detail.scope_name.len()
            + detail.scope_version.len()
            + detail.attributes_json.len()
    }

    pub fn duration_ns(&self) -> i64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    pub fn is_error(&self) -> bool {
        self.status == StatusCode::Error
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and platforms, for ids that are
/// stored (the standard library's hasher may change between Rust releases).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The node name of a service as the edge contract defines it.
pub fn service_node_name(name: Option<&str>, namespace: Option<&str>) -> String {
    let name = match name {
        Some(name) if !name.is_empty() => name,
        _ => UNKNOWN_SERVICE,
    };
    match namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_service_name_becomes_unknown_service() {
        assert_eq!(service_node_name(None, None), "unknown_service");
        assert_eq!(service_node_name(Some(""), None), "unknown_service");
    }

    #[test]
    fn service_namespace_prefixes_the_name() {
        assert_eq!(service_node_name(Some("cart"), Some("shop")), "shop/cart");
        assert_eq!(service_node_name(Some("cart"), Some("")), "cart");
    }

    #[test]
    fn the_stable_hash_is_fnv_1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn peer_texts_keep_the_later_of_a_repeated_key_and_nothing_absent() {
        let mut pairs = vec![
            (PeerKey::HttpRoute, Box::from("/first")),
            (PeerKey::PeerService, Box::from("cart")),
            (PeerKey::HttpRoute, Box::from("/second")),
        ];
        let mut peer = PeerAttributes::from_pairs(&mut pairs);
        assert!(pairs.is_empty());
        assert_eq!(peer.http_route(), Some("/second"));
        assert_eq!(peer.peer_service(), Some("cart"));
        assert_eq!(peer.server_address(), None);
        peer.server_port = Some(443);
        peer.set(PeerKey::PeerService, "payment");
        peer.set(PeerKey::DbName, "orders");
        assert_eq!(peer.peer_service(), Some("payment"));
        assert_eq!(peer.db_name(), Some("orders"));
        assert_eq!(peer.http_route(), Some("/second"));
        assert_eq!(
            peer.server_port,
            Some(443),
            "setting a text keeps the ports"
        );
        // The same texts set in another order are the same attributes.
        let other = PeerAttributes::from_texts([
            (PeerKey::DbName, Some("orders".to_owned())),
            (PeerKey::HttpRoute, Some("/second".to_owned())),
            (PeerKey::ServerAddress, None),
            (PeerKey::PeerService, Some("payment".to_owned())),
        ]);
        assert_eq!(
            PeerAttributes {
                server_port: None,
                ..peer
            },
            other
        );
    }

    #[test]
    fn kind_and_status_round_trip_through_their_otlp_numbers() {
        for value in 0..=5 {
            assert_eq!(i32::from(SpanKind::from_otlp(value).to_otlp()), value);
        }
        assert_eq!(SpanKind::from_otlp(42), SpanKind::Unspecified);
        for value in 0..=2 {
            assert_eq!(i32::from(StatusCode::from_otlp(value).to_otlp()), value);
        }
        assert_eq!(StatusCode::from_otlp(7), StatusCode::Unset);
    }

    #[test]
    fn a_span_without_detail_holds_none_and_reads_and_saves_as_an_empty_one() {
        let mut span = Span::new([1; 16], [2; 8], "checkout", SpanKind::Server);
        assert!(span.detail.0.is_none());
        assert_eq!(span.detail.attributes_json, "");
        assert_eq!(*span.detail, SpanDetail::default());
        let empty = serde_json::to_string(&SpanDetail::default()).unwrap();
        assert_eq!(serde_json::to_string(&span.detail).unwrap(), empty);
        // Read back, an empty detail takes no room either.
        let read: OptionalDetail = serde_json::from_str(&empty).unwrap();
        assert!(read.0.is_none());

        span.detail.attributes_json = r#"{"user.id":7}"#.to_owned();
        assert!(span.detail.0.is_some());
        let detail = SpanDetail {
            attributes_json: r#"{"user.id":7}"#.to_owned(),
            ..SpanDetail::default()
        };
        assert_eq!(*span.detail, detail);
        let saved = serde_json::to_string(&span.detail).unwrap();
        assert_eq!(saved, serde_json::to_string(&detail).unwrap());
        let read: OptionalDetail = serde_json::from_str(&saved).unwrap();
        assert_eq!(read, span.detail);
        assert!(OptionalDetail::from(SpanDetail::default()).0.is_none());
        assert_ne!(OptionalDetail::from(detail), OptionalDetail::default());
    }
}
