//! What a problem is called in an Event: its `reason` (one CamelCase word per class of
//! problem, a small fixed set that scripts and alerts can match on) and its `note` (the
//! field and the message, within the API's limit).

use crate::model::{Problem, WARNING_PREFIX};
use crate::translate::{PEER_AUTHENTICATION_CONSEQUENCE, StandIn};

/// Longest `note` the API server accepts (`events.k8s.io/v1`: 1 KiB, counted in bytes).
pub const MAX_NOTE: usize = 1024;

/// The class of a problem, written as the Event's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A security kind the mesh does not read (RequestAuthentication, Linkerd's
    /// ServerAuthorization): what it would forbid is allowed, or what it would allow refused.
    NotEnforced,
    /// A security policy that cannot be understood is enforced more strictly than written
    /// (allows nothing, denies everything, STRICT, or without its HTTP parts).
    FailedClosed,
    /// A field the mesh does not read: a misspelling, or a feature it does not implement.
    UnknownField,
    /// A kind the mesh does not read, or a part of an object it leaves out (a warning that
    /// ends saying so).
    Ignored,
    /// Any other error: the object, or a part of it, is refused.
    InvalidConfiguration,
    /// Any other warning: the object is acted on, with the caveat the note gives.
    ConfigurationWarning,
}

impl Reason {
    /// The word written as `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotEnforced => "NotEnforced",
            Reason::FailedClosed => "FailedClosed",
            Reason::UnknownField => "UnknownField",
            Reason::Ignored => "Ignored",
            Reason::InvalidConfiguration => "InvalidConfiguration",
            Reason::ConfigurationWarning => "ConfigurationWarning",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marks of a security kind that is not read (from the model's verdict on unread kinds).
const NOT_ENFORCED: &str = " is not enforced: ";
/// Marks of a kind that is not read.
const KIND_NOT_READ: &str = " is not read: ";
/// Marks of a field that is not read: a warning in most kinds, an error in security
/// policies (which then fail closed, and are classed so).
const FIELD_NOT_READ: [&str; 2] = ["the mesh does not read this field", "unknown field"];
/// What a policy enforced more strictly than written says, besides the stand-ins' texts.
const STRICTER: [&str; 2] = ["more restrictive than requested", "enforced as DENY"];
/// How a warning about a part left out ends.
const LEFT_OUT: [&str; 2] = ["ignored", "skipped"];

/// The class of `problem`, from what its message says happens (most consequential first).
pub fn classify(problem: &Problem) -> Reason {
    let text = problem.message.as_str();
    let stand_ins = [
        StandIn::AllowNothing.consequence(),
        StandIn::DenyAll.consequence(),
        PEER_AUTHENTICATION_CONSEQUENCE,
    ];
    if text.contains(NOT_ENFORCED) {
        Reason::NotEnforced
    } else if stand_ins.iter().chain(&STRICTER).any(|m| text.contains(m)) {
        Reason::FailedClosed
    } else if FIELD_NOT_READ.iter().any(|m| text.contains(m)) {
        Reason::UnknownField
    } else if text.contains(KIND_NOT_READ) {
        Reason::Ignored
    } else if !problem.is_warning() {
        Reason::InvalidConfiguration
    } else if LEFT_OUT.iter().any(|m| text.trim_end().ends_with(m)) {
        Reason::Ignored
    } else {
        Reason::ConfigurationWarning
    }
}

/// `field: message` (or the message alone), without the warning marker (the Event's type
/// says Warning for all), at most [`MAX_NOTE`] bytes.
pub fn note(problem: &Problem) -> String {
    let message = problem
        .message
        .strip_prefix(WARNING_PREFIX)
        .unwrap_or(&problem.message);
    let text = if problem.field.is_empty() {
        message.to_string()
    } else {
        format!("{}: {message}", problem.field)
    };
    truncate(text, MAX_NOTE)
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `...` when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Index, parse_documents};
    use crate::translate::{TranslateOptions, translate};

    /// The problems the model's parser finds in `yaml`, as read from the Kubernetes API.
    fn parsed(yaml: &str) -> Vec<Problem> {
        parse_documents("kubernetes:X/shop/x", yaml, false).problems
    }

    /// The problems translation finds in `yaml`.
    fn translated(yaml: &str) -> Vec<Problem> {
        let parsed = parse_documents("kubernetes:X/shop/x", yaml, false);
        let index = Index::from_origins(vec![(
            "kubernetes:X/shop/x".to_string(),
            parsed.objects,
            parsed.problems,
        )]);
        translate(&index, &TranslateOptions::default()).problems
    }

    fn reasons(problems: &[Problem]) -> Vec<Reason> {
        problems.iter().map(classify).collect()
    }

    #[test]
    fn unread_kinds_are_ignored_or_not_enforced() {
        let problems = parsed(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n---\n\
             apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r}\n",
        );
        assert_eq!(
            reasons(&problems),
            [Reason::Ignored, Reason::NotEnforced],
            "{problems:?}"
        );
    }

    #[test]
    fn policies_that_cannot_be_understood_fail_closed() {
        let typo = translated(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\nspec: {action: ALOW}\n",
        );
        assert_eq!(reasons(&typo), [Reason::FailedClosed], "{typo:?}");
        let unknown_field = translated(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\nspec: {action: DENY, rulez: []}\n",
        );
        assert_eq!(
            reasons(&unknown_field),
            [Reason::FailedClosed],
            "{unknown_field:?}"
        );
        let bad_mode = translated(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: p, namespace: shop}\nspec: {mtls: {mode: STRICTEST}}\n",
        );
        assert_eq!(reasons(&bad_mode), [Reason::FailedClosed], "{bad_mode:?}");
    }

    #[test]
    fn unknown_fields_of_other_kinds_and_other_problems() {
        let problems = parsed(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: d, namespace: shop}\nspec: {host: reviews, trafic: {}}\n",
        );
        assert_eq!(reasons(&problems), [Reason::UnknownField], "{problems:?}");
        let problem = |message: &str| Problem::default().message(message);
        assert_eq!(
            classify(&problem("unknown filter type \"Foo\"; object skipped")),
            Reason::InvalidConfiguration
        );
        assert_eq!(
            classify(&problem(
                "warning: a policy may only target objects of its own namespace; reference ignored"
            )),
            Reason::Ignored
        );
        assert_eq!(
            classify(&problem("warning: no pod runs as service account shop/b")),
            Reason::ConfigurationWarning
        );
    }

    #[test]
    fn notes_carry_the_field_without_the_warning_marker_within_one_kib() {
        let problem = Problem::default()
            .field("spec.action")
            .message("warning: bad");
        assert_eq!(note(&problem), "spec.action: bad");
        assert_eq!(note(&Problem::default().message("bad")), "bad");
        let long = note(&Problem::default().message("é".repeat(MAX_NOTE)));
        assert_eq!(long.len(), MAX_NOTE - 1, "cut before a 2-byte character");
        assert!(long.ends_with("é..."));
        assert_eq!(truncate("x".repeat(MAX_NOTE), MAX_NOTE).len(), MAX_NOTE);
        assert_eq!(
            truncate("x".repeat(MAX_NOTE + 1), MAX_NOTE),
            format!("{}...", "x".repeat(MAX_NOTE - 3))
        );
    }
}
