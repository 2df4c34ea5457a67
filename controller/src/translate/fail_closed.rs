//! Authorization that cannot be understood fails closed.
//!
//! An AuthorizationPolicy that is invalid (an unknown action, a malformed value) or could not
//! even be read (a field of the wrong type), and has no last good version to keep, stands in
//! as the most restrictive policy its readable parts allow:
//!
//! - `ALLOW` (or no action): an ALLOW policy without rules. It allows nothing, so its
//!   workloads accept only what other ALLOW policies allow;
//! - `DENY`, `CUSTOM` or an action that cannot be read: a DENY policy with one empty rule,
//!   which matches, hence denies, every request to its workloads;
//! - `AUDIT`: nothing (auditing never decides).
//!
//! A selector that could be read keeps the policy's scope; one that could not leaves the
//! policy namespace-wide (mesh-wide in the root namespace), which covers at least as much.
//! A PeerAuthentication that cannot be understood stands in as STRICT for its scope.

use crate::model::AuthorizationPolicy;

/// What an AuthorizationPolicy that cannot be understood stands in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StandIn {
    /// An ALLOW policy without rules.
    AllowNothing,
    /// A DENY policy matching every request.
    DenyAll,
    /// No policy (AUDIT).
    Nothing,
}

impl StandIn {
    /// The stand-in for `ap`, from its action as far as it could be read.
    pub(crate) fn of(ap: &AuthorizationPolicy) -> Self {
        match ap.spec.action.as_deref() {
            None | Some("ALLOW") => StandIn::AllowNothing,
            Some("AUDIT") => StandIn::Nothing,
            Some(_) => StandIn::DenyAll,
        }
    }

    /// What happens meanwhile, for the problem's message.
    pub(crate) fn consequence(self) -> &'static str {
        match self {
            StandIn::AllowNothing => {
                "the policy allows nothing until it is fixed (its workloads accept only what \
                 other ALLOW policies allow)"
            }
            StandIn::DenyAll => {
                "the policy denies every request to its workloads until it is fixed"
            }
            StandIn::Nothing => "policy skipped (AUDIT never decides)",
        }
    }
}

/// The message for a PeerAuthentication that cannot be understood.
pub(crate) const PEER_AUTHENTICATION_CONSEQUENCE: &str =
    "the policy is enforced as STRICT until it is fixed";

#[cfg(test)]
mod tests {
    use super::*;

    fn with_action(action: Option<&str>) -> AuthorizationPolicy {
        let mut ap = AuthorizationPolicy::default();
        ap.spec.action = action.map(str::to_owned);
        ap
    }

    #[test]
    fn the_stand_in_follows_the_readable_action() {
        assert_eq!(StandIn::of(&with_action(None)), StandIn::AllowNothing);
        assert_eq!(
            StandIn::of(&with_action(Some("ALLOW"))),
            StandIn::AllowNothing
        );
        assert_eq!(StandIn::of(&with_action(Some("DENY"))), StandIn::DenyAll);
        assert_eq!(StandIn::of(&with_action(Some("DENNY"))), StandIn::DenyAll);
        assert_eq!(StandIn::of(&with_action(Some("allow"))), StandIn::DenyAll);
        assert_eq!(StandIn::of(&with_action(Some("CUSTOM"))), StandIn::DenyAll);
        assert_eq!(StandIn::of(&with_action(Some("AUDIT"))), StandIn::Nothing);
    }
}
