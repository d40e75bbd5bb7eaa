//! Every kubeadm ClusterConfiguration fixture × mode: snapshot of the outcome (notes, patch
//! diff, revert diff), plus the properties: additions only, the document still means what
//! it meant plus our entries, idempotence, and revert(patch(x)) == x byte for byte.

mod common;

use common::assert_additions_only;
use patch_apiserver::{
    Mode, PatchError, PatchOptions, Rotation, inspect_cluster_config, patch_cluster_config,
    revert_cluster_config, unified_diff,
};
use serde_norway::Value;

const FIXTURES: &[&str] = &[
    "kubeadm-v1beta1.yaml",
    "v1beta1-feature-gates.yaml",
    "kubeadm-v1beta2.yaml",
    "v1beta2-extra-volumes-comments.yaml",
    "kubeadm-v1beta3.yaml",
    "v1beta3-no-apiserver.yaml",
    "v1beta3-crlf.yaml",
    "kubeadm-v1beta4.yaml",
    "v1beta4-extra-args-list.yaml",
    "v1beta4-flow-list.yaml",
];

fn fixture(name: &str) -> String {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kubeadm-config");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn opts(mode: Mode) -> PatchOptions {
    PatchOptions::new(mode)
}

fn report(name: &str, o: &PatchOptions) -> String {
    let text = fixture(name);
    let info = inspect_cluster_config(&text).expect("fixtures are ClusterConfigurations");
    let mut out = format!(
        "api: {:?}\nkubernetesVersion: {}\nmode: {}\n",
        info.api,
        info.kubernetes_version
            .map_or("unknown".into(), |v| v.to_string()),
        o.mode
    );
    match patch_cluster_config(&text, o) {
        Err(e) => out.push_str(&format!("error: {}\n", e.located(name))),
        Ok(p) => {
            for n in &p.notes {
                out.push_str(&format!("note: {n}\n"));
            }
            out.push_str("--- patch diff ---\n");
            out.push_str(&unified_diff(&text, &p.text, name, "patched"));
            let back = revert_cluster_config(&p.text, o).expect("revert of our own output");
            out.push_str("--- revert diff (against the original) ---\n");
            out.push_str(&unified_diff(&text, &back.text, name, "reverted"));
        }
    }
    out
}

