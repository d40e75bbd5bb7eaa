//! Bad input: an exact message with file:line:column, and no output.

mod common;

use common::{fixture, opts};
use patch_apiserver::{Mode, inspect, patch, revert};

#[track_caller]
fn fails(text: &str, want: &str) {
    for result in [
        patch(text, &opts(Mode::Static)).map(|_| ()),
        revert(text, &opts(Mode::Static)).map(|_| ()),
        inspect(text).map(|_| ()),
    ] {
        let e = result.expect_err("bad input must fail");
        assert_eq!(e.located("m.yaml").to_string(), want);
    }
}

#[test]
fn bad_fixtures_fail_with_exact_messages() {
    for (name, want) in [
        (
            "bad/not-yaml.yaml",
            "m.yaml:6:1: not valid YAML: did not find expected ',' or '}', while parsing a flow mapping",
        ),
        (
            "bad/two-documents.yaml",
            "m.yaml:5:1: a second YAML document starts here; expected exactly one Pod manifest",
        ),
        (
            "bad/deployment.yaml",
            "m.yaml:2:7: expected a Pod manifest, found kind \"Deployment\"",
        ),
        (
            "bad/no-apiserver.yaml",
            "m.yaml:7:3: no kube-apiserver container; expected a container that runs the kube-apiserver binary or is named kube-apiserver",
        ),
        (
            "bad/unnamed-volume.yaml",
            "m.yaml:13:5: a volume without a name; expected every volume to have `name:`",
        ),
        (
            "bad/shell-without-binary.yaml",
            "m.yaml:10:7: the shell command does not run the kube-apiserver binary; expected `exec /path/to/kube-apiserver --flags ...`",
        ),
    ] {
        fails(&fixture(name), want);
    }
}

