//! Which command-line words are ours: the one rule that `revert` removes by, and that
//! callers use to tell whether our flags are present or gone.

use crate::PatchOptions;
use crate::flags::{self, FlagSpec, Want, split_flag};
use crate::patch::entries;

/// The spec of ours that `word` matches: its name and exactly the value some mode writes
/// with these options (`specs` from [`flags::all_specs`]), or, for a list flag, an entry
/// that is ours.
pub(crate) fn claim<'s>(word: &str, specs: &'s [FlagSpec]) -> Option<&'s FlagSpec> {
    let (name, value) = split_flag(word)?;
    specs.iter().find(|s| {
        s.name == name
            && match &s.want {
                Want::Value(v) => value == Some(v.as_str()),
                Want::Switch => matches!(value, None | Some("true")),
                Want::Entry { key, value: ours } => {
                    value.is_some_and(|l| entries(l).iter().any(|(k, v)| k == key && v == ours))
                }
            }
    })
}

/// Whether `arg`, one word of the API server's command line, is ours: a flag that some
/// mode writes with these options, with exactly the value it writes (the log rotation
/// flags only with the values of `opts.rotation`), or a `--feature-gates`/
/// `--runtime-config` list that holds the entry we add.
///
/// This is [`revert`](crate::revert)'s rule: it removes such a flag (from a list flag, our
/// entry only). A flag the user set by hand to our value cannot be told apart and counts
/// as ours. Use [`our_flags`] for a whole command line: there the rotation flags go with
/// our `--audit-log-path` whatever their values, and words after `--` are no flags.
pub fn is_our_flag(arg: &str, opts: &PatchOptions) -> bool {
    claim(arg, &flags::all_specs(opts)).is_some()
}

/// The words of a command line (the API server's arguments, as
/// [`Inspection::apiserver_args`](crate::Inspection::apiserver_args) has them) that are
/// ours, in order: those of [`is_our_flag`], and the log rotation flags when our
/// `--audit-log-path` is among them, as [`revert`](crate::revert) removes them together.
/// Words after a `--` are arguments, not flags, and never ours. Empty after a complete
/// revert.
pub fn our_flags<'a, S: AsRef<str>>(args: &'a [S], opts: &PatchOptions) -> Vec<&'a str> {
    let specs = flags::all_specs(opts);
    let options: Vec<&str> = args
        .iter()
        .map(AsRef::as_ref)
        .take_while(|a| *a != "--")
        .collect();
    let log = options
        .iter()
        .any(|a| claim(a, &specs).is_some_and(|s| s.name == flags::LOG_PATH));
    options
        .into_iter()
        .filter(|a| {
            claim(a, &specs).is_some()
                || (log && split_flag(a).is_some_and(|(n, _)| flags::ROTATION_FLAGS.contains(&n)))
        })
        .collect()
}