#[test]
fn snapshots_per_fixture_and_mode() {
    for name in FIXTURES {
        for mode in Mode::ALL {
            let snap = format!(
                "{}__{}",
                name.replace(['.', '-'], "_"),
                mode.to_string().replace('+', "_")
            );
            insta::assert_snapshot!(snap, report(name, &opts(mode)));
        }
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping()?.get(Value::String(key.into()))
}

/// `apiServer.extraArgs` as (name, value) pairs in order, for either form.
fn args(doc: &Value) -> Vec<(String, String)> {
    let Some(a) = get(doc, "apiServer").and_then(|s| get(s, "extraArgs")) else {
        return Vec::new();
    };
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    match a {
        Value::Mapping(m) => m.iter().map(|(k, v)| (s(Some(k)), s(Some(v)))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| (s(get(i, "name")), s(get(i, "value"))))
            .collect(),
        _ => Vec::new(),
    }
}

fn volumes(doc: &Value) -> Vec<Value> {
    get(doc, "apiServer")
        .and_then(|s| get(s, "extraVolumes"))
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
}

/// Drops `apiServer.extraArgs` and `extraVolumes` (and an `apiServer` left empty), which
/// the checks compare on their own.
fn without_ours(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_mapping_mut() {
        let key = Value::String("apiServer".into());
        if let Some(Value::Mapping(s)) = m.get_mut(&key) {
            s.remove("extraArgs");
            s.remove("extraVolumes");
            if s.is_empty() {
                m.remove(&key);
            }
        }
    }
    d
}

/// The patched document means the original plus our entries: every other key equal,
/// every original argument kept (a list flag may have gained our entry at its end), every
/// original volume kept, the new arguments all `audit-*` or the two list flags, one new volume at
/// most, and it is ours.
#[track_caller]
fn assert_meaning_kept(orig: &str, patched: &str) {
    let a: Value = serde_norway::from_str(orig).unwrap();
    let b: Value = serde_norway::from_str(patched).unwrap();
    assert_eq!(without_ours(&a), without_ours(&b));
    let (old, new) = (args(&a), args(&b));
    assert!(new.len() >= old.len());
    for ((on, ov), (nn, nv)) in old.iter().zip(&new) {
        assert_eq!(on, nn);
        assert!(
            nv == ov || (nv.starts_with(ov.as_str()) && nv[ov.len()..].starts_with(',')),
            "{on}: {ov:?} became {nv:?}"
        );
    }
    for (n, _) in &new[old.len()..] {
        assert!(
            n.starts_with("audit-") || n == "feature-gates" || n == "runtime-config",
            "{n}"
        );
    }
    let (old, new) = (volumes(&a), volumes(&b));
    assert_eq!(new[..old.len()], old[..]);
    assert!(new.len() - old.len() <= 1);
    if let Some(v) = new.get(old.len()) {
        let want: Value = serde_norway::from_str(
            "{name: k8s-audit, hostPath: /var/lib/k8s_audit, mountPath: /var/lib/k8s_audit, pathType: DirectoryOrCreate, readOnly: false}",
        )
        .unwrap();
        assert_eq!(v, &want);
    }
}

#[test]
fn properties_hold_on_every_fixture() {
    for name in FIXTURES {
        let text = fixture(name);
        for mode in Mode::ALL {
            let o = opts(mode);
            let Ok(p) = patch_cluster_config(&text, &o) else {
                continue;
            };
            assert!(p.changed, "{name} {mode}");
            assert_additions_only(&text, &p.text);
            assert_meaning_kept(&text, &p.text);
            let again = patch_cluster_config(&p.text, &o).unwrap();
            assert_eq!(again.text, p.text, "{name} {mode}: not idempotent");
            assert!(!again.changed);
            let back = revert_cluster_config(&p.text, &o).unwrap();
            assert_eq!(back.text, text, "{name} {mode}: revert is not exact");
            // Reverting with any mode's options removes what any mode wrote.
            for other in Mode::ALL {
                assert_eq!(
                    revert_cluster_config(&p.text, &opts(other)).unwrap().text,
                    text
                );
            }
            assert!(!revert_cluster_config(&text, &o).unwrap().changed, "{name}");
        }
    }
}

/// The dynamic modes on every form of `extraArgs`: the version is forced to one they run
/// on, so the list flags are merged in the v1beta3 and v1beta4 fixtures too.
#[test]
fn list_flags_merge_in_every_form() {
    for name in FIXTURES {
        let text = fixture(name);
        for mode in [Mode::Dynamic, Mode::DynamicLog] {
            let mut o = opts(mode);
            o.kube_version = Some(patch_apiserver::KubeVersion::new(1, 18, 0));
            let p = patch_cluster_config(&text, &o).unwrap();
            assert_additions_only(&text, &p.text);
            assert_meaning_kept(&text, &p.text);
            let doc: Value = serde_norway::from_str(&p.text).unwrap();
            if std::env::var_os("SHOW").is_some() {
                eprintln!("== {name} {mode}\n{}", p.text);
            }
            let a = args(&doc);
            let has = |n: &str, entry: &str| {
                a.iter()
                    .filter(|(k, _)| k == n)
                    .any(|(_, v)| v.split(',').any(|e| e == entry))
            };
            assert!(
                has("feature-gates", "DynamicAuditing=true"),
                "{name}\n{}",
                p.text
            );
            assert!(
                has("runtime-config", "auditregistration.k8s.io/v1alpha1=true"),
                "{name}"
            );
            assert_eq!(
                a.iter().filter(|(k, _)| k == "feature-gates").count(),
                1.max(
                    args(&serde_norway::from_str(&text).unwrap())
                        .iter()
                        .filter(|(k, _)| k == "feature-gates")
                        .count()
                ),
                "{name}: a second feature-gates"
            );
            let again = patch_cluster_config(&p.text, &o).unwrap();
            assert_eq!(again.text, p.text, "{name} {mode}");
            assert_eq!(
                revert_cluster_config(&p.text, &o).unwrap().text,
                text,
                "{name} {mode}"
            );
        }
    }
    let merged = patch_cluster_config(&fixture("v1beta4-extra-args-list.yaml"), &{
        let mut o = opts(Mode::Dynamic);
        o.kube_version = Some(patch_apiserver::KubeVersion::new(1, 18, 0));
        o
    })
    .unwrap()
    .text;
    assert!(merged.contains("  - name: feature-gates\n    value: StructuredAuthenticationConfiguration=true,DynamicAuditing=true\n"), "{merged}");
}

/// The static mode works on every fixture (its versions are all ≥ 1.13).
#[test]
fn static_patches_every_fixture() {
    for name in FIXTURES {
        let p = patch_cluster_config(&fixture(name), &opts(Mode::Static));
        assert!(p.is_ok(), "{name}: {p:?}");
    }
}

#[test]
fn a_conflicting_value_is_refused_with_its_position_and_replaced_with_force() {
    let text = fixture("v1beta3-crlf.yaml").replace("    v: \"2\"", "    audit-log-maxage: \"7\"");
    let mut o = opts(Mode::Static);
    o.rotation = Some(Rotation::CIS);
    let e = patch_cluster_config(&text, &o).unwrap_err();
    assert!(matches!(e, PatchError::Conflict { .. }), "{e}");
    assert_eq!(
        e.located("v1beta3-crlf.yaml").to_string(),
        "v1beta3-crlf.yaml:9:23: --audit-log-maxage is already set to \"7\", this tool would set \"30\"; pass --force to replace it"
    );
    o.force = true;
    let p = patch_cluster_config(&text, &o).unwrap();
    assert!(
        p.text.contains("    audit-log-maxage: \"30\"\r\n"),
        "{}",
        p.text
    );
    assert!(
        p.text.contains("    audit-log-maxbackup: \"10\"\r\n"),
        "{}",
        p.text
    );
    // Nothing but our flags: revert removes the replaced value too (the rotation flags go
    // with our log path), as it does in a manifest.
    let back = revert_cluster_config(&p.text, &o).unwrap().text;
    assert!(!back.contains("audit-log-maxage"), "{back}");
}

#[test]
fn kinds_versions_and_shapes_that_are_not_ours_are_refused() {
    let o = opts(Mode::Static);
    let base = fixture("kubeadm-v1beta2.yaml");
    for (text, want) in [
        (
            base.replace("kind: ClusterConfiguration", "kind: InitConfiguration"),
            "15:7: expected kind ClusterConfiguration",
        ),
        (
            base.replace("kubeadm.k8s.io/v1beta2", "kubeadm.k8s.io/v1alpha3"),
            "5:13: expected apiVersion kubeadm.k8s.io/v1beta1, v1beta2, v1beta3 or v1beta4",
        ),
        (
            format!("{base}---\nkind: InitConfiguration\n"),
            "second YAML document",
        ),
        (
            base.replace("  timeoutForControlPlane: 4m0s\n", "  extraVolumes: {}\n"),
            "4:17: expected a list of host path mounts for extraVolumes, found a mapping",
        ),
        (
            base.replace("apiServer:\n", "apiServer: &a\n"),
            "1:12: unsupported YAML (an anchor)",
        ),
    ] {
        let e = patch_cluster_config(&text, &o).unwrap_err();
        assert!(e.to_string().contains(want), "{e}\n{text}");
        let e = revert_cluster_config(&text, &o).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn our_volume_name_or_path_taken_is_refused_and_an_existing_mount_is_reused() {
    let o = opts(Mode::Static);
    let with = |vol: &str| {
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n  extraVolumes:\n  - {vol}\n"
        )
    };
    let e = patch_cluster_config(
        &with("{name: k8s-audit, hostPath: /srv/x, mountPath: /srv/x}"),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, PatchError::VolumeNameTaken { .. }), "{e}");
    let e = patch_cluster_config(
        &with("{name: logs, hostPath: /srv/x, mountPath: /var/lib/k8s_audit/}"),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, PatchError::MountPathTaken { .. }), "{e}");
    let e = patch_cluster_config(
        &with("{name: logs, hostPath: /var/lib/k8s_audit, mountPath: /var/lib/k8s_audit, readOnly: true}"),
        &o,
    )
    .unwrap_err();
    assert!(matches!(e, PatchError::ReadOnlyMount { .. }), "{e}");
    let text = with("{name: logs, hostPath: /var/lib/k8s_audit, mountPath: /var/lib/k8s_audit}");
    let p = patch_cluster_config(&text, &o).unwrap();
    assert!(!p.text.contains("k8s-audit,"), "{}", p.text);
    assert_eq!(revert_cluster_config(&p.text, &o).unwrap().text, text);
}

#[test]
fn a_byte_order_mark_stays_in_front() {
    let text = format!("\u{feff}{}", fixture("kubeadm-v1beta2.yaml"));
    let o = opts(Mode::Static);
    let p = patch_cluster_config(&text, &o).unwrap();
    assert!(p.text.starts_with('\u{feff}'));
    assert_eq!(revert_cluster_config(&p.text, &o).unwrap().text, text);
}

/// The durable settings the other managers' warnings print (issue 15 item 5), per mode.
#[test]
fn durable_settings_for_the_other_managers() {
    use patch_apiserver::{AuditFile, DurableTarget, durable_settings};
    for mode in Mode::ALL {
        let mut o = opts(mode);
        o.rotation = Some(Rotation::CIS);
        let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";
        let mut out = String::new();
        for target in [
            DurableTarget::Minikube,
            DurableTarget::Kops,
            DurableTarget::Rke2,
        ] {
            out.push_str(&format!("=== {target:?}\n"));
            out.push_str(&durable_settings(
                target,
                &o,
                &[(AuditFile::Policy, policy)],
            ));
        }
        insta::assert_snapshot!(
            format!("durable_settings__{}", mode.to_string().replace('+', "_")),
            out
        );
    }
}