#[test]
fn structural_surprises_are_reported_where_they_are() {
    fails(
        "",
        "m.yaml:1:1: expected a Pod manifest, found an empty file",
    );
    fails(
        "- a\n- b\n",
        "m.yaml:1:1: expected a Pod manifest (a mapping), found a list",
    );
    fails(
        "kind: Pod\n",
        "m.yaml:1:1: expected a Pod with `spec:`, found a mapping",
    );
    fails(
        "kind: Pod\nspec:\n  containers: x\n",
        "m.yaml:3:15: expected a list of containers, found \"x\"",
    );
    fails(
        "kind: Pod\nspec:\n  containers:\n  - &a {name: x}\n",
        "m.yaml:4:5: unsupported YAML (an anchor); expected plain block or flow YAML as in Pod manifests",
    );
    fails(
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [a, kube-apiserver]\n  - name: b\n    command: [/usr/bin/kube-apiserver]\n",
        "m.yaml:6:5: a second container runs kube-apiserver (the first is at 4:5); expected one",
    );
    fails(
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [/hyperkube, apiserver]\n",
        "m.yaml:5:14: expected a command or args list that runs the kube-apiserver binary, found a list",
    );
    // Found by the fuzzer: an unterminated quote hides the binary (flags inserted after it
    // would land inside the quote), so the line is not one we can edit.
    fails(
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [k'ube-apiserver, --v=2]\n",
        "m.yaml:5:14: expected a command or args list that runs the kube-apiserver binary, found a list",
    );
    fails(
        "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [/bin/sh, -c, \"exec /usr/local/bin/kube-apiserver --a='b\"]\n",
        "m.yaml:5:28: the shell command does not run the kube-apiserver binary; expected `exec /path/to/kube-apiserver --flags ...`",
    );
    // A lone CR is a line break to YAML, and not one we can place lines by.
    fails(
        "kind: Pod\rspec: {}\n",
        "m.yaml:1:10: unsupported YAML (a line break that is a lone CR, not LF or CRLF); expected plain block or flow YAML as in Pod manifests",
    );
    fails(
        "\u{0}",
        "m.yaml:1:1: not valid YAML: control characters are not allowed",
    );
}

fn patch_err(text: &str, o: &patch_apiserver::PatchOptions) -> String {
    patch(text, o).unwrap_err().located("m.yaml").to_string()
}

/// Issue 11.15: refusals about the version point at the image, those about our options at
/// the command line the flags would join; only internal errors have no position.
#[test]
fn every_refusal_has_a_position() {
    let manifest = |image: &str| {
        format!(
            "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n{image}    command:\n    - /bin/sh\n    - -c\n    - exec /usr/local/bin/kube-apiserver --v=2\n"
        )
    };
    let tagged = |tag: &str| {
        manifest(&format!(
            "    image: registry.k8s.io/kube-apiserver:{tag}\n"
        ))
    };
    let dynamic = opts(Mode::Dynamic);
    for (text, o, want) in [
        (
            tagged("v1.20.0"),
            &dynamic,
            "m.yaml:5:12: mode dynamic does not work with Kubernetes v1.20.0",
        ),
        (
            tagged("v1.12.0"),
            &dynamic,
            "m.yaml:5:12: mode dynamic does not work with Kubernetes v1.12.0",
        ),
        (
            tagged("v1.7.0"),
            &opts(Mode::Static),
            "m.yaml:5:12: static mode needs Kubernetes 1.8",
        ),
        (
            tagged("latest"),
            &dynamic,
            "m.yaml:5:12: mode dynamic needs the Kubernetes version",
        ),
        // Without an image, the container is what the version is missing from.
        (
            manifest(""),
            &dynamic,
            "m.yaml:4:5: mode dynamic needs the Kubernetes version",
        ),
    ] {
        let e = patch_err(&text, o);
        assert!(e.starts_with(want), "{e}");
    }
    let text = tagged("v1.16.0");
    let mut o = opts(Mode::Static);
    o.batch_max_wait = "soon".into();
    assert_eq!(
        patch_err(&text, &o),
        "m.yaml:9:12: invalid --batch-max-wait \"soon\": expected a Go duration such as 5s, 500ms or 1m30s"
    );
    assert!(
        revert(&text, &o)
            .unwrap_err()
            .located("m.yaml")
            .to_string()
            .starts_with("m.yaml:9:12: ")
    );
    o = opts(Mode::Static);
    o.audit_dir = "/var/log".into();
    assert_eq!(
        patch_err(&text, &o),
        "m.yaml:9:12: invalid --audit-dir: \"/var/log\" is a system directory: it would be made root-only and mounted into the API server; expected a directory of its own such as /var/lib/k8s_audit"
    );
}

/// Issue 11.5: `patch` refuses an audit directory that is `/`, a system directory, or the
/// manifests directory or its family; `revert` still undoes what an older version wrote.
#[test]
fn dangerous_audit_dirs_are_refused_before_anything_is_written() {
    let text = fixture("shell-positional-args.yaml");
    for dir in [
        "/",
        "/var",
        "/var/log",
        "/etc",
        "/etc/kubernetes",
        "/etc/kubernetes/manifests",
        "/etc/kubernetes/manifests/audit",
        "/tmp",
        "/var/lib/k8s_audit/",
        "/var/lib//k8s_audit",
        "/var/lib/./k8s_audit",
    ] {
        for mode in Mode::ALL {
            let mut o = opts(mode);
            o.audit_dir = dir.into();
            o.kube_version = Some("v1.16.0".parse().unwrap());
            let e = patch(&text, &o).expect_err(dir);
            assert!(
                matches!(e, patch_apiserver::PatchError::AuditDir { .. }),
                "{dir}: {e}"
            );
            assert!(patch_apiserver::check(&text, &o).is_err());
            assert!(e.position().is_some());
        }
    }
    // What an older version wrote with `--audit-dir /var/log` still comes off.
    let old = text.replace(
        " \"$@\" 1>>",
        " --audit-log-path=/var/log/audit.log --audit-policy-file=/var/log/audit-policy.yaml \"$@\" 1>>",
    );
    let mut o = opts(Mode::DynamicLog);
    o.audit_dir = "/var/log".into();
    let back = revert(&old, &o).unwrap();
    assert_eq!(back.text, text);
}
