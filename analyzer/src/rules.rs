//! The architecture rules of `archtrace check` (`archtrace.toml`): what may call what, layers,
//! limits, and how drift against the baseline is judged. Parsing the TOML text is the caller's
//! job; these types deserialize from it and name unknown keys.

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::derive::NodeType;
use crate::findings::Thresholds;

/// How a kind of drift is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Fails the build.
    Error,
    /// Reported; does not fail the build.
    Warn,
    /// Not reported.
    Allow,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Error => "error",
            Policy::Warn => "warn",
            Policy::Allow => "allow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CyclePolicy {
    /// Every dependency cycle fails the build, even one the baseline has.
    Deny,
    /// Cycles the baseline does not have fail the build.
    DenyNew,
    /// Cycles are not reported.
    Allow,
}

impl CyclePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CyclePolicy::Deny => "deny",
            CyclePolicy::DenyNew => "deny-new",
            CyclePolicy::Allow => "allow",
        }
    }
}

/// `[check]`: how drift against the baseline is judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSettings {
    /// Edges seen fewer times than this are ignored, in the baseline and in the observed
    /// snapshot, so that rare noise does not fail builds.
    pub min_calls: u64,
    /// A baseline edge missing from the observed window is reported as removed only when the
    /// window should have shown at least this many sampled calls of it: at the baseline's
    /// rate, over the window's minutes of traffic, at the window's sampling. Fewer, and its
    /// absence may be chance. The default, 1, keeps every edge a same-length unsampled run
    /// showed; for sampled production windows 5 is safer (a Poisson count with mean 5 is 0
    /// under 1% of the time, with mean 1, 37%).
    pub min_expected_calls: f64,
    pub new_edges: Policy,
    pub removed_edges: Policy,
    pub new_nodes: Policy,
    pub removed_nodes: Policy,
    pub cycles: CyclePolicy,
    /// Findings (hubs, shared databases, chatty edges, ...) that the baseline lacks.
    pub new_findings: Policy,
    /// With a declared architecture (`--declared`): observed dependencies it does not declare.
    pub undeclared_edges: Policy,
    /// Declared dependencies that no trace of the window showed.
    pub unobserved_edges: Policy,
    /// Observed nodes the catalog lacks.
    pub undeclared_nodes: Policy,
    /// Observed nodes the catalog has without an owner.
    pub unowned_nodes: Policy,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            min_calls: 1,
            min_expected_calls: 1.0,
            new_edges: Policy::Error,
            removed_edges: Policy::Warn,
            new_nodes: Policy::Warn,
            removed_nodes: Policy::Warn,
            cycles: CyclePolicy::DenyNew,
            new_findings: Policy::Warn,
            undeclared_edges: Policy::Error,
            unobserved_edges: Policy::Warn,
            undeclared_nodes: Policy::Warn,
            unowned_nodes: Policy::Warn,
        }
    }
}

/// Picks nodes: `type:database` (service, database, messaging, external or client), a domain
/// of `[domains]` (`domain:payments`), or a glob on the node's name (`*` and `?`, `[abc]`,
/// `{a,b}`).
#[derive(Clone, Debug)]
pub enum Selector {
    Type(NodeType),
    Domain(String),
    Name { pattern: String, glob: GlobMatcher },
}

