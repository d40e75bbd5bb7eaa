//! Every fixture × mode: snapshot of the outcome (notes, diff, revert diff), plus the
//! properties (additions only, semantic equality, idempotence, revert) where it patches.

mod common;

use common::{assert_properties, fixture, opts};
use patch_apiserver::{Mode, inspect, patch, revert, unified_diff};

/// (fixture, whether it starts without any audit settings)
const FIXTURES: &[(&str, bool)] = &[
    ("minikube-v1.28.yaml", true),
    ("kubeadm-v1.11-amd64.yaml", true),
    ("kubeadm-v1.9-amd64.yaml", true),
    ("kubeadm-v1.15-flow-command.yaml", true),
    ("minikube-v1.18.yaml", true),
    ("kops-1.18-args-first.manifest", true),
    ("kops-v1.18.manifest", true),
    ("kops-go-runner.manifest", true),
    ("kops-legacy-shell-folded.manifest", true),
    ("shell-double-quoted.yaml", true),
    ("digest-image-literal-shell.yaml", true),
    ("rke2-args.yaml", true),
    ("args-no-command-name-first.yaml", true),
    ("gce-kube-up.json", true),
    ("mirror-pod-with-status.yaml", false),
    ("comments-everywhere.yaml", true),
    ("no-final-newline.yaml", true),
    ("existing-feature-gates.yaml", true),
    ("empty-runtime-config.yaml", true),
    ("audit-log-stdout.yaml", false),
    ("empty-flow-lists.yaml", true),
    ("empty-flow-lists-one-line.json", true),
    ("shell-positional-args.yaml", true),
    ("command-terminator.yaml", true),
    ("bom.yaml", true),
];

fn report(name: &str, mode: Mode) -> String {
    let text = fixture(name);
    let o = opts(mode);
    let info = inspect(&text).expect("fixtures are valid manifests");
    let mut out = format!(
        "shape: {:?}\nversion: {}\nmode: {mode}\n",
        info.shape,
        info.version.map_or("unknown".into(), |v| v.to_string())
    );
    match patch(&text, &o) {
        Err(e) => out.push_str(&format!("error: {}\n", e.located(name))),
        Ok(p) => {
            for n in &p.notes {
                out.push_str(&format!("note: {n}\n"));
            }
            out.push_str("--- patch diff ---\n");
            out.push_str(&unified_diff(&text, &p.text, name, "patched"));
            let back = revert(&p.text, &o).expect("revert of our own output");
            out.push_str("--- revert diff (against the original) ---\n");
            out.push_str(&unified_diff(&text, &back.text, name, "reverted"));
        }
    }
    out
}

#[test]
fn snapshots_per_fixture_and_mode() {
    for (name, _) in FIXTURES {
        for mode in Mode::ALL {
            let snap = format!(
                "{}__{}",
                name.replace(['.', '-'], "_"),
                mode.to_string().replace('+', "_")
            );
            insta::assert_snapshot!(snap, report(name, mode));
        }
    }
}

#[test]
fn properties_hold_on_every_fixture() {
    for (name, pristine) in FIXTURES {
        let text = fixture(name);
        for mode in Mode::ALL {
            if patch(&text, &opts(mode)).is_ok() {
                assert_properties(&text, &opts(mode), *pristine);
            }
        }
    }
}

#[test]
fn shapes_are_recognised() {
    use patch_apiserver::Shape::*;
    for (name, shape) in [
        ("minikube-v1.28.yaml", Command),
        ("kubeadm-v1.15-flow-command.yaml", Command),
        ("kops-1.18-args-first.manifest", Args),
        ("rke2-args.yaml", Args),
        ("args-no-command-name-first.yaml", Args),
        ("kops-go-runner.manifest", GoRunner),
        ("kops-legacy-shell-folded.manifest", Shell),
        ("shell-double-quoted.yaml", Shell),
        ("digest-image-literal-shell.yaml", Shell),
        ("gce-kube-up.json", Json),
        ("empty-flow-lists-one-line.json", Json),
        ("shell-positional-args.yaml", Shell),
        ("command-terminator.yaml", Command),
        ("bom.yaml", Command),
    ] {
        assert_eq!(inspect(&fixture(name)).unwrap().shape, shape, "{name}");
    }
}
