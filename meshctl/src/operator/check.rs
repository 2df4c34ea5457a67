//! What `meshctl check` reports, whichever cluster it looks at: each check's outcome in its
//! group with a hint, as `linkerd check` prints them, the same JSON and exit status; and the
//! checks both modes make alike (the CA root's validity, what the controller finds in the
//! configuration).

use std::time::SystemTime;

use serde::Serialize;

use super::findings::Finding;

/// A root with less left than this is a warning: time to plan its rotation.
pub const ROOT_WARNING_DAYS: u64 = 60;
/// A root with less left than this is an error: workload certificates will soon fail.
pub const ROOT_ERROR_DAYS: u64 = 7;

/// The group of the controller and its CA root.
pub const CONTROL_PLANE: &str = "control plane";
/// The group of the ztunnels.
pub const NODE_PROXIES: &str = "node proxies";
/// The group of the waypoints.
pub const WAYPOINTS: &str = "waypoints";
/// The group of what the controller finds in the objects it reads.
pub const CONFIGURATION: &str = "configuration";

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, with a caveat to act on.
    Warning,
    /// Broken: the mesh does not do what it should.
    Error,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The group it belongs to (`control plane`, `node proxies`, ...).
    pub group: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it, for warnings and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(group: &'static str, message: impl Into<String>) -> Self {
        Self {
            group,
            status: Status::Ok,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning or an error, with what to do about it.
    pub fn failed(
        group: &'static str,
        status: Status,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            group,
            status,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The validity of the first certificate of `pem`.
pub fn root_validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    let invalid = |e: hbone::CertError| format!("the CA root certificate is invalid: {e}");
    let certs = hbone::cert::certificates_from_pem(pem, "root certificate").map_err(invalid)?;
    hbone::cert::certificate_validity(&certs[0]).map_err(invalid)
}

/// How a root valid from `not_before` until `not_after` stands at `now`; `rotate` says how to
/// replace it where it is kept.
pub fn root_check(
    now: SystemTime,
    not_before: SystemTime,
    not_after: SystemTime,
    rotate: &str,
) -> Check {
    const DAY: u64 = 24 * 3600;
    if now < not_before {
        return Check::failed(
            CONTROL_PLANE,
            Status::Error,
            "the CA root certificate is not valid yet",
            "check the host's clock",
        );
    }
    let days = not_after
        .duration_since(now)
        .map_or(0, |left| left.as_secs() / DAY);
    let status = match days {
        d if d < ROOT_ERROR_DAYS => Status::Error,
        d if d < ROOT_WARNING_DAYS => Status::Warning,
        _ => {
            return Check::ok(
                CONTROL_PLANE,
                format!("the CA root certificate is valid for {days} more days"),
            );
        }
    };
    let message = if days == 0 && not_after <= now {
        "the CA root certificate has expired".to_owned()
    } else {
        format!("the CA root certificate expires in {days} days")
    };
    Check::failed(CONTROL_PLANE, status, message, rotate)
}

/// A CA rotation under way, from the controller's `/debug/ca`: a warning saying what it waits
/// for (it completes by itself once that happens); `None` when none is under way.
pub fn rotation_check(status: &serde_json::Value) -> Option<Check> {
    let phase = status["phase_number"].as_u64().filter(|p| *p != 0)?;
    let waiting = status["waiting_for"].as_str().unwrap_or("the next step");
    Some(Check::failed(
        CONTROL_PLANE,
        Status::Warning,
        format!("a CA rotation is in phase {phase}, waiting for {waiting}"),
        "it completes by itself; follow it with `meshctl ca status`",
    ))
}

/// The configuration group: one check per finding (an error or a warning, with `hint`), or
/// one that passed when there is none among the `objects` read.
pub fn configuration(found: Vec<Finding>, objects: usize, hint: &str) -> Vec<Check> {
    if found.is_empty() {
        let message = format!("the mesh acts on all {objects} objects it reads");
        return vec![Check::ok(CONFIGURATION, message)];
    }
    found
        .into_iter()
        .map(|finding| {
            let status = if finding.error {
                Status::Error
            } else {
                Status::Warning
            };
            Check::failed(CONFIGURATION, status, finding.text, hint)
        })
        .collect()
}

/// Prints `checks` as text (or JSON); returns the exit status.
pub fn print(checks: &[Check], json: bool) -> i32 {
    if json {
        println!("{}", check_json(checks));
    } else {
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
        print!("{}", check_text(checks, colour));
    }
    check_exit_code(checks)
}

/// `check`'s report: checks under their group's heading, a mark for each (coloured on a
/// terminal), hints under failures, and a closing line.
pub fn check_text(checks: &[Check], colour: bool) -> String {
    let paint = |code: &str, mark: &str| {
        if colour {
            format!("\x1b[{code}m{mark}\x1b[0m")
        } else {
            mark.to_owned()
        }
    };
    let mut out = String::new();
    let mut group = "";
    for check in checks {
        if check.group != group {
            group = check.group;
            out.push_str(&format!(
                "{}{group}\n",
                if out.is_empty() { "" } else { "\n" }
            ));
        }
        let mark = match check.status {
            Status::Ok => paint("32", "✔"),
            Status::Warning => paint("33", "⚠"),
            Status::Error => paint("31", "✘"),
        };
        out.push_str(&format!("  {mark} {}\n", check.message));
        if let Some(hint) = &check.hint {
            out.push_str(&format!("      hint: {hint}\n"));
        }
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let (errors, warnings) = (count(Status::Error), count(Status::Warning));
    out.push_str(&match (errors, warnings) {
        (0, 0) => format!(
            "\n{} all {} checks passed\n",
            paint("32", "✔"),
            checks.len()
        ),
        _ => format!(
            "\n{errors} errors, {warnings} warnings in {} checks\n",
            checks.len()
        ),
    });
    out
}

/// `check -o json`: the checks and how many failed.
pub fn check_json(checks: &[Check]) -> String {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let report = serde_json::json!({
        "checks": checks,
        "errors": count(Status::Error),
        "warnings": count(Status::Warning),
    });
    serde_json::to_string_pretty(&report).unwrap_or_default()
}

/// `check`'s exit status: 1 on any error, 2 on warnings only, else 0.
pub fn check_exit_code(checks: &[Check]) -> i32 {
    match checks.iter().map(|c| c.status).max() {
        Some(Status::Error) => 1,
        Some(Status::Warning) => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_rotation_under_way_is_a_warning_saying_what_it_waits_for() {
        let idle = serde_json::json!({"phase_number": 0, "waiting_for": "nothing"});
        assert!(rotation_check(&idle).is_none());
        let waiting = serde_json::json!({
            "phase_number": 1,
            "waiting_for": "1 proxies to load the trust bundle: ztunnel~node2"
        });
        let check = rotation_check(&waiting).unwrap();
        assert_eq!(check.status, Status::Warning);
        assert_eq!(
            check.message,
            "a CA rotation is in phase 1, waiting for 1 proxies to load the trust bundle: \
             ztunnel~node2"
        );
        assert_eq!(
            check.hint.as_deref(),
            Some("it completes by itself; follow it with `meshctl ca status`")
        );
    }

    #[test]
    fn a_root_is_fine_then_a_warning_then_an_error_as_it_nears_its_end() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 365 * DAY;
        let at = |left: u32| root_check(end - left * DAY, start, end, "rotate it");
        assert_eq!(at(60).status, Status::Ok);
        assert_eq!(
            at(60).message,
            "the CA root certificate is valid for 60 more days"
        );
        assert_eq!(at(59).status, Status::Warning);
        assert_eq!(at(59).message, "the CA root certificate expires in 59 days");
        assert_eq!(at(7).status, Status::Warning);
        assert_eq!(at(6).status, Status::Error);
        let expired = root_check(end + DAY, start, end, "rotate it");
        assert_eq!(expired.status, Status::Error);
        assert_eq!(expired.message, "the CA root certificate has expired");
        assert_eq!(expired.hint.as_deref(), Some("rotate it"));
        assert_eq!(
            root_check(start - DAY, start, end, "").status,
            Status::Error
        );
    }

    #[test]
    fn a_generated_root_reads_as_valid_for_its_lifetime() {
        let authority = hbone::Authority::generate_root("cluster.local", 90 * DAY).unwrap();
        let (not_before, not_after) = root_validity(&authority.root_pem()).unwrap();
        let check = root_check(not_before, not_before, not_after, "");
        assert_eq!(check.status, Status::Ok, "{check:?}");
        assert!(root_validity("not pem").unwrap_err().contains("invalid"));
    }

    #[test]
    fn findings_become_errors_and_warnings_with_the_hint() {
        let finding = |error, text: &str| Finding {
            error,
            text: text.to_owned(),
        };
        let checks = configuration(vec![finding(true, "a"), finding(false, "b")], 5, "fix");
        assert_eq!(
            checks.iter().map(|c| c.status).collect::<Vec<_>>(),
            [Status::Error, Status::Warning]
        );
        assert_eq!(checks[1].hint.as_deref(), Some("fix"));
        let none = configuration(Vec::new(), 5, "fix");
        assert_eq!(none[0].message, "the mesh acts on all 5 objects it reads");
    }

    #[test]
    fn check_reports_group_marks_hints_and_exit_status() {
        let check = |group, status, message: &str, hint: Option<&str>| Check {
            group,
            status,
            message: message.to_owned(),
            hint: hint.map(str::to_owned),
        };
        let mut checks = vec![
            check("control plane", Status::Ok, "the controller is ready", None),
            check("node proxies", Status::Warning, "slow", Some("wait")),
        ];
        assert_eq!(check_exit_code(&checks), 2);
        assert_eq!(
            check_text(&checks, false),
            "control plane\n  ✔ the controller is ready\n\nnode proxies\n  ⚠ slow\n      \
             hint: wait\n\n0 errors, 1 warnings in 2 checks\n"
        );
        checks.push(check(
            "node proxies",
            Status::Error,
            "down",
            Some("start it"),
        ));
        assert_eq!(check_exit_code(&checks), 1);
        assert!(check_text(&checks, true).contains("\x1b[31m✘\x1b[0m down"));
        let json: serde_json::Value = serde_json::from_str(&check_json(&checks)).unwrap();
        assert_eq!(
            (json["errors"].as_u64(), json["warnings"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(json["checks"][2]["status"], "error");
        assert_eq!(check_exit_code(&checks[..1]), 0);
        assert!(check_text(&checks[..1], false).ends_with("✔ all 1 checks passed\n"));
    }
}
