//! What the Linkerd objects mean once validated: who a client must be to be admitted, which
//! port of which pods a Server guards, and the default inbound policies.

use api::security::{Address, StringMatch, string_match::MatchType};

use crate::model::linkerd::LabelSelector;

/// One condition a client must meet. An empty list admits nobody.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Requirement {
    /// Its peer identity is one of these (principals as ztunnel matches them).
    Principal(Vec<StringMatch>),
    /// Its address is in one of these networks.
    Network(Vec<Address>),
}

impl Requirement {
    /// Whether no client can meet it.
    pub fn admits_nobody(&self) -> bool {
        match self {
            Requirement::Principal(p) => p.is_empty(),
            Requirement::Network(n) => n.is_empty(),
        }
    }

    /// Any authenticated (mTLS) client.
    pub fn authenticated() -> Self {
        Requirement::Principal(vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }])
    }
}

/// Clients admitted: those meeting every requirement of one alternative. No alternative admits
/// nobody; an alternative without requirements admits everybody.
pub(super) type Alternatives = Vec<Vec<Requirement>>;

/// Linkerd's default inbound policies (the annotation, and a v1beta3 Server's `accessPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum DefaultPolicy {
    /// Every client.
    AllUnauthenticated,
    /// Every mTLS client.
    AllAuthenticated,
    /// Every client from the cluster networks.
    ClusterUnauthenticated,
    /// Every mTLS client from the cluster networks.
    ClusterAuthenticated,
    /// Nobody.
    Deny,
    /// Every client, the ones another policy would refuse logged.
    Audit,
}

/// Every value, as Linkerd spells it.
const POLICIES: &[(&str, DefaultPolicy)] = &[
    ("all-unauthenticated", DefaultPolicy::AllUnauthenticated),
    ("all-authenticated", DefaultPolicy::AllAuthenticated),
    (
        "cluster-unauthenticated",
        DefaultPolicy::ClusterUnauthenticated,
    ),
    ("cluster-authenticated", DefaultPolicy::ClusterAuthenticated),
    ("deny", DefaultPolicy::Deny),
    ("audit", DefaultPolicy::Audit),
];

impl DefaultPolicy {
    /// The policy spelled `text`.
    pub fn parse(text: &str) -> Option<Self> {
        POLICIES.iter().find(|(t, _)| *t == text).map(|(_, p)| *p)
    }

    /// Its name as Linkerd spells it.
    pub fn name(self) -> &'static str {
        POLICIES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("deny", |(t, _)| t)
    }

    /// Every value, for messages.
    pub fn all_names() -> String {
        POLICIES
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The clients it admits (audit admits everybody; its logging is the caller's business).
    pub fn alternatives(self, cluster: &[Address]) -> Alternatives {
        let network = || Requirement::Network(cluster.to_vec());
        match self {
            DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => vec![Vec::new()],
            DefaultPolicy::AllAuthenticated => vec![vec![Requirement::authenticated()]],
            DefaultPolicy::ClusterUnauthenticated => vec![vec![network()]],
            DefaultPolicy::ClusterAuthenticated => {
                vec![vec![Requirement::authenticated(), network()]]
            }
            DefaultPolicy::Deny => Vec::new(),
        }
    }
}

/// The port a Server names.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum PortRef {
    /// A port number.
    Number(u16),
    /// A container port name, resolved per pod.
    Name(String),
    /// Every port: a Server whose port cannot be read guards them all (fail closed).
    Every,
}

/// A validated Server.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ServerDef {
    /// Where it was read (for problems found per pod).
    pub origin: String,
    /// Its name.
    pub name: String,
    /// Pods of its namespace it selects; `None` selects none (an ExternalWorkload selector).
    pub selector: Option<LabelSelector>,
    /// The port it guards.
    pub port: PortRef,
    /// What applies when no authorization admits a client.
    pub access: DefaultPolicy,
}

/// What a Linkerd AuthorizationPolicy authorizes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    /// One Server of its namespace.
    Server(String),
    /// Every Server of its namespace.
    Namespace,
    /// One inbound route (HTTPRoute whose parent is a Server) of its namespace: the requests
    /// it matches, enforced at the waypoint serving the Server's pods.
    Route(String),
}

/// A validated AuthorizationPolicy, its authentications resolved.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PolicyDef {
    /// Its namespace.
    pub namespace: String,
    /// What it authorizes.
    pub target: Target,
    /// What a client must all meet.
    pub required: Vec<Requirement>,
}
