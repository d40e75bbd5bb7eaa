//! Specific rules from the issue: conflicts, merges, versions, mounts, revert.

mod common;

use common::{assert_properties, fixture, opts};
use patch_apiserver::{
    KubeVersion, Mode, Note, PatchError, PatchOptions, Rotation, audit_flags, check, inspect,
    patch, revert,
};

fn err(text: &str, o: &PatchOptions) -> String {
    patch(text, o).unwrap_err().located("m.yaml").to_string()
}

#[test]
fn audit_flags_are_exactly_the_documented_ones() {
    let v = |s: &str| s.parse::<KubeVersion>().unwrap();
    assert_eq!(
        audit_flags(&opts(Mode::Static), Some(&v("v1.20.0"))),
        [
            "--audit-log-path=/var/lib/k8s_audit/audit.log",
            "--audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml",
            "--audit-webhook-config-file=/var/lib/k8s_audit/webhook-config.yaml",
            "--audit-webhook-batch-max-wait=5s",
        ]
    );
    assert_eq!(
        audit_flags(&opts(Mode::Static), Some(&v("v1.9.0"))).len(),
        3
    );
    assert_eq!(
        audit_flags(&opts(Mode::Dynamic), Some(&v("v1.16.0"))),
        [
            "--audit-dynamic-configuration",
            "--feature-gates=DynamicAuditing=true",
            "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
        ]
    );
    let mut o = opts(Mode::DynamicLog);
    o.audit_dir = "/srv/audit/".into();
    o.rotation = Some(Rotation::CIS);
    assert_eq!(
        audit_flags(&o, None),
        [
            "--audit-log-path=/srv/audit/audit.log",
            "--audit-policy-file=/srv/audit/audit-policy.yaml",
            "--audit-log-maxage=30",
            "--audit-log-maxbackup=10",
            "--audit-log-maxsize=100",
            "--audit-dynamic-configuration",
            "--feature-gates=DynamicAuditing=true",
            "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
        ]
    );
}

#[test]
fn a_different_value_is_a_conflict_unless_forced() {
    let text = fixture("audit-log-stdout.yaml");
    assert_eq!(
        err(&text, &opts(Mode::Static)),
        "m.yaml:10:7: --audit-log-path is already set to \"-\", this tool would set \"/var/lib/k8s_audit/audit.log\"; pass --force to replace it"
    );
    assert_eq!(
        check(&text, &opts(Mode::Static))
            .unwrap_err()
            .position()
            .map(|p| p.line),
        Some(10)
    );
    let mut o = opts(Mode::Static);
    o.force = true;
    let out = patch(&text, &o).unwrap();
    assert!(out.text.contains(
        "    - --audit-log-path=/var/lib/k8s_audit/audit.log\n    - --audit-policy-file"
    ));
    assert!(!out.text.contains("--audit-log-path=-"));
    assert_eq!(
        out.text.matches("--audit-policy-file").count(),
        1,
        "the same value is left alone"
    );
    assert!(
        out.notes
            .iter()
            .any(|n| matches!(n, Note::Replaced { old, .. } if old == "-"))
    );
    assert!(out.notes.contains(&Note::AlreadyPresent {
        flag: "--audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml".into()
    }));
    assert_eq!(patch(&out.text, &o).unwrap().text, out.text);
}

#[test]
fn list_flags_merge_and_unmerge() {
    let text = fixture("existing-feature-gates.yaml");
    let o = opts(Mode::Dynamic);
    let out = assert_properties(&text, &o, true);
    assert!(out.contains(
        "- --feature-gates=EphemeralContainers=true,TTLAfterFinished=true,DynamicAuditing=true\n"
    ));
    assert_eq!(out.matches("--feature-gates").count(), 1);
    assert_eq!(out.matches("--runtime-config").count(), 1);
    // A conflicting entry names both values.
    let off = text.replace("TTLAfterFinished=true", "DynamicAuditing=false");
    assert_eq!(
        err(&off, &o),
        "m.yaml:11:7: --feature-gates is already set to \"DynamicAuditing=false\", this tool would set \"DynamicAuditing=true\"; pass --force to replace it"
    );
    let forced = patch(
        &off,
        &PatchOptions {
            force: true,
            ..o.clone()
        },
    )
    .unwrap();
    assert!(
        forced
            .text
            .contains("--feature-gates=EphemeralContainers=true,DynamicAuditing=true\n")
    );
}

