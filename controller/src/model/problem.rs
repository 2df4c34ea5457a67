//! A problem found while loading or translating config.

/// Something wrong with one object (or one document of a file): reported,
/// and the object skipped, while the rest of the config keeps working.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// File path, or `kube` for objects from the Kubernetes API.
    pub origin: String,
    /// Kind of the object; empty when the document could not be read at all.
    pub kind: String,
    /// Namespace of the object (may be empty).
    pub namespace: String,
    /// Name of the object (may be empty).
    pub name: String,
    /// Path of the offending field (`spec.rules[0].from[0].source.principals[1]`), may be empty.
    pub field: String,
    /// What is wrong, and what happens as a result.
    pub message: String,
}

/// How a problem that is only a warning (the object is acted on, in part or with a caveat)
/// starts its message.
pub const WARNING_PREFIX: &str = "warning: ";

/// What a route's problem says when a route of a higher-precedence type binds the same
/// Service port (the Gateway API's mesh binding: GRPCRoute, HTTPRoute, TLSRoute, TCPRoute):
/// the route's status then says `Accepted: False`, reason `Conflicted`.
pub const ROUTE_TYPE_CONFLICT: &str = "takes precedence over a TCPRoute";

impl Problem {
    /// Whether this is only a warning: the object is acted on, with the caveat the message
    /// gives.
    pub fn is_warning(&self) -> bool {
        self.message.starts_with(WARNING_PREFIX)
    }

    /// A problem with the object `kind namespace/name` from `origin`.
    pub fn new(origin: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            origin: origin.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// The problem without what only makes sense in the file the parser read: the document
    /// number and the line and column. For objects that reached it in another form than the
    /// user wrote them (the Kubernetes API's JSON, a copy in a state folder).
    pub fn without_location(mut self) -> Self {
        let mut text = self
            .message
            .strip_prefix("document 1: ")
            .unwrap_or(&self.message)
            .to_string();
        if let Some(start) = text.find(" (line ")
            && let Some(len) = text[start..].find(')')
            && text[start..start + len].contains(", column ")
        {
            text.replace_range(start..=start + len, "");
        }
        self.message = text;
        self
    }

    /// Sets the field path.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// `<origin>: <Kind> <ns>/<name>: field <field>: <message>`; parts that are
/// unknown (a document that is not even YAML has no kind) are left out.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.origin)?;
        if !self.kind.is_empty() || !self.name.is_empty() {
            let kind = if self.kind.is_empty() {
                "object"
            } else {
                &self.kind
            };
            if self.namespace.is_empty() {
                write!(f, " {kind} {}:", self.name)?;
            } else {
                write!(f, " {kind} {}/{}:", self.namespace, self.name)?;
            }
        }
        if !self.field.is_empty() {
            write!(f, " field {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}
