//! Every kubeadm ClusterConfiguration fixture × mode: snapshot of the outcome (notes, patch
//! diff, revert diff), plus the properties: additions only, the document still means what
//! it meant plus our entries, idempotence, and revert(patch(x)) == x byte for byte.

mod common;

use common::assert_additions_only;
use patch_apiserver::{
    Mode, PatchError, PatchOptions, Rotation, check_cluster_config, inspect_cluster_config,
    patch_cluster_config, revert_cluster_config, unified_diff,
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
            assert_eq!(check_cluster_config(&text, &o), Ok(false), "{name}");
            assert_eq!(check_cluster_config(&p.text, &o), Ok(true), "{name}");
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

// ---------------------------------------------------------------------------------------
// Generated ClusterConfigurations.

mod generated {
    use super::*;
    use proptest::prelude::*;

    /// Arguments a user may have; none of them is ours, none conflicts with ours.
    const ARG_POOL: &[(&str, &str)] = &[
        ("authorization-mode", "Node,RBAC"),
        ("v", "2"),
        ("profiling", "false"),
        ("feature-gates", "EphemeralContainers=true"),
        ("feature-gates", ""),
        ("runtime-config", "api/all=true"),
        ("runtime-config", ""),
        ("enable-admission-plugins", "NodeRestriction"),
        ("audit-log-format", "json"),
        (
            "encryption-provider-config",
            "/etc/kubernetes/enc/config.yaml",
        ),
    ];
    const VOLUME_POOL: &[(&str, &str, bool)] = &[
        ("enc", "/etc/kubernetes/enc", true),
        ("authn", "/etc/kubernetes/authn", false),
        ("var-lib", "/var/lib", true),
    ];
    const VERSIONS: &[&str] = &["v1.13.5", "v1.18.20", "v1.20.2", "v1.28.4", "stable-1"];

    #[derive(Debug, Clone, Copy)]
    enum Container {
        Absent,
        EmptyFlow,
        Flow,
        Block,
    }

    #[derive(Debug, Clone)]
    struct Gen {
        api: usize,
        version: usize,
        unit: usize,
        seq_indent: usize,
        crlf: bool,
        final_newline: bool,
        comments: bool,
        api_server: Container,
        args: Container,
        arg_picks: Vec<usize>,
        /// Per argument value: 0 plain where YAML allows, 1 single, 2 double quotes.
        quoting: Vec<u8>,
        volumes: Container,
        volume_picks: Vec<usize>,
        cert_sans: bool,
        api_server_last: bool,
        /// `---` before the document and `...` after it.
        markers: bool,
    }

    fn container() -> impl Strategy<Value = Container> {
        prop_oneof![
            Just(Container::Absent),
            Just(Container::EmptyFlow),
            Just(Container::Flow),
            Just(Container::Block),
        ]
    }

    fn gens() -> impl Strategy<Value = Gen> {
        (
            (
                0usize..4,
                0usize..VERSIONS.len(),
                prop_oneof![Just(2usize), Just(4)],
                prop_oneof![Just(0usize), Just(2)],
            ),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (
                container(),
                container(),
                proptest::collection::vec(0..ARG_POOL.len(), 0..5),
                proptest::collection::vec(0u8..3, 5),
            ),
            (
                container(),
                proptest::collection::vec(0..VOLUME_POOL.len(), 0..3),
                any::<bool>(),
                any::<bool>(),
            ),
            any::<bool>(),
        )
            .prop_map(
                |(
                    (api, version, unit, seq_indent),
                    (crlf, final_newline, comments),
                    (api_server, args, arg_picks, quoting),
                    (volumes, volume_picks, cert_sans, api_server_last),
                    markers,
                )| Gen {
                    api,
                    version,
                    unit,
                    seq_indent,
                    crlf,
                    final_newline,
                    comments,
                    api_server,
                    args,
                    arg_picks,
                    quoting,
                    volumes,
                    volume_picks,
                    cert_sans,
                    api_server_last,
                    markers,
                },
            )
    }

    fn scalar(v: &str, quoting: u8, flow: bool) -> String {
        let must_quote = v.is_empty()
            || v.bytes().all(|b| b.is_ascii_digit())
            || ["true", "false"].contains(&v)
            || (flow && v.contains(','));
        match quoting {
            0 if !must_quote => v.to_string(),
            1 => format!("'{v}'"),
            _ => format!("\"{v}\""),
        }
    }

    impl Gen {
        fn list_args(&self) -> bool {
            self.api == 3
        }

        fn picked_args(&self) -> Vec<(&'static str, &'static str)> {
            let mut out: Vec<(&str, &str)> = Vec::new();
            for &i in &self.arg_picks {
                let (n, v) = ARG_POOL[i];
                // A map has each name once; the list form allows repeats.
                if self.list_args() || !out.iter().any(|(m, _)| *m == n) {
                    out.push((n, v));
                }
            }
            out
        }

        fn picked_volumes(&self) -> Vec<(&'static str, &'static str, bool)> {
            let mut out: Vec<(&str, &str, bool)> = Vec::new();
            for &i in &self.volume_picks {
                if !out.iter().any(|v| v.0 == VOLUME_POOL[i].0) {
                    out.push(VOLUME_POOL[i]);
                }
            }
            out
        }

        /// The lines of `apiServer:` (its key included), or none.
        fn api_server_lines(&self) -> Vec<String> {
            let u = " ".repeat(self.unit);
            let s = " ".repeat(self.seq_indent);
            let args = self.picked_args();
            let vols = self.picked_volumes();
            let arg_flow = |(n, v): &(&str, &str), q: u8| {
                if self.list_args() {
                    format!("{{name: {n}, value: {}}}", scalar(v, q, true))
                } else {
                    format!("{n}: {}", scalar(v, q, true))
                }
            };
            let vol_flow = |(n, p, ro): &(&str, &str, bool)| {
                format!("{{name: {n}, hostPath: {p}, mountPath: {p}, readOnly: {ro}}}")
            };
            let mut entries: Vec<Vec<String>> = Vec::new();
            if self.cert_sans {
                entries.push(vec![format!("certSANs:"), format!("{s}- 10.0.0.1")]);
            }
            let (open, close) = if self.list_args() {
                ("[", "]")
            } else {
                ("{", "}")
            };
            match self.args {
                Container::Absent => {}
                Container::EmptyFlow => entries.push(vec![format!("extraArgs: {open}{close}")]),
                Container::Flow => {
                    let items: Vec<String> = args
                        .iter()
                        .enumerate()
                        .map(|(i, a)| arg_flow(a, self.quoting[i % 5]))
                        .collect();
                    entries.push(vec![format!(
                        "extraArgs: {open}{}{close}",
                        items.join(", ")
                    )]);
                }
                Container::Block if args.is_empty() => {}
                Container::Block => {
                    let mut lines = vec!["extraArgs:".to_string()];
                    for (i, (n, v)) in args.iter().enumerate() {
                        let v = scalar(v, self.quoting[i % 5], false);
                        if self.list_args() {
                            lines.push(format!("{s}- name: {n}"));
                            lines.push(format!("{s}  value: {v}"));
                        } else {
                            lines.push(format!("{u}{n}: {v}"));
                        }
                        if self.comments && i == 0 {
                            lines.push(format!("{u}# a comment among the arguments"));
                        }
                    }
                    entries.push(lines);
                }
            }
            match self.volumes {
                Container::Absent => {}
                Container::EmptyFlow => entries.push(vec!["extraVolumes: []".into()]),
                Container::Flow => {
                    let items: Vec<String> = vols.iter().map(vol_flow).collect();
                    entries.push(vec![format!("extraVolumes: [{}]", items.join(", "))]);
                }
                Container::Block if vols.is_empty() => {}
                Container::Block => {
                    let mut lines = vec!["extraVolumes:".to_string()];
                    for (n, p, ro) in &vols {
                        lines.push(format!("{s}- name: {n}"));
                        lines.push(format!("{s}  hostPath: {p}"));
                        lines.push(format!("{s}  mountPath: {p}"));
                        lines.push(format!("{s}  readOnly: {ro}"));
                    }
                    entries.push(lines);
                }
            }
            if self.api < 3 {
                entries.push(vec!["timeoutForControlPlane: 4m0s".into()]);
            }
            match self.api_server {
                Container::Absent => Vec::new(),
                _ if entries.is_empty() => vec!["apiServer: {}".into()],
                Container::EmptyFlow => vec!["apiServer: {}".into()],
                Container::Flow => {
                    // One flow mapping of the entries that are one line each.
                    let one: Vec<String> = entries
                        .iter()
                        .filter(|e| e.len() == 1)
                        .map(|e| e[0].clone())
                        .collect();
                    if one.is_empty() {
                        vec!["apiServer: {}".into()]
                    } else {
                        vec![format!("apiServer: {{{}}}", one.join(", "))]
                    }
                }
                Container::Block => {
                    let mut lines = vec!["apiServer:".to_string()];
                    if self.comments {
                        lines.push(format!("{u}# the API server"));
                    }
                    for e in entries {
                        for l in e {
                            lines.push(format!("{u}{l}"));
                        }
                    }
                    lines
                }
            }
        }

        fn render(&self) -> String {
            let u = " ".repeat(self.unit);
            let mut lines = Vec::new();
            if self.comments {
                lines.push("# generated".to_string());
            }
            if self.markers {
                lines.push("---".to_string());
            }
            let server = self.api_server_lines();
            if !self.api_server_last {
                lines.extend(server.iter().cloned());
            }
            lines.push(format!("apiVersion: kubeadm.k8s.io/v1beta{}", self.api + 1));
            lines.push("kind: ClusterConfiguration".into());
            lines.push(format!("kubernetesVersion: {}", VERSIONS[self.version]));
            lines.push("networking:".into());
            lines.push(format!("{u}serviceSubnet: 10.96.0.0/12"));
            if self.comments {
                lines.push(format!("{u}# trailing comment"));
            }
            if self.api_server_last {
                lines.extend(server);
            }
            if self.markers {
                lines.push("...".to_string());
            }
            let eol = if self.crlf { "\r\n" } else { "\n" };
            let mut text = lines.join(eol);
            if self.final_newline {
                text.push_str(eol);
            }
            text
        }
    }

    /// Pieces of YAML, valid or not, that texts are made of for the no-panic test.
    const PIECES: &[&str] = &[
        "apiVersion: kubeadm.k8s.io/v1beta2\n",
        "apiVersion: kubeadm.k8s.io/v1beta4\n",
        "kind: ClusterConfiguration\n",
        "apiServer:",
        " {}",
        " []",
        "\n  extraArgs:",
        "\n  extraVolumes:",
        "\n    a: b",
        "\n  - name: x",
        "\n    value: é",
        "\n  - {name: k8s-audit, hostPath: /x}",
        " [{name: v, value: \"2\"}]",
        " {feature-gates: A=true}",
        "\r\n",
        "\n",
        " # c",
        "'",
        "\"",
        ":",
        "- ",
        "\u{feff}",
        "€",
        "é",
        "\t",
        "---\n",
        "...\n",
        "&a ",
        "*a",
        "!t ",
        "? ",
        "|\n  x",
        "kubernetesVersion: v1.14.0\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever the text, an answer and no panic.
        #[test]
        fn no_text_makes_it_panic(pieces in proptest::collection::vec(0..PIECES.len(), 0..24), mode in 0usize..3) {
            let text: String = pieces.iter().map(|&i| PIECES[i]).collect();
            let o = opts(Mode::ALL[mode]);
            if let Ok(p) = patch_cluster_config(&text, &o) {
                let _ = revert_cluster_config(&p.text, &o);
            }
            let _ = revert_cluster_config(&text, &o);
            let _ = inspect_cluster_config(&text);
        }

        #[test]
        fn properties_hold_on_generated_cluster_configurations(g in gens()) {
            let text = g.render();
            serde_norway::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("generator wrote bad YAML: {e}\n{text}"));
            for mode in Mode::ALL {
                let o = opts(mode);
                let p = match patch_cluster_config(&text, &o) {
                    Ok(p) => p,
                    Err(e @ (PatchError::ModeRefused { .. } | PatchError::VersionUnknown { .. })) => {
                        prop_assert!(mode != Mode::Static, "{e}\n{text}");
                        continue;
                    }
                    Err(e) => panic!("{mode}: {e}\n{text}"),
                };
                prop_assert!(p.changed, "{mode}\n{text}");
                assert_additions_only(&text, &p.text);
                assert_meaning_kept(&text, &p.text);
                let again = patch_cluster_config(&p.text, &o).unwrap();
                prop_assert_eq!(&again.text, &p.text, "{} not idempotent:\n{}", mode, text);
                let back = revert_cluster_config(&p.text, &o).unwrap();
                prop_assert_eq!(&back.text, &text, "{} revert:\n{}", mode, p.text);
            }
        }
    }
}