#[test]
fn empty_runtime_config_takes_our_entry_and_revert_gives_it_back() {
    let text = fixture("empty-runtime-config.yaml");
    let o = opts(Mode::Dynamic);
    let out = assert_properties(&text, &o, true);
    // The API server skips the empty item; the comma keeps the original flag recoverable.
    assert!(out.contains("- --runtime-config=,auditregistration.k8s.io/v1alpha1=true\n"));
    assert_eq!(revert(&out, &o).unwrap().text, text);
    // A list flag holding nothing but our entry is ours, and goes whole.
    let whole = text.replace(
        "--runtime-config=\n",
        "--runtime-config=auditregistration.k8s.io/v1alpha1=true\n",
    );
    let back = revert(&whole, &o).unwrap();
    assert_eq!(back.text, text.replace("    - --runtime-config=\n", ""));
    assert!(back.notes.contains(&Note::EmptiedFlagRemoved {
        flag: "--runtime-config"
    }));
}

#[test]
fn versions_gate_the_modes() {
    let t = |image: &str| {
        fixture("kubeadm-v1.28.yaml").replace("registry.k8s.io/kube-apiserver:v1.28.3", image)
    };
    assert_eq!(
        err(
            &t("registry.k8s.io/kube-apiserver:v1.20.0"),
            &opts(Mode::Dynamic)
        ),
        "m.yaml: mode dynamic does not work with Kubernetes v1.20.0: DynamicAuditing and the AuditSink API were removed in 1.19, and the API server refuses to start with their flags; use --mode static"
    );
    assert_eq!(
        err(
            &t("k8s.gcr.io/kube-apiserver:v1.12.10"),
            &opts(Mode::DynamicLog)
        ),
        "m.yaml: mode dynamic+log does not work with Kubernetes v1.12.10: dynamic audit configuration (AuditSink) first appeared in 1.13; use --mode static"
    );
    assert_eq!(
        err(&t("k8s.gcr.io/kube-apiserver:v1.7.16"), &opts(Mode::Static)),
        "m.yaml: static mode needs Kubernetes 1.8 or newer (advanced auditing was alpha before), found v1.7.16"
    );
    let digest = t("registry.k8s.io/kube-apiserver@sha256:00");
    assert!(err(&digest, &opts(Mode::Dynamic)).contains("has no version tag; pass --kube-version"));
    let mut o = opts(Mode::Dynamic);
    o.kube_version = Some("1.18".parse().unwrap());
    assert!(patch(&digest, &o).unwrap().changed);
    // --kube-version wins over the tag, with a note.
    let out = patch(&t("registry.k8s.io/kube-apiserver:v1.28.3"), &o).unwrap();
    assert!(out.notes.contains(&Note::VersionOverride {
        image: "v1.28.3".parse().unwrap(),
        given: "v1.18.0".parse().unwrap()
    }));
    // Nothing written on refusal: the caller gets an error, not text.
    assert!(
        patch(
            &t("registry.k8s.io/kube-apiserver:v1.20.0"),
            &opts(Mode::Dynamic)
        )
        .is_err()
    );
}

#[test]
fn rotation_flags_are_written_and_reverted() {
    let text = fixture("kubeadm-v1.28.yaml");
    let mut o = opts(Mode::Static);
    o.rotation = Some(Rotation::CIS);
    let out = assert_properties(&text, &o, true);
    assert!(out.contains("- --audit-log-maxsize=100\n"));
    // Revert without rotation options still removes them with our log path.
    assert_eq!(revert(&out, &opts(Mode::Static)).unwrap().text, text);
}

#[test]
fn custom_audit_dir_and_batch_wait() {
    let text = fixture("rke2-args.yaml");
    let mut o = opts(Mode::Static);
    o.audit_dir = "/var/lib/rancher/audit".into();
    o.batch_max_wait = "1m30s".into();
    let out = assert_properties(&text, &o, true);
    assert!(out.contains("- --audit-webhook-batch-max-wait=1m30s\n"));
    assert!(out.contains("      path: /var/lib/rancher/audit\n"));
    o.audit_dir = "/var/lib/my audit".into();
    assert_eq!(
        err(&text, &o),
        "m.yaml: invalid --audit-dir \"/var/lib/my audit\": expected an absolute path of letters, digits and / . _ + - (no ..)"
    );
}