/// Whether `arg` configures auditing at all, whoever wrote it: any `--audit-*` flag, a
/// `--feature-gates` list with a `DynamicAuditing` entry, or a `--runtime-config` list
/// with an `auditregistration.k8s.io` entry. For showing the audit configuration a
/// manifest has; [`is_our_flag`] says which of it is ours.
pub fn is_audit_related(arg: &str) -> bool {
    let Some((name, value)) = split_flag(arg) else {
        return false;
    };
    let has_entry =
        |want: fn(&str) -> bool| value.is_some_and(|l| entries(l).iter().any(|(k, _)| want(k)));
    name.starts_with("--audit-")
        || (name == flags::FEATURE_GATES && has_entry(|k| k == "DynamicAuditing"))
        || (name == flags::RUNTIME_CONFIG
            && has_entry(|k| {
                k == "auditregistration.k8s.io" || k.starts_with("auditregistration.k8s.io/")
            }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, Rotation, audit_flags, inspect, patch, revert};

    #[test]
    fn every_flag_a_mode_writes_is_ours_and_nothing_else() {
        let mut o = PatchOptions::new(Mode::Static);
        o.rotation = Some(Rotation::CIS);
        o.batch_max_wait = "7s".into();
        for mode in Mode::ALL {
            let m = PatchOptions { mode, ..o.clone() };
            for f in audit_flags(&m, None) {
                // Whatever mode the caller names: revert removes what any mode wrote.
                assert!(is_our_flag(&f, &o), "{f}");
                assert!(is_audit_related(&f), "{f}");
            }
        }
        for (arg, ours) in [
            ("--audit-log-path=/var/lib/k8s_audit/audit.log", true),
            ("--audit-log-path=/var/log/audit.log", false),
            ("--audit-log-path", false),
            ("--audit-webhook-batch-max-wait=7s", true),
            ("--audit-webhook-batch-max-wait=5s", false),
            ("--audit-log-maxage=30", true),
            ("--audit-log-maxage=31", false),
            ("--audit-dynamic-configuration", true),
            ("--audit-dynamic-configuration=true", true),
            ("--audit-dynamic-configuration=false", false),
            ("--feature-gates=A=true,DynamicAuditing=true", true),
            ("--feature-gates=DynamicAuditing=false", false),
            ("--feature-gates=A=true", false),
            (
                "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
                true,
            ),
            (
                "--runtime-config=auditregistration.k8s.io/v1alpha1=false",
                false,
            ),
            ("--v=2", false),
            ("/var/lib/k8s_audit/audit.log", false),
        ] {
            assert_eq!(is_our_flag(arg, &o), ours, "{arg}");
        }
        // Another audit directory makes other paths ours.
        let mut other = PatchOptions::new(Mode::Static);
        other.audit_dir = "/srv/audit".into();
        assert!(is_our_flag("--audit-log-path=/srv/audit/audit.log", &other));
        assert!(!is_our_flag(
            "--audit-log-path=/var/lib/k8s_audit/audit.log",
            &other
        ));
    }

    #[test]
    fn audit_related_means_any_audit_configuration() {
        for (arg, related) in [
            ("--audit-log-path=-", true),
            ("--audit-policy-file=/etc/k/p.yaml", true),
            ("--audit-log-format=json", true),
            ("--feature-gates=DynamicAuditing=false", true),
            ("--feature-gates=A=true,DynamicAuditing=true", true),
            ("--feature-gates=NotDynamicAuditing=true", false),
            (
                "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
                true,
            ),
            ("--runtime-config=auditregistration.k8s.io=true", true),
            ("--runtime-config=api/all=true", false),
            ("--v=2", false),
            ("--auditing", false),
            ("audit", false),
        ] {
            assert_eq!(is_audit_related(arg), related, "{arg}");
        }
    }

    /// `our_flags` agrees with `revert`: what it names is what revert takes away, and after
    /// revert it names nothing.
    #[test]
    fn our_flags_is_what_revert_removes() {
        let text = "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.16.0\n    command:\n    - kube-apiserver\n    - --feature-gates=A=true\n    - --audit-log-maxsize=5\n    - --\n    - --audit-log-path=/x\n";
        let o = PatchOptions::new(Mode::Static);
        for mode in Mode::ALL {
            let p = PatchOptions { mode, ..o.clone() };
            let patched = patch(text, &p).unwrap().text;
            let args = inspect(&patched).unwrap().apiserver_args;
            let ours = our_flags(&args, &o);
            let mut want: Vec<String> = audit_flags(&p, None)
                .into_iter()
                .filter(|f| !f.starts_with("--feature-gates"))
                .collect();
            if mode.logs() {
                want.push("--audit-log-maxsize=5".into());
            }
            if mode.dynamic() {
                want.push("--feature-gates=A=true,DynamicAuditing=true".into());
            }
            let mut got: Vec<String> = ours.iter().map(|s| s.to_string()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{mode}");
            let back = revert(&patched, &o).unwrap().text;
            assert!(our_flags(&inspect(&back).unwrap().apiserver_args, &o).is_empty());
        }
    }
}
