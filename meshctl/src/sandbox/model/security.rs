//! What a container's process runs as: user, groups, capabilities and
//! no_new_privs, from the pod's and the container's `securityContext` (the
//! container's settings win, as in Kubernetes).
//!
//! Defaults, for a pod that says nothing: uid and gid 65534 (`nobody`), no
//! capabilities, no_new_privs. A container that runs as root (`runAsUser:
//! 0`) gets the Pod Security Standards' "baseline" set: containerd's
//! default set without `NET_RAW`, which (like `NET_ADMIN`) would let it set
//! `SO_MARK` and slip past the in-pod capture. `capabilities.add` may grant
//! any capability that acts only inside the pod's own namespaces; those that
//! reach the whole machine (the sandbox's pods share its kernel and
//! filesystem) are refused when the manifest is applied, as is
//! `privileged: true`.
//!
//! Unlike containerd, which needs file capabilities on the binary, added
//! capabilities are held by a non-root process too (as ambient
//! capabilities): there are no images here to carry file capabilities.

use serde::{Deserialize, Serialize};

use super::objects::{Container, PodSecurityContext, PodSpec, SecurityContext};

/// The uid a container runs as when nothing says otherwise (`nobody`).
pub const DEFAULT_UID: u32 = 65534;
/// The gid a container runs as when nothing says otherwise.
pub const DEFAULT_GID: u32 = 65534;
/// Largest user or group id Kubernetes accepts.
const MAX_ID: i64 = i32::MAX as i64;