#[test]
fn volume_collisions_are_checked_by_name_and_by_path() {
    let text = fixture("bad/volume-name-taken.yaml");
    assert_eq!(
        err(&text, &opts(Mode::Static)),
        "m.yaml:13:5: volume name \"k8s-audit\" is already used for hostPath /srv/audit; expected it free for the audit directory /var/lib/k8s_audit"
    );
    // A mount at our path from a volume that is not a hostPath of it.
    let other = fixture("kubeadm-v1.28.yaml")
        .replace("mountPath: /etc/ssl/certs", "mountPath: /var/lib/k8s_audit");
    assert!(err(&other, &opts(Mode::Static)).starts_with(
        "m.yaml:79:7: the container already mounts volume \"ca-certs\" at /var/lib/k8s_audit"
    ));
    // The user's own (writable) hostPath mount of the directory is reused, not duplicated.
    let own = fixture("kubeadm-v1.28.yaml")
        .replace(
            "mountPath: /etc/ssl/certs\n      name: ca-certs\n      readOnly: true\n",
            "mountPath: /var/lib/k8s_audit\n      name: ca-certs\n",
        )
        .replace("path: /etc/ssl/certs", "path: /var/lib/k8s_audit");
    let out = patch(&own, &opts(Mode::Static)).unwrap();
    assert!(out.notes.contains(&Note::DirAlreadyMounted {
        volume: "ca-certs".into()
    }));
    assert!(!out.text.contains("k8s-audit"));
}

#[test]
fn inspect_reports_args_mounts_and_mode() {
    let text = fixture("kops-go-runner.manifest");
    let info = inspect(&text).unwrap();
    assert_eq!(info.version, Some("v1.26.7".parse().unwrap()));
    assert_eq!(
        info.apiserver_args.first().map(String::as_str),
        Some("--allow-privileged=true")
    );
    assert_eq!(
        info.apiserver_args.last().map(String::as_str),
        Some("--v=2")
    );
    assert_eq!(info.host_mounts.len(), 2);
    assert_eq!(info.patched, None);
    let out = patch(&text, &opts(Mode::Static)).unwrap().text;
    let after = inspect(&out).unwrap();
    assert_eq!(after.patched, Some(Mode::Static));
    assert!(
        after
            .host_mounts
            .iter()
            .any(|m| m.volume == "k8s-audit" && m.host_path == "/var/lib/k8s_audit")
    );
    let shell = inspect(&fixture("kops-legacy-shell-folded.manifest")).unwrap();
    assert_eq!(
        shell.apiserver_args.first().map(String::as_str),
        Some("--allow-privileged=true")
    );
    assert_eq!(
        shell.apiserver_args.last().map(String::as_str),
        Some("--v=2")
    );
}

#[test]
fn check_says_whether_patched() {
    let text = fixture("kubeadm-v1.28.yaml");
    let o = opts(Mode::Static);
    assert_eq!(check(&text, &o), Ok(false));
    let out = patch(&text, &o).unwrap().text;
    assert_eq!(check(&out, &o), Ok(true));
    assert!(matches!(
        check(&out, &opts(Mode::Dynamic)),
        Err(PatchError::ModeRefused { .. })
    ));
}

#[test]
fn switching_modes_adds_only_the_difference() {
    let text = fixture("minikube-v1.18.yaml");
    let dynamic = patch(&text, &opts(Mode::Dynamic)).unwrap().text;
    let both = patch(&dynamic, &opts(Mode::DynamicLog)).unwrap();
    assert_eq!(
        both.text.matches("--audit-dynamic-configuration").count(),
        1
    );
    assert_eq!(inspect(&both.text).unwrap().patched, Some(Mode::DynamicLog));
    // One revert removes what either mode added.
    assert_eq!(revert(&both.text, &opts(Mode::Static)).unwrap().text, text);
}

#[test]
fn crlf_files_stay_crlf() {
    for name in [
        "kubeadm-v1.28.yaml",
        "kops-legacy-shell-folded.manifest",
        "no-final-newline.yaml",
        "args-no-command-name-first.yaml",
    ] {
        let text = fixture(name).replace('\n', "\r\n");
        let out = assert_properties(&text, &opts(Mode::Static), true);
        assert_eq!(
            out.matches('\n').count(),
            out.matches("\r\n").count(),
            "{name}: a bare LF was written"
        );
    }
}

#[test]
fn revert_leaves_foreign_volumes_and_removes_dangling_mounts() {
    let text = fixture("kubeadm-v1.28.yaml");
    let o = opts(Mode::Static);
    let patched = patch(&text, &o).unwrap().text;
    // Our volume name with another path is not ours.
    let foreign = patched.replace(
        "      path: /var/lib/k8s_audit\n",
        "      path: /srv/other\n",
    );
    let out = revert(&foreign, &o).unwrap();
    assert!(out.text.contains("name: k8s-audit"));
    assert!(out.notes.contains(&Note::ForeignVolumeKept {
        path: "/srv/other".into()
    }));
    // Our mount whose volume was removed by hand goes too.
    let vol = "  - hostPath:\n      path: /var/lib/k8s_audit\n      type: DirectoryOrCreate\n    name: k8s-audit\n";
    assert!(patched.contains(vol));
    let dangling = patched.replace(vol, "");
    assert_eq!(revert(&dangling, &o).unwrap().text, text);
}

