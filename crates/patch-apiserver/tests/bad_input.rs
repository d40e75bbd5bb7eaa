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
    fails(
        "\u{0}",
        "m.yaml:1:1: not valid YAML: control characters are not allowed",
    );
}
