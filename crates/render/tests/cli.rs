//! The `render` binary's opt-in features, end to end.

mod common;

use std::fs;
use std::path::Path;

use common::{RENDER, Run, args, env, run, run_in};

fn render_in(dir: &Path, list: &[&str], env: &[(String, Vec<u8>)], stdin: &str) -> Run {
    run_in(dir, RENDER, &args(list), env, stdin.as_bytes())
}

const TEMPLATE: &str = "\
apiVersion: v1
clusters:
- cluster:
    server: http://$FALCO_SERVICE_CLUSTERIP:${FALCO_PORT}/k8s_audit
  name: $CLUSTER_NAME
";

#[test]
fn strict_reports_every_missing_variable_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = render_in(
        dir.path(),
        &["--strict"],
        &env(&[("CLUSTER_NAME", b"")]),
        TEMPLATE,
    );
    assert_eq!(out.outcome.status, 1);
    assert!(out.outcome.stdout.is_empty(), "{:?}", out.outcome.stdout);
    insta::assert_snapshot!(out.stderr);

    // --no-unset is the same option; --no-empty also rejects the empty CLUSTER_NAME.
    let same = render_in(
        dir.path(),
        &["--no-unset"],
        &env(&[("CLUSTER_NAME", b"")]),
        TEMPLATE,
    );
    assert_eq!(same, out);
    let out = render_in(
        dir.path(),
        &["--no-empty"],
        &env(&[("CLUSTER_NAME", b"")]),
        TEMPLATE,
    );
    assert_eq!(out.outcome.status, 1);
    assert!(out.outcome.stdout.is_empty());
    insta::assert_snapshot!("no_empty", out.stderr);
}

#[test]
fn strict_passes_when_everything_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let vars = env(&[
        ("FALCO_SERVICE_CLUSTERIP", b"10.96.0.7"),
        ("FALCO_PORT", b"8765"),
        ("CLUSTER_NAME", b"falco"),
    ]);
    let out = render_in(dir.path(), &["--strict", "--no-empty"], &vars, TEMPLATE);
    assert_eq!(out.outcome.status, 0, "{}", out.stderr);
    assert_eq!(
        String::from_utf8(out.outcome.stdout).unwrap(),
        TEMPLATE
            .replace("$FALCO_SERVICE_CLUSTERIP", "10.96.0.7")
            .replace("${FALCO_PORT}", "8765")
            .replace("$CLUSTER_NAME", "falco")
    );
}

#[test]
fn input_file_names_itself_in_messages_and_output_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("webhook.yaml.in"), TEMPLATE).unwrap();
    fs::write(dir.path().join("webhook.yaml"), "previous\n").unwrap();
    let list = ["--strict", "-i", "webhook.yaml.in", "-o", "webhook.yaml"];

    let out = render_in(dir.path(), &list, &[], "");
    assert_eq!(out.outcome.status, 1);
    insta::assert_snapshot!(out.stderr);
    assert_eq!(
        fs::read_to_string(dir.path().join("webhook.yaml")).unwrap(),
        "previous\n"
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "a temporary file was left behind: {names:?}"
    );

    let vars = env(&[
        ("FALCO_SERVICE_CLUSTERIP", b"10.96.0.7"),
        ("FALCO_PORT", b"9765"),
        ("CLUSTER_NAME", b"falco"),
    ]);
    let out = render_in(dir.path(), &list, &vars, "");
    assert_eq!(out.outcome.status, 0, "{}", out.stderr);
    assert!(out.outcome.stdout.is_empty());
    let written = fs::read_to_string(dir.path().join("webhook.yaml")).unwrap();
    assert!(
        written.contains("server: http://10.96.0.7:9765/k8s_audit\n"),
        "{written}"
    );
}

#[test]
fn env_files_and_set_override_the_environment_in_order() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("a.env"),
        "# cluster\nA=from-a\nB=from-a\nC='from a'\n",
    )
    .unwrap();
    fs::write(dir.path().join("b.env"), "export B=from-b\n").unwrap();
    let out = render_in(
        dir.path(),
        &[
            "--env-file",
            "a.env",
            "--env-file",
            "b.env",
            "--set",
            "C=from-set",
            "--set",
            "D=x=y",
        ],
        &env(&[("A", b"env"), ("B", b"env"), ("C", b"env"), ("E", b"env")]),
        "$A $B $C $D $E",
    );
    assert_eq!(out.outcome.status, 0, "{}", out.stderr);
    assert_eq!(out.outcome.stdout, b"from-a from-b from-set x=y env");
}

#[test]
fn bad_env_file_and_bad_set_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.env"), "A=1\nB 2\n").unwrap();
    let out = render_in(dir.path(), &["--env-file", "bad.env"], &[], "$A");
    assert_eq!(out.outcome.status, 1);
    assert!(out.outcome.stdout.is_empty());
    insta::assert_snapshot!("bad_env_file", out.stderr);

    let out = render_in(dir.path(), &["--env-file", "missing.env"], &[], "$A");
    assert_eq!(out.outcome.status, 1);
    assert!(
        out.stderr
            .starts_with("render: cannot read env file missing.env: "),
        "{}",
        out.stderr
    );

    let out = render_in(dir.path(), &["--set", "1A=x"], &[], "$A");
    assert_eq!(out.outcome.status, 1);
    assert!(
        out.stderr.contains("expected a variable name"),
        "{}",
        out.stderr
    );

    let out = render_in(dir.path(), &["-i", "nope.in"], &[], "");
    assert_eq!(out.outcome.status, 1);
    assert!(
        out.stderr.starts_with("render: cannot open nope.in: "),
        "{}",
        out.stderr
    );
}

#[test]
fn defaults_follow_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let template = "${PORT:-8765} ${HOST:=falco} $HOST ${EMPTY-kept}|${EMPTY:-replaced}\n";
    let out = render_in(
        dir.path(),
        &["--defaults"],
        &env(&[("EMPTY", b"")]),
        template,
    );
    assert_eq!(out.outcome.status, 0, "{}", out.stderr);
    assert_eq!(out.outcome.stdout, b"8765 falco falco |replaced\n");

    let template =
        "ip: ${FALCO_SERVICE_CLUSTERIP:?run kubectl get svc falco first}\nport: ${PORT:?}\n";
    let out = render_in(dir.path(), &["--defaults"], &[], template);
    assert_eq!(out.outcome.status, 1);
    assert!(out.outcome.stdout.is_empty());
    insta::assert_snapshot!("required", out.stderr);

    // Without --defaults the operators stay as written, as in GNU.
    let out = render_in(dir.path(), &[], &[], "${PORT:-8765}");
    assert_eq!(out.outcome.stdout, b"${PORT:-8765}");
}

#[test]
fn help_and_version() {
    let out = run(RENDER, &args(&["--help"]), &[], b"");
    assert_eq!(out.outcome.status, 0);
    let help = String::from_utf8(out.outcome.stdout).unwrap();
    for needle in [
        "SHELL-FORMAT",
        "--strict",
        "--no-unset",
        "--env-file",
        "Examples:",
        "| kubectl apply -f -",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let out = run(RENDER, &args(&["-V"]), &[], b"");
    assert_eq!(out.outcome.status, 0);
    assert!(String::from_utf8_lossy(&out.outcome.stdout).starts_with("render "));
}