/// `[domains]`: each domain's name and the selectors of its members.
pub type DomainTable = BTreeMap<String, Vec<Selector>>;

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        if let Some(name) = text.strip_prefix("type:") {
            let node_type = match name {
                "service" => NodeType::Service,
                "database" => NodeType::Database,
                "messaging" => NodeType::Messaging,
                "external" => NodeType::External,
                "client" => NodeType::Client,
                other => {
                    return Err(format!(
                        "unknown node type `{other}` in selector `{text}`: use type:service, type:database, type:messaging, type:external or type:client"
                    ))
                }
            };
            return Ok(Selector::Type(node_type));
        }
        if let Some(domain) = text.strip_prefix("domain:") {
            return Ok(Selector::Domain(domain.to_owned()));
        }
        let glob = Glob::new(text)
            .map_err(|err| format!("invalid name pattern `{text}`: {err}"))?
            .compile_matcher();
        Ok(Selector::Name {
            pattern: text.to_owned(),
            glob,
        })
    }

    /// Whether the node matches; `domain:` selectors look their members up in `domains`.
    pub fn matches(&self, name: &str, node_type: NodeType, domains: &DomainTable) -> bool {
        match self {
            Selector::Type(wanted) => *wanted == node_type,
            Selector::Domain(domain) => domains.get(domain).is_some_and(|members| {
                members
                    .iter()
                    .any(|s| s.matches(name, node_type, &DomainTable::new()))
            }),
            Selector::Name { glob, .. } => glob.is_match(name),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Type(t) => write!(f, "type:{}", t.as_str()),
            Selector::Domain(domain) => write!(f, "domain:{domain}"),
            Selector::Name { pattern, .. } => f.write_str(pattern),
        }
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `[[deny]]`: nodes matching `from` must not call nodes matching `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    pub from: Selector,
    pub to: Selector,
    pub reason: Option<String>,
}

/// `[[allow_only]]`: nodes matching `from` may call only nodes matching one of `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowOnlyRule {
    pub from: Selector,
    pub to: Vec<Selector>,
    pub reason: Option<String>,
}

/// `[layers]`: layers from the top (entry) down; a call goes to the same or a later layer. A node
/// in no layer is not constrained; a node in several belongs to the first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layers {
    pub order: Vec<Vec<Selector>>,
    pub reason: Option<String>,
}

/// `[limits]`: metrics that may not cross a limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Distinct nodes a node calls.
    pub max_fan_out: Option<usize>,
    /// Distinct nodes that call a node.
    pub max_fan_in: Option<usize>,
    /// Nodes in the longest synchronous call chain from an entry point.
    pub max_sync_depth: Option<usize>,
}

/// A whole rules file. Without one, the check runs on these defaults: a new edge or a new cycle
/// against the baseline is an error.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    pub check: CheckSettings,
    pub deny: Vec<DenyRule>,
    pub allow_only: Vec<AllowOnlyRule>,
    pub layers: Option<Layers>,
    pub limits: Limits,
    /// Declared domains: `payments = ["pay*", "ledger"]`. `archtrace domains` checks them on
    /// the traffic, and rules select their members with `domain:payments`.
    pub domains: DomainTable,
    /// Thresholds of the findings (as `archtrace hotspots --thresholds` takes them).
    pub thresholds: Thresholds,
}

impl Rules {
    /// What parsing cannot see: every `domain:` selector names a declared domain, and domains
    /// are made of names and types, not of other domains.
    pub fn validate(&self) -> Result<(), String> {
        for (domain, members) in &self.domains {
            if let Some(nested) = members.iter().find(|s| matches!(s, Selector::Domain(_))) {
                return Err(format!(
                    "domain `{domain}` lists `{nested}`: a domain's members are name patterns or types, not other domains"
                ));
            }
        }
        let used = self
            .deny
            .iter()
            .flat_map(|r| [&r.from, &r.to])
            .chain(
                self.allow_only
                    .iter()
                    .flat_map(|r| std::iter::once(&r.from).chain(&r.to)),
            )
            .chain(self.layers.iter().flat_map(|l| l.order.iter().flatten()));
        for selector in used {
            if let Selector::Domain(domain) = selector {
                if !self.domains.contains_key(domain) {
                    let declared: Vec<&str> = self.domains.keys().map(String::as_str).collect();
                    return Err(format!(
                        "`domain:{domain}` names no domain of [domains] (declared: {}); declare it, e.g. {domain} = [\"{domain}-*\"]",
                        if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
                    ));
                }
            }
        }
        Ok(())
    }
}