#[test]
fn the_audit_log_must_not_land_on_a_read_only_mount() {
    let text = fixture("kubeadm-v1.28.yaml");
    // Under the read-only mount of /var/lib/minikube/certs: the API server could not write
    // its log there. Dynamic mode writes no log, so it does not care.
    let inside = PatchOptions {
        audit_dir: "/var/lib/minikube/certs/audit".into(),
        ..opts(Mode::Static)
    };
    assert_eq!(
        err(&text, &inside),
        "m.yaml:85:7: the audit log /var/lib/minikube/certs/audit/audit.log would be on volume \"k8s-certs\", mounted read-only at /var/lib/minikube/certs; the API server could not write it (drop `readOnly: true` there, or choose another --audit-dir)"
    );
    let dynamic = PatchOptions {
        mode: Mode::Dynamic,
        kube_version: Some("v1.18.0".parse().unwrap()),
        ..inside.clone()
    };
    assert!(patch(&text, &dynamic).is_ok());
    // Our own mount, made read-only by hand, is refused the same way.
    let patched = patch(&text, &opts(Mode::Static)).unwrap().text;
    let ro = patched.replace(
        "    - mountPath: /var/lib/k8s_audit\n      name: k8s-audit\n",
        "    - mountPath: /var/lib/k8s_audit\n      name: k8s-audit\n      readOnly: yes\n",
    );
    assert_ne!(ro, patched);
    assert!(
        err(&ro, &opts(Mode::Static)).contains("mounted read-only at /var/lib/k8s_audit"),
        "{}",
        err(&ro, &opts(Mode::Static))
    );
    // A read-only mount further up does not matter: ours is deeper and writable.
    let above = text.replace(
        "    - mountPath: /etc/ssl/certs\n",
        "    - mountPath: /var\n      name: var\n      readOnly: true\n    - mountPath: /etc/ssl/certs\n",
    );
    assert!(patch(&above, &opts(Mode::Static)).is_ok());
}

/// `--flag value` as two words, as pflag reads it: the same value is left alone, another one
/// is named in the conflict, and --force rewrites it as one word (in lists and shell lines).
#[test]
fn a_flag_written_as_two_words_is_read_with_its_value() {
    let list = fixture("kubeadm-v1.28.yaml");
    let two = |value: &str| {
        list.replace(
            "    - --secure-port=8443\n",
            &format!("    - --secure-port=8443\n    - --audit-log-path\n    - {value}\n"),
        )
    };
    let o = opts(Mode::Static);
    let same = two("/var/lib/k8s_audit/audit.log");
    let out = patch(&same, &o).unwrap();
    assert!(
        !out.text.contains("--audit-log-path="),
        "left as it is:\n{}",
        out.text
    );
    assert!(out.notes.contains(&Note::AlreadyPresent {
        flag: "--audit-log-path=/var/lib/k8s_audit/audit.log".into()
    }));
    assert_eq!(patch(&out.text, &o).unwrap().text, out.text, "idempotent");

    let other = two("/var/log/audit.log");
    assert_eq!(
        err(&other, &o),
        "m.yaml:37:7: --audit-log-path is already set to \"/var/log/audit.log\", this tool would set \"/var/lib/k8s_audit/audit.log\"; pass --force to replace it"
    );
    let forced = patch(
        &other,
        &PatchOptions {
            force: true,
            ..o.clone()
        },
    )
    .unwrap();
    assert!(
        forced.text.contains(
            "    - --secure-port=8443\n    - --audit-log-path=/var/lib/k8s_audit/audit.log\n    - --service-account-issuer"
        ),
        "{}",
        forced.text
    );
    assert!(!forced.text.contains("/var/log/audit.log"));

    let shell = fixture("shell-double-quoted.yaml").replace(
        " --v=2 ",
        " --v=2 --audit-policy-file /etc/other/policy.yaml ",
    );
    assert!(
        err(&shell, &o)
            .contains("--audit-policy-file is already set to \"/etc/other/policy.yaml\"")
    );
    let forced = patch(&shell, &PatchOptions { force: true, ..o }).unwrap();
    assert!(
        forced.text.contains(
            " --v=2 --audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml --allow-privileged"
        ),
        "{}",
        forced.text
    );
}
