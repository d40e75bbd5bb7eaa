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

fn kind_of(path: &Path) -> fs::FileType {
    fs::symlink_metadata(path).unwrap().file_type()
}

fn is_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

#[test]
fn output_to_a_character_device_writes_through_it() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !is_root() {
        eprintln!("skipped: making a device node needs root");
        return;
    }
    // A node of /dev/null's own device (1:3), so that a regression cannot break the machine's.
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    let made = std::process::Command::new("mknod")
        .args([null.as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()])
        .status()
        .unwrap();
    assert!(made.success());
    let before = fs::metadata(&null).unwrap();
    for list in [&["-o", "null"][..], &["--strict", "-o", "null"]] {
        let out = render_in(dir.path(), list, &env(&[("A", b"a")]), "$A\n");
        assert_eq!(out.outcome.status, 0, "{list:?}: {}", out.stderr);
        let after = fs::metadata(&null).unwrap();
        assert!(
            after.file_type().is_char_device(),
            "{list:?} replaced the device"
        );
        assert_eq!(
            (after.ino(), after.rdev(), after.mode()),
            (before.ino(), before.rdev(), before.mode())
        );
    }
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing left beside it"
    );
    // A write error on a device is reported with its name.
    let out = render_in(dir.path(), &["-o", "/dev/full"], &[], "x");
    assert_eq!(out.outcome.status, 1);
    assert_eq!(
        out.stderr,
        "render: writing /dev/full: write error: No space left on device (os error 28)\n"
    );
}

#[test]
fn output_through_a_symlink_replaces_its_target_and_keeps_the_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    let target = dir.path().join("real/webhook.yaml");
    fs::write(&target, "old\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("real/webhook.yaml", dir.path().join("link.yaml")).unwrap();
    let out = render_in(
        dir.path(),
        &["-o", "link.yaml"],
        &env(&[("A", b"a")]),
        "$A\n",
    );
    assert_eq!(out.outcome.status, 0, "{}", out.stderr);
    assert!(kind_of(&dir.path().join("link.yaml")).is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap(), "a\n");
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "the target keeps its mode");
    assert_eq!(fs::read_dir(dir.path().join("real")).unwrap().count(), 1);
}

#[test]
fn output_to_a_dangling_symlink_or_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("nowhere/file", dir.path().join("link")).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let out = render_in(dir.path(), &["-o", "link"], &env(&[("A", b"a")]), "$A\n");
    assert_eq!(out.outcome.status, 1);
    assert_eq!(
        out.stderr,
        "render: cannot write link: it is a symbolic link to nowhere/file, which does not exist; refusing to create a file through it\n"
    );
    assert!(kind_of(&dir.path().join("link")).is_symlink());
    let out = render_in(dir.path(), &["-o", "sub"], &env(&[("A", b"a")]), "$A\n");
    assert_eq!(out.outcome.status, 1);
    assert_eq!(
        out.stderr,
        "render: cannot write sub: it is a directory, not a regular file\n"
    );
    assert!(kind_of(&dir.path().join("sub")).is_dir());
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["link", "sub"], "nothing was created");
    assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);
}

#[test]
fn output_to_a_fifo_writes_through_it_and_only_a_whole_render() {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for (list, vars, want_status, want) in [
        (&["-o", "fifo"][..], env(&[("A", b"a")]), 0, "before a\n"),
        (
            &["--strict", "-o", "fifo"],
            env(&[("A", b"a")]),
            0,
            "before a\n",
        ),
        // A failed render sends nothing, not the half before the problem.
        (&["--strict", "-o", "fifo"], Vec::new(), 1, ""),
    ] {
        // The read end is open before render runs, without blocking, so that render's open
        // does not wait and a FIFO wrongly replaced cannot hang the test: what render wrote
        // waits in the pipe (it is small), and the end of it is there once render is gone.
        let mut reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let out = render_in(dir.path(), list, &vars, "before $A\n");
        assert_eq!(out.outcome.status, want_status, "{list:?}: {}", out.stderr);
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, want, "{list:?}");
        assert!(kind_of(&fifo).is_fifo(), "{list:?} replaced the FIFO");
    }
}

#[test]
fn strict_buffers_its_output_in_an_unnamed_file_under_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let tmpdir = tmp.to_str().unwrap().as_bytes();
    let big = "$A\n".repeat(200_000);
    for (vars, status) in [(vec![("A", &b"a"[..])], 0), (vec![], 1)] {
        let mut vars = env(&vars);
        vars.push(("TMPDIR".into(), tmpdir.to_vec()));
        let out = render_in(dir.path(), &["--strict"], &vars, &big);
        assert_eq!(
            out.outcome.status,
            status,
            "{}",
            &out.stderr[..out.stderr.len().min(300)]
        );
        assert_eq!(
            out.outcome.stdout.len(),
            if status == 0 { 400_000 } else { 0 }
        );
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "the buffer is removed"
        );
    }
    let mut vars = env(&[("A", b"a")]);
    vars.push(("TMPDIR".into(), b"/nonexistent-tmp".to_vec()));
    let out = render_in(dir.path(), &["--strict"], &vars, "$A\n");
    assert_eq!(out.outcome.status, 1);
    assert!(out.outcome.stdout.is_empty());
    assert!(
        out.stderr.starts_with(
            "render: cannot buffer the output in a temporary file under /nonexistent-tmp: "
        ),
        "{}",
        out.stderr
    );
}