/// Linux capability names by number (`capability.h`).
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What a root container holds by default: the Pod Security Standards'
/// baseline list (containerd's default set without NET_RAW).
const ROOT_DEFAULT: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Capabilities whose reach is the whole machine rather than the pod's
/// namespaces: mounts, modules, raw devices, the clock, the kernel log,
/// BPF, reading any file by handle. A sandbox pod shares the machine's
/// kernel and filesystem, so these are never granted.
const HOST_WIDE: &[&str] = &[
    "DAC_READ_SEARCH",
    "LINUX_IMMUTABLE",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "AUDIT_CONTROL",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A set of capabilities: bit `n` is capability `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The set holding the named capabilities (names known to be valid).
    fn of(names: &[&str]) -> CapSet {
        CapSet(
            names
                .iter()
                .filter_map(|n| cap_number(n))
                .fold(0, |acc, n| acc | 1 << n),
        )
    }

    /// True if capability `n` is in the set.
    pub fn contains(self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    /// The capability numbers in the set, in order.
    pub fn numbers(self) -> impl Iterator<Item = u32> {
        (0..64).filter(move |n| self.contains(*n))
    }
}

/// The number of a capability named as Kubernetes does (`NET_ADMIN`), with
/// or without `CAP_`, in any case.
pub fn cap_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|n| n as u32)
}

/// Everything a container's process is started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Capabilities the process holds (effective, permitted, inheritable,
    /// and ambient when not root).
    pub caps: CapSet,
    /// The bounding set: the most a setuid or file-capability binary could
    /// give it (only reachable when privilege escalation is allowed).
    pub bounding: CapSet,
    /// Set no_new_privs: exec never raises privileges.
    pub no_new_privs: bool,
}

impl RunAs {
    /// Nothing at all: `uid`/`gid` with no groups, no capabilities.
    pub fn powerless(uid: u32, gid: u32) -> RunAs {
        RunAs {
            uid,
            gid,
            groups: Vec::new(),
            caps: CapSet::default(),
            bounding: CapSet::default(),
            no_new_privs: true,
        }
    }
}

/// A user or group id from a manifest, checked as Kubernetes does.
fn id(value: i64, field: &str) -> Result<u32, String> {
    if (0..=MAX_ID).contains(&value) {
        Ok(value as u32)
    } else {
        Err(format!("{field}: {value} must be between 0 and {MAX_ID}"))
    }
}

/// Parses capability names; `ALL` is allowed only where `all_ok`.
fn names(list: &[String], field: &str, all_ok: bool) -> Result<(CapSet, bool), String> {
    let mut set = CapSet::default();
    let mut all = false;
    for (i, name) in list.iter().enumerate() {
        if name.eq_ignore_ascii_case("ALL") {
            if !all_ok {
                return Err(format!(
                    "{field}[{i}]: ALL is not granted in the sandbox: its pods share the \
                     machine's kernel and filesystem"
                ));
            }
            all = true;
            continue;
        }
        let n =
            cap_number(name).ok_or_else(|| format!("{field}[{i}]: unknown capability {name:?}"))?;
        set.0 |= 1 << n;
    }
    Ok((set, all))
}

/// The capabilities (held, bounding) of a container running as `uid`.
fn capabilities(
    sc: Option<&SecurityContext>,
    at: &str,
    uid: u32,
) -> Result<(CapSet, CapSet), String> {
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let empty = Vec::new();
    let add_list = caps.map(|c| &c.add).unwrap_or(&empty);
    let drop_list = caps.map(|c| &c.drop).unwrap_or(&empty);
    let (add, _) = names(add_list, &format!("{at}.capabilities.add"), false)?;
    for (i, name) in add_list.iter().enumerate() {
        let bare = cap_number(name).map(|n| CAPABILITIES[n as usize]);
        if let Some(cap) = bare.filter(|c| HOST_WIDE.contains(c)) {
            return Err(format!(
                "{at}.capabilities.add[{i}]: {cap} reaches beyond the pod (sandbox pods share \
                 the machine's kernel and filesystem), so the sandbox does not grant it"
            ));
        }
    }
    let (drop, drop_all) = names(drop_list, &format!("{at}.capabilities.drop"), true)?;
    let base = if drop_all {
        CapSet::default()
    } else {
        CapSet::of(ROOT_DEFAULT)
    };
    let bounding = CapSet((base.0 | add.0) & !drop.0);
    // Root holds its whole bounding set; anyone else only what was added.
    let held = if uid == 0 {
        bounding
    } else {
        CapSet(add.0 & !drop.0)
    };
    Ok((held, bounding))
}

/// What container `index` of `spec` (whose field path is `at`) runs as.
/// `primary_group` gives the host's primary group of a uid, used when
/// `runAsUser` is set without `runAsGroup` (Kubernetes takes it from the
/// image's `/etc/passwd`; failing that the group is the uid's number, never
/// root's group by accident). Errors start with the field path.
pub fn run_as(
    spec: &PodSpec,
    index: usize,
    at: &str,
    primary_group: &dyn Fn(u32) -> Option<u32>,
) -> Result<RunAs, String> {
    let pod = spec.security_context.as_ref();
    let container: Option<&Container> = spec.containers.get(index);
    let sc = container.and_then(|c| c.security_context.as_ref());
    let c_at = format!("{at}.containers[{index}].securityContext");
    let p_at = format!("{at}.securityContext");
    let pick =
        |c: Option<i64>, p: Option<i64>, name: &str| -> Result<Option<(u32, String)>, String> {
            match (c, p) {
                (Some(v), _) => {
                    id(v, &format!("{c_at}.{name}")).map(|n| Some((n, format!("{c_at}.{name}"))))
                }
                (None, Some(v)) => {
                    id(v, &format!("{p_at}.{name}")).map(|n| Some((n, format!("{p_at}.{name}"))))
                }
                (None, None) => Ok(None),
            }
        };
    let user = pick(
        sc.and_then(|s| s.run_as_user),
        pod.and_then(|p| p.run_as_user),
        "runAsUser",
    )?;
    let group = pick(
        sc.and_then(|s| s.run_as_group),
        pod.and_then(|p| p.run_as_group),
        "runAsGroup",
    )?;
    let (uid, gid) = match (&user, group) {
        (None, None) => (DEFAULT_UID, DEFAULT_GID),
        (None, Some((g, _))) => (DEFAULT_UID, g),
        (Some((u, _)), Some((g, _))) => (*u, g),
        (Some((u, _)), None) => (*u, primary_group(*u).unwrap_or(*u)),
    };
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        let field = user
            .map(|(_, f)| f)
            .unwrap_or_else(|| format!("{c_at}.runAsUser"));
        let name = container.map(|c| c.name.as_str()).unwrap_or_default();
        return Err(format!(
            "{field}: container {name:?} has runAsNonRoot and runAsUser 0: container's \
             runAsUser breaks non-root policy"
        ));
    }
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Err(format!(
            "{c_at}.privileged: privileged containers are not supported: sandbox pods share \
             the machine's kernel and filesystem"
        ));
    }
    let groups = supplementary(pod, &p_at)?;
    let (caps, bounding) = capabilities(sc, &c_at, uid)?;
    let no_new_privs = sc.and_then(|s| s.allow_privilege_escalation) != Some(true);
    Ok(RunAs {
        uid,
        gid,
        groups,
        caps,
        bounding,
        no_new_privs,
    })
}

/// `supplementalGroups` and `fsGroup`, in order, without repeats.
fn supplementary(pod: Option<&PodSecurityContext>, at: &str) -> Result<Vec<u32>, String> {
    let mut groups = Vec::new();
    let Some(p) = pod else {
        return Ok(groups);
    };
    for (i, g) in p.supplemental_groups.iter().enumerate() {
        groups.push(id(*g, &format!("{at}.supplementalGroups[{i}]"))?);
    }
    if let Some(g) = p.fs_group {
        groups.push(id(g, &format!("{at}.fsGroup"))?);
    }
    let mut seen = std::collections::BTreeSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(groups)
}

/// Checks every container of `spec` (field path `at`) when a manifest is
/// applied: ids in range, capabilities known and grantable, no privileged
/// container, no root container under `runAsNonRoot`.
pub fn validate(spec: &PodSpec, at: &str) -> Result<(), String> {
    for i in 0..spec.containers.len() {
        run_as(spec, i, at, &|_| None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::objects::PodObject;

    fn spec(yaml: &str) -> PodSpec {
        let pod: PodObject = serde_yaml_ng::from_str(yaml).unwrap();
        pod.spec
    }

    fn resolve(yaml: &str) -> Result<RunAs, String> {
        run_as(&spec(yaml), 0, "spec", &|uid| (uid == 1000).then_some(100))
    }

    const BASE: &str = "metadata: {name: p}\nspec:\n";

    #[test]
    fn defaults_are_nobody_without_capabilities() {
        let r = resolve(&format!("{BASE}  containers: [{{name: a}}]\n")).unwrap();
        assert_eq!((r.uid, r.gid), (DEFAULT_UID, DEFAULT_GID));
        assert_eq!(r.caps, CapSet::default());
        assert!(r.no_new_privs);
        assert!(!r.bounding.contains(cap_number("NET_RAW").unwrap()));
        assert!(!r.bounding.contains(cap_number("NET_ADMIN").unwrap()));
    }

    #[test]
    fn container_settings_win_over_the_pod() {
        let r = resolve(&format!(
            "{BASE}  securityContext: {{runAsUser: 1000, runAsGroup: 2000, supplementalGroups: [5, 6], fsGroup: 5}}\n  \
             containers: [{{name: a, securityContext: {{runAsUser: 1001}}}}]\n"
        ))
        .unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (1001, 2000, vec![5, 6]));
        // runAsUser alone: the host's primary group, else the uid's number.
        let r = resolve(&format!(
            "{BASE}  containers: [{{name: a, securityContext: {{runAsUser: 1000}}}}]\n"
        ))
        .unwrap();
        assert_eq!(r.gid, 100);
        let r = resolve(&format!(
            "{BASE}  containers: [{{name: a, securityContext: {{runAsUser: 4242}}}}]\n"
        ))
        .unwrap();
        assert_eq!(r.gid, 4242);
    }

    #[test]
    fn root_gets_the_baseline_set_and_adds_and_drops_apply() {
        let r = resolve(&format!(
            "{BASE}  securityContext: {{runAsUser: 0}}\n  containers: [{{name: a}}]\n"
        ))
        .unwrap();
        assert_eq!(r.caps, CapSet::of(ROOT_DEFAULT));
        assert_eq!(r.caps, r.bounding);
        let r = resolve(&format!(
            "{BASE}  containers: [{{name: a, securityContext: {{runAsUser: 0, capabilities: {{drop: [ALL], add: [net_admin, CAP_KILL]}}}}}}]\n"
        ))
        .unwrap();
        assert_eq!(r.caps, CapSet::of(&["NET_ADMIN", "KILL"]));
        // Non-root holds only what it adds; the bounding set is root's.
        let r = resolve(&format!(
            "{BASE}  containers: [{{name: a, securityContext: {{capabilities: {{add: [NET_BIND_SERVICE, NET_RAW], drop: [NET_RAW, CHOWN]}}}}}}]\n"
        ))
        .unwrap();
        assert_eq!(r.caps, CapSet::of(&["NET_BIND_SERVICE"]));
        assert!(!r.bounding.contains(cap_number("CHOWN").unwrap()));
        assert!(r.bounding.contains(cap_number("SETUID").unwrap()));
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |yaml: &str| resolve(&format!("{BASE}{yaml}")).unwrap_err();
        let e = err(
            "  securityContext: {runAsNonRoot: true}\n  containers: [{name: a, securityContext: {runAsUser: 0}}]\n",
        );
        assert!(
            e.starts_with("spec.containers[0].securityContext.runAsUser:"),
            "{e}"
        );
        assert!(e.contains("breaks non-root policy"), "{e}");
        let e = err(
            "  securityContext: {runAsUser: 0}\n  containers: [{name: a, securityContext: {runAsNonRoot: true}}]\n",
        );
        assert!(e.starts_with("spec.securityContext.runAsUser:"), "{e}");
        // The container's own runAsUser wins over the pod's root.
        assert!(resolve(&format!("{BASE}  securityContext: {{runAsUser: 0, runAsNonRoot: true}}\n  containers: [{{name: a, securityContext: {{runAsUser: 5}}}}]\n")).is_ok());
        let e = err("  containers: [{name: a, securityContext: {privileged: true}}]\n");
        assert!(
            e.starts_with("spec.containers[0].securityContext.privileged:"),
            "{e}"
        );
        let e =
            err("  containers: [{name: a, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]\n");
        assert!(
            e.starts_with("spec.containers[0].securityContext.capabilities.add[0]: SYS_ADMIN"),
            "{e}"
        );
        let e = err("  containers: [{name: a, securityContext: {capabilities: {add: [ALL]}}}]\n");
        assert!(e.contains("capabilities.add[0]: ALL"), "{e}");
        let e = err("  containers: [{name: a, securityContext: {capabilities: {drop: [FLY]}}}]\n");
        assert!(
            e.contains("capabilities.drop[0]: unknown capability \"FLY\""),
            "{e}"
        );
        let e = err("  securityContext: {runAsGroup: -1}\n  containers: [{name: a}]\n");
        assert!(e.starts_with("spec.securityContext.runAsGroup: -1"), "{e}");
    }

    #[test]
    fn privilege_escalation_is_off_unless_allowed() {
        let r = resolve(&format!("{BASE}  containers: [{{name: a, securityContext: {{allowPrivilegeEscalation: true}}}}]\n")).unwrap();
        assert!(!r.no_new_privs);
        let r = resolve(&format!("{BASE}  containers: [{{name: a, securityContext: {{allowPrivilegeEscalation: false}}}}]\n")).unwrap();
        assert!(r.no_new_privs);
    }
}
