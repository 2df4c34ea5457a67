//! Linkerd's admission, which allows, as ztunnel DENY rules, which only refuse: a port is
//! refused to a client that no alternative admits. Expressed as DENY, a Linkerd policy never
//! admits what an Istio AuthorizationPolicy on the same workload refuses (Istio ALLOW
//! policies are alternatives to each other), nor refuses other ports than its own.

use api::security::{Clause, Match, Rule};

use super::defs::{Alternatives, Requirement};

/// The ports a rule is about.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Ports {
    /// These ports.
    Only(Vec<u16>),
    /// Every port but these (none: every port).
    Except(Vec<u16>),
}

fn ports(list: &[u16]) -> Vec<u32> {
    list.iter().map(|p| u32::from(*p)).collect()
}

/// The match of a client that does not meet `r`.
fn failing(r: &Requirement) -> Match {
    match r {
        Requirement::Principal(p) => Match {
            not_principals: p.clone(),
            ..Match::default()
        },
        Requirement::Network(n) => Match {
            not_source_ips: n.clone(),
            ..Match::default()
        },
    }
}

/// The DENY rule refusing `ports` to every client no alternative admits; `None` when some
/// alternative admits everybody (nothing to refuse).
pub(super) fn deny_rule(on: &Ports, alternatives: &Alternatives) -> Option<Rule> {
    // An alternative with a requirement nobody meets admits nobody: it refuses nothing more.
    let live: Vec<&Vec<Requirement>> = alternatives
        .iter()
        .filter(|a| !a.iter().any(Requirement::admits_nobody))
        .collect();
    if live.iter().any(|a| a.is_empty()) {
        return None;
    }
    let port_match = match on {
        Ports::Only(list) => Some(Match {
            destination_ports: ports(list),
            ..Match::default()
        }),
        Ports::Except(list) if !list.is_empty() => Some(Match {
            not_destination_ports: ports(list),
            ..Match::default()
        }),
        Ports::Except(_) => None,
    };
    // Refused: on those ports, and failing some requirement of each alternative.
    let clauses = port_match
        .map(|m| Clause { matches: vec![m] })
        .into_iter()
        .chain(live.iter().map(|a| Clause {
            matches: a.iter().map(failing).collect(),
        }))
        .collect();
    Some(Rule { clauses })
}

#[cfg(test)]
mod tests {
    use api::security::{StringMatch, string_match::MatchType};

    use super::*;

    fn exact(s: &str) -> StringMatch {
        StringMatch {
            match_type: Some(MatchType::Exact(s.into())),
        }
    }

    #[test]
    fn a_rule_refuses_its_ports_to_clients_failing_every_alternative() {
        let web = Requirement::Principal(vec![exact("td/ns/a/sa/web")]);
        let alternatives = vec![vec![web.clone()], vec![Requirement::Network(Vec::new())]];
        let rule = deny_rule(&Ports::Only(vec![8080]), &alternatives).unwrap();
        assert_eq!(rule.clauses.len(), 2);
        assert_eq!(rule.clauses[0].matches[0].destination_ports, vec![8080]);
        assert_eq!(rule.clauses[1].matches, vec![failing(&web)]);
    }

    #[test]
    fn nobody_admitted_refuses_the_ports_and_everybody_admitted_refuses_nothing() {
        let rule = deny_rule(&Ports::Except(vec![8080]), &Vec::new()).unwrap();
        assert_eq!(rule.clauses.len(), 1);
        assert_eq!(rule.clauses[0].matches[0].not_destination_ports, vec![8080]);
        assert_eq!(
            deny_rule(&Ports::Except(Vec::new()), &Vec::new()),
            Some(Rule::default())
        );
        assert_eq!(deny_rule(&Ports::Only(vec![1]), &vec![Vec::new()]), None);
    }
}
