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
        fixture("minikube-v1.28.yaml").replace("registry.k8s.io/kube-apiserver:v1.28.3", image)
    };
    assert_eq!(
        err(
            &t("registry.k8s.io/kube-apiserver:v1.20.0"),
            &opts(Mode::Dynamic)
        ),
        "m.yaml:43:12: mode dynamic does not work with Kubernetes v1.20.0: DynamicAuditing and the AuditSink API were removed in 1.19, and the API server refuses to start with their flags; use --mode static"
    );
    assert_eq!(
        err(
            &t("k8s.gcr.io/kube-apiserver:v1.12.10"),
            &opts(Mode::DynamicLog)
        ),
        "m.yaml:43:12: mode dynamic+log does not work with Kubernetes v1.12.10: dynamic audit configuration (AuditSink) first appeared in 1.13; use --mode static"
    );
    assert_eq!(
        err(&t("k8s.gcr.io/kube-apiserver:v1.7.16"), &opts(Mode::Static)),
        "m.yaml:43:12: static mode needs Kubernetes 1.8 or newer (advanced auditing was alpha before), found v1.7.16"
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
    let text = fixture("minikube-v1.28.yaml");
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
        "m.yaml:31:7: invalid --audit-dir: \"/var/lib/my audit\" has a character other than letters, digits and / . _ + -; expected a directory of its own such as /var/lib/k8s_audit"
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
    let other = fixture("minikube-v1.28.yaml")
        .replace("mountPath: /etc/ssl/certs", "mountPath: /var/lib/k8s_audit");
    assert!(err(&other, &opts(Mode::Static)).starts_with(
        "m.yaml:79:7: the container already mounts volume \"ca-certs\" at /var/lib/k8s_audit"
    ));
    // The user's own (writable) hostPath mount of the directory is reused, not duplicated.
    let own = fixture("minikube-v1.28.yaml")
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
    let text = fixture("minikube-v1.28.yaml");
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
        "minikube-v1.28.yaml",
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
    let text = fixture("minikube-v1.28.yaml");
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
    let text = fixture("minikube-v1.28.yaml");
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
    let list = fixture("minikube-v1.28.yaml");
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

/// Issue 11.10: an empty flow list gets our item and revert gives back `[]`, not nothing.
#[test]
fn empty_flow_lists_come_back_empty() {
    for name in ["empty-flow-lists.yaml", "empty-flow-lists-one-line.json"] {
        let text = fixture(name);
        for mode in [Mode::Static, Mode::DynamicLog] {
            let out = assert_properties(&text, &opts(mode), true);
            assert!(!out.contains("[]"), "{name}: our items went in:\n{out}");
        }
    }
    // JSON without the keys: they are added, and revert takes them away again.
    let text = fixture("empty-flow-lists-one-line.json")
        .replace(",\"volumeMounts\":[]", "")
        .replace(",\"volumes\":[]", "");
    let out = assert_properties(&text, &opts(Mode::Static), true);
    assert!(out.contains("\"volumes\": [{"), "{out}");
}

/// Issue 11.10: every added line copies the line end of the line it follows; existing line
/// ends are never rewritten.
#[test]
fn mixed_line_ends_are_kept_line_by_line() {
    let lf = fixture("shell-double-quoted.yaml");
    let mut cases = Vec::new();
    // One CRLF line at each place, in an LF file; and one LF line in a CRLF file.
    let crlf = lf.replace('\n', "\r\n");
    for ((i, _), (j, _)) in lf.match_indices('\n').zip(crlf.match_indices("\r\n")) {
        let mut one = lf.clone();
        one.replace_range(i..=i, "\r\n");
        cases.push(one);
        let mut other = crlf.clone();
        other.replace_range(j..j + 2, "\n");
        cases.push(other);
    }
    cases.push(fixture("empty-flow-lists-one-line.json").replace("\n", "\r\n"));
    let multi_line_json = fixture("gce-kube-up.json").replace('\n', "\r\n");
    cases.push(multi_line_json);
    for text in cases {
        let out = assert_properties(&text, &opts(Mode::Static), true);
        let ends = |s: &str| (s.matches("\r\n").count(), s.matches('\n').count());
        let (crlf_in, all_in) = ends(&text);
        let (crlf_out, all_out) = ends(&out);
        // Added lines are LF or CRLF as their neighbour; never does an old LF become CRLF.
        assert!(crlf_out >= crlf_in && all_out - crlf_out >= all_in - crlf_in);
        if crlf_in == all_in {
            assert_eq!(crlf_out, all_out, "a bare LF in a CRLF file:\n{out:?}");
        }
    }
}

/// Issue 11.11: the args a shell wrapper passes on with "$@" are the API server's flags.
#[test]
fn shell_positional_args_are_read_as_flags() {
    let text = fixture("shell-positional-args.yaml");
    let o = opts(Mode::Static);
    let info = inspect(&text).unwrap();
    assert_eq!(info.shape, patch_apiserver::Shape::Shell);
    assert_eq!(
        info.apiserver_args,
        [
            "--allow-privileged=true",
            "--etcd-servers=http://127.0.0.1:2379",
            "--secure-port=443",
            "--feature-gates=EphemeralContainers=true",
        ]
    );
    assert_properties(&text, &o, true);
    // Our entry joins the user's --feature-gates in args, where the binary reads it.
    let dynamic = assert_properties(&text, &opts(Mode::Dynamic), true);
    assert!(
        dynamic.contains("    - --feature-gates=EphemeralContainers=true,DynamicAuditing=true\n"),
        "{dynamic}"
    );
    // A conflicting value in args is a conflict, reported where it is, and --check agrees.
    let conflicting = text.replace(
        "    - --secure-port=443\n",
        "    - --secure-port=443\n    - --audit-log-path=/var/log/audit.log\n",
    );
    let want = "m.yaml:21:7: --audit-log-path is already set to \"/var/log/audit.log\", this tool would set \"/var/lib/k8s_audit/audit.log\"; pass --force to replace it";
    assert_eq!(err(&conflicting, &o), want);
    assert!(check(&conflicting, &o).is_err());
    let forced = patch(
        &conflicting,
        &PatchOptions {
            force: true,
            ..o.clone()
        },
    )
    .unwrap();
    assert!(
        forced
            .text
            .contains("    - --audit-log-path=/var/lib/k8s_audit/audit.log\n")
    );
    assert_eq!(forced.text.matches("--audit-log-path").count(), 1);
    // The same value in args is ours already: not written twice.
    let same = text.replace(
        "    - --secure-port=443\n",
        "    - --secure-port=443\n    - --audit-log-path=/var/lib/k8s_audit/audit.log\n",
    );
    let out = patch(&same, &o).unwrap();
    assert_eq!(
        out.text.matches("--audit-log-path").count(),
        1,
        "{}",
        out.text
    );
    assert!(out.notes.contains(&Note::AlreadyPresent {
        flag: "--audit-log-path=/var/lib/k8s_audit/audit.log".into()
    }));
    // Every spelling of "all the positional parameters", from the command list as well;
    // single quotes make it a literal word, which reaches nothing.
    for (spelling, reads) in [
        ("$@", true),
        ("\\\"$@\\\"", true),
        ("${@}", true),
        ("\\\"${@}\\\"", true),
        ("$*", true),
        ("'$@'", false),
    ] {
        let t = format!(
            "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.16.15\n    command: [sh, -c, \"exec kube-apiserver {spelling}\", sh, --audit-log-path=-]\n"
        );
        let r = patch(&t, &o);
        assert_eq!(
            matches!(r, Err(PatchError::Conflict { .. })),
            reads,
            "{spelling}: {r:?}"
        );
    }
}

/// Issue 11.12: flags go before a `--` that ends the options, in every shape.
#[test]
fn flags_go_before_the_end_of_options() {
    let text = fixture("command-terminator.yaml");
    for mode in [Mode::Static, Mode::Dynamic] {
        let out = assert_properties(&text, &opts(mode), true);
        let after = out.split("\n    - --\n").nth(1).unwrap();
        assert!(!after.contains("- --"), "{out}");
    }
    let o = opts(Mode::Static);
    // The container's argv after its `--`.
    let tail = |out: &str| -> Vec<String> {
        let v = common::parse(out);
        let c = &v["spec"]["containers"][0];
        let argv: Vec<String> = ["command", "args"]
            .iter()
            .filter_map(|k| c.get(*k).and_then(|l| l.as_sequence()))
            .flatten()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        let t = argv.iter().position(|a| a == "--").expect("a terminator");
        argv[t + 1..].to_vec()
    };
    // Flow lists, first items, args after the binary, and JSON.
    for t in [
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [kube-apiserver, --v=2, --, x]\n",
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [\n      kube-apiserver,\n      --,\n      x\n    ]\n",
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [/usr/local/bin/kube-apiserver]\n    args:\n    - --\n    - x\n",
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [/usr/local/bin/kube-apiserver]\n    args: [--]\n",
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [/usr/local/bin/kube-apiserver]\n    args: [\n      --,\n      x\n    ]\n",
        "kind: Pod\r\nspec:\r\n  containers:\r\n  - name: kube-apiserver\r\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\r\n    command: [/usr/local/bin/kube-apiserver]\r\n    args:\r\n    - --\r\n",
        "{\"kind\": \"Pod\", \"spec\": {\"containers\": [{\"name\": \"kube-apiserver\", \"image\": \"k8s.gcr.io/kube-apiserver:v1.16.0\", \"command\": [\"kube-apiserver\", \"--\"]}]}}\n",
    ] {
        let out = assert_properties(t, &o, true);
        assert_eq!(tail(&out), tail(t), "after the terminator:\n{out}");
    }
    // After `--`, a word that looks like our flag is an argument, not a flag.
    let positional = "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [kube-apiserver, --, --audit-log-path=-]\n";
    let out = patch(positional, &o).unwrap();
    assert!(
        out.text
            .contains("[kube-apiserver, --audit-log-path=/var/lib/k8s_audit/audit.log,")
    );
    assert_eq!(inspect(positional).unwrap().patched, None);
}

/// Issue 11.13: a UTF-8 byte order mark is read past, kept, and does not shift columns.
#[test]
fn a_byte_order_mark_is_kept() {
    let text = fixture("bom.yaml");
    assert!(text.starts_with('\u{feff}'));
    for mode in [Mode::Static, Mode::Dynamic] {
        let out = assert_properties(&text, &opts(mode), true);
        assert!(out.starts_with("\u{feff}apiVersion: v1\n"));
    }
    assert_eq!(
        inspect(&text).unwrap().version,
        Some("v1.16.15".parse().unwrap())
    );
    let bad = text.replace("kind: Pod", "kind: Deployment");
    assert_eq!(
        err(&bad, &opts(Mode::Static)),
        "m.yaml:2:7: expected a Pod manifest, found kind \"Deployment\""
    );
    // On the first line, after the mark, columns count from the first visible character.
    let first = text.replace("apiVersion: v1", "apiVersion: v1: x");
    assert_eq!(
        err(&first, &opts(Mode::Static)),
        "m.yaml:1:15: not valid YAML: mapping values are not allowed in this context"
    );
    let crlf = text.replace('\n', "\r\n");
    assert_properties(&crlf, &opts(Mode::Static), true);
}

/// Neighbours of 11.10: every spelling of an empty flow list comes back as it was.
#[test]
fn empty_flow_lists_in_every_spelling_come_back() {
    let base = "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [/usr/local/bin/kube-apiserver]\n    args: ARGS\n    volumeMounts: MOUNTS\n  volumes: VOLUMES\n";
    for empty in ["[]", "[ ]", "[\n    ]", "[  ]"] {
        for key in ["ARGS", "MOUNTS", "VOLUMES"] {
            let text = base
                .replace(key, empty)
                .replace("ARGS", "[--v=2]")
                .replace("MOUNTS", "[{name: a, mountPath: /a}]")
                .replace("VOLUMES", "[{name: a, hostPath: {path: /a}}]");
            for mode in [Mode::Static, Mode::Dynamic] {
                assert_properties(&text, &opts(mode), true);
            }
        }
    }
    let json = "{\"kind\": \"Pod\", \"spec\": {\"containers\": [{\"name\": \"kube-apiserver\", \"image\": \"k8s.gcr.io/kube-apiserver:v1.16.0\", \"command\": [\"kube-apiserver\"], \"volumeMounts\": MOUNTS}], \"volumes\": VOLUMES}}";
    for empty in ["[]", "[ ]", "[\n]"] {
        for text in [
            json.replace("MOUNTS", empty).replace("VOLUMES", empty),
            json.replace("MOUNTS", empty)
                .replace(", \"volumes\": VOLUMES", ""),
            json.replace(", \"volumeMounts\": MOUNTS", "")
                .replace("VOLUMES", empty),
        ] {
            // Not assert_properties: its line rule does not know a key added after `]}]`.
            let o = opts(Mode::Static);
            let out = patch(&text, &o).unwrap().text;
            assert_eq!(patch(&out, &o).unwrap().text, out, "idempotent");
            assert_eq!(revert(&out, &o).unwrap().text, text);
            assert_eq!(common::parse(&out), common::expected_value(&text, &o));
        }
    }
}

/// Neighbours of 11.11: the script in `args`, `bash -ec`, and flags after $0 in the command.
#[test]
fn positional_args_reach_the_binary_from_every_list() {
    let o = opts(Mode::Static);
    for (command, args) in [
        (
            "[/bin/sh, -c]",
            "[\"exec kube-apiserver \\\"$@\\\"\", --, --audit-log-path=-]",
        ),
        (
            "[/bin/bash, -ec, \"exec kube-apiserver \\\"$@\\\"\", --]",
            "[--audit-log-path=-]",
        ),
        (
            "[sh, -c, \"exec kube-apiserver $*\", x, --audit-log-path=-]",
            "[--v=2]",
        ),
    ] {
        let t = format!(
            "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: {command}\n    args: {args}\n"
        );
        assert!(
            matches!(patch(&t, &o), Err(PatchError::Conflict { .. })),
            "{t}"
        );
        let fine = t.replace("--audit-log-path=-", "--v=3");
        assert_properties(&fine, &o, true);
    }
    // Not `sh -c`: a script file's "$@" is not ours to read, and stays a word.
    let t = "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n    command: [/bin/sh, /start.sh, \"exec kube-apiserver \\\"$@\\\"\"]\n    args: [--audit-log-path=-]\n";
    assert_eq!(inspect(t).unwrap().apiserver_args, ["$@"]);
}

/// Neighbour of 11.11: when revert takes the last item of a block list (the user's own flag
/// with our value, in the args "$@" hands on), the key goes too, not left as `args:` (null).
#[test]
fn revert_never_leaves_an_empty_block_list() {
    let o = opts(Mode::Static);
    for args in [
        "    args:\n    - --audit-log-path=/var/lib/k8s_audit/audit.log\n",
        "    args:\n    - --audit-log-path=/var/lib/k8s_audit/audit.log\n    - --audit-webhook-batch-max-wait=5s\n",
    ] {
        for command in [
            "    command:\n    - /bin/sh\n    - -c\n    - exec kube-apiserver \"$@\"\n    - --\n",
            "    command:\n    - kube-apiserver\n",
        ] {
            let text = format!(
                "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n{command}{args}"
            );
            let back = revert(&text, &o).unwrap().text;
            assert_eq!(
                back,
                format!(
                    "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.16.0\n{command}"
                )
            );
            assert!(inspect(&back).is_ok());
            assert_properties(&back, &o, true);
        }
    }
}
