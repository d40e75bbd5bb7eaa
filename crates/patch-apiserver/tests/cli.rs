//! The binary: exit codes, pipes, and --in-place atomicity and backups.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::fixture;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patch-apiserver"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patch-apiserver");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pipes_stdin_to_stdout() {
    let text = fixture("minikube-v1.28.yaml");
    let o = run(&["-"], Some(&text));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = patch_apiserver::patch(
        &text,
        &patch_apiserver::PatchOptions::new(patch_apiserver::Mode::Static),
    )
    .unwrap();
    assert_eq!(stdout(&o), want.text);
    // And back again through --revert.
    let back = run(&["--revert"], Some(&stdout(&o)));
    assert_eq!(stdout(&back), text);
}

#[test]
fn diff_prints_a_unified_diff() {
    let o = run(&["--diff", "-"], Some(&fixture("minikube-v1.28.yaml")));
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.starts_with("--- <stdin>\n+++ <stdin> (patched)\n@@ "),
        "{out}"
    );
    assert!(out.contains("\n+    - --audit-webhook-batch-max-wait=5s\n"));
}

#[test]
fn check_exits_0_1_2() {
    let text = fixture("minikube-v1.28.yaml");
    let o = run(&["--check", "-"], Some(&text));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    let patched = stdout(&run(&["-"], Some(&text)));
    assert_eq!(
        run(&["--check", "-"], Some(&patched)).status.code(),
        Some(0)
    );
    // A refused mode is an error, not "not patched".
    let o = run(&["--check", "--mode", "dynamic", "-"], Some(&text));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("<stdin>:43:12: mode dynamic does not work with Kubernetes v1.28.3"),
        "{}",
        stderr(&o)
    );
    // As is a conflict.
    let o = run(&["--check", "-"], Some(&fixture("audit-log-stdout.yaml")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<stdin>:10:7: --audit-log-path is already set to \"-\""));
}

#[test]
fn bad_input_exits_2_with_position() {
    let o = run(&["-"], Some("apiVersion: v1\nkind: Deployment\n"));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "patch-apiserver: <stdin>:2:7: expected a Pod manifest, found kind \"Deployment\"\n"
    );
    let o = run(&["--mode", "sideways", "-"], Some(""));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected static, dynamic or dynamic+log"));
    let o = run(&["/nonexistent/manifest.yaml"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("reading /nonexistent/manifest.yaml"));
}

#[test]
fn in_place_is_atomic_and_backs_up_outside_the_manifest_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    let backups = tmp.path().join("backup");
    std::fs::create_dir(&manifests).unwrap();
    let file = manifests.join("kube-apiserver.yaml");
    let text = fixture("kops-go-runner.manifest");
    std::fs::write(&file, &text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = file.to_str().unwrap();
    let b = backups.to_str().unwrap();

    let o = run(&["--in-place", f, "--backup-dir", b, "--cis"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("--audit-log-maxage=30"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Only the manifest is in its directory: no temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kube-apiserver.yaml"]);
    // One backup, private, holding the original, and its path printed.
    let saved: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(std::fs::read_to_string(&saved[0]).unwrap(), text);
    assert_eq!(
        std::fs::metadata(&saved[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&backups).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(stderr(&o).contains(&format!("backup of the original: {}", saved[0].display())));
    // The policy and webhook files do not exist here: warned about.
    assert!(stderr(&o).contains("/var/lib/k8s_audit/audit-policy.yaml does not exist yet"));

    // Again: nothing to do, nothing written, no new backup.
    let o = run(&["--in-place", f, "--backup-dir", b, "--cis"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("nothing to change; not written"));
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);

    // Revert restores the original bytes.
    let o = run(&["--revert", "--in-place", f, "--backup-dir", b], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn in_place_refuses_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("kube-apiserver.yaml");
    let text = fixture("audit-log-stdout.yaml");
    std::fs::write(&file, &text).unwrap();
    let f = file.to_str().unwrap();
    let backups = tmp.path().join("b");
    // A conflict: exit 2, the file untouched, no backup made.
    let o = run(
        &["--in-place", f, "--backup-dir", backups.to_str().unwrap()],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(!backups.exists());
    // A backup directory inside the manifests directory would become a second pod.
    let good = tmp.path().join("ok.yaml");
    std::fs::write(&good, fixture("minikube-v1.28.yaml")).unwrap();
    let inside = tmp.path().join("backups");
    let o = run(
        &[
            "--in-place",
            good.to_str().unwrap(),
            "--backup-dir",
            inside.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("where the kubelet would run the backup as a second pod"),
        "{}",
        stderr(&o)
    );
    assert!(
        !inside.exists(),
        "nothing may be created in the manifests directory"
    );
    assert_eq!(
        std::fs::read_to_string(&good).unwrap(),
        fixture("minikube-v1.28.yaml")
    );
}

#[test]
fn help_has_examples() {
    let o = run(&["--help"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Examples:"));
    assert!(stdout(&o).contains("--in-place"));
}

const BIN: &str = env!("CARGO_BIN_EXE_patch-apiserver");

fn is_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `sh -c SCRIPT patch-apiserver`: the script sees the binary as "$0".
fn shell(script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script, BIN])
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

#[test]
fn in_place_writes_through_a_symlink_and_keeps_owner_and_mode() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (manifests, real) = (tmp.path().join("manifests"), tmp.path().join("real"));
    std::fs::create_dir(&manifests).unwrap();
    std::fs::create_dir(&real).unwrap();
    let target = real.join("apiserver.yaml");
    let text = fixture("minikube-v1.28.yaml");
    std::fs::write(&target, &text).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let root = is_root();
    if root {
        std::os::unix::fs::chown(&target, Some(4321), Some(8765)).unwrap();
    }
    let link = manifests.join("kube-apiserver.yaml");
    std::os::unix::fs::symlink("../real/apiserver.yaml", &link).unwrap();
    let backups = tmp.path().join("backup");

    let o = run(
        &[
            "--in-place",
            link.to_str().unwrap(),
            "--backup-dir",
            backups.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The link is still a link, and its target has the patch.
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::Path::new("../real/apiserver.yaml")
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.contains("--audit-policy-file="), "{written}");
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    }
    assert_eq!(entries(&manifests), ["kube-apiserver.yaml"]);
    assert_eq!(entries(&real), ["apiserver.yaml"]);
    // The backup is named after the manifest as the kubelet sees it.
    let saved = entries(&backups);
    assert_eq!(saved.len(), 1);
    assert!(saved[0].starts_with("kube-apiserver.yaml.2"), "{saved:?}");
    assert!(saved[0].ends_with('Z'), "{saved:?}");
    assert_eq!(
        std::fs::read_to_string(backups.join(&saved[0])).unwrap(),
        text
    );
}

#[test]
fn in_place_refuses_what_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dangling = tmp.path().join("dangling.yaml");
    std::os::unix::fs::symlink("nowhere.yaml", &dangling).unwrap();
    let backups = tmp.path().join("backup");
    let b = backups.to_str().unwrap();
    for (path, message) in [
        (fifo.clone(), "it is a FIFO, not a regular file"),
        (
            "/dev/null".into(),
            "it is a character device, not a regular file",
        ),
        (
            tmp.path().to_path_buf(),
            "it is a directory, not a regular file",
        ),
        (dangling.clone(), "No such file or directory"),
    ] {
        // A FIFO must be refused, not read: the read would wait for a writer forever (so
        // the run is bounded, and a regression fails rather than hangs).
        let o = Command::new("timeout")
            .args([
                "20",
                BIN,
                "--in-place",
                path.to_str().unwrap(),
                "--backup-dir",
                b,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{path:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{path:?}: {}", stderr(&o));
        assert!(!backups.exists(), "{path:?}");
    }
    assert_eq!(entries(tmp.path()), ["dangling.yaml", "fifo.yaml"]);
}

/// Runs `script` in a private mount namespace (nothing leaks if the test dies), with "$0" the
/// binary and "$1" the test's directory.
fn in_mount_namespace(script: &str, dir: &std::path::Path) -> Option<Output> {
    if !is_root() {
        return None;
    }
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            script,
            BIN,
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(o)
}

#[test]
fn in_place_on_a_full_or_read_only_filesystem_leaves_no_backup() {
    for (case, prepare) in [
        (
            "full",
            // Fill the filesystem after the manifest is in place.
            r#"dd if=/dev/zero of="$1/manifests/fill" bs=1k 2>/dev/null || true"#,
        ),
        ("read-only", r#"mount -o remount,ro "$1/manifests""#),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("manifests")).unwrap();
        let text = fixture("minikube-v1.28.yaml");
        std::fs::write(tmp.path().join("original.yaml"), &text).unwrap();
        let script = format!(
            r#"mount -t tmpfs -o size=64k tmpfs "$1/manifests"
cp "$1/original.yaml" "$1/manifests/kube-apiserver.yaml"
{prepare}
set +e
"$0" --in-place "$1/manifests/kube-apiserver.yaml" --backup-dir "$1/backup"
echo "status $?"
cmp "$1/original.yaml" "$1/manifests/kube-apiserver.yaml" && echo unchanged
ls -a "$1/manifests""#
        );
        let Some(o) = in_mount_namespace(&script, tmp.path()) else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let (out, err) = (stdout(&o), stderr(&o));
        if err.contains("unshare failed") || err.contains("mount: ") {
            eprintln!("skipped: cannot mount here: {err}");
            return;
        }
        assert!(
            out.contains("status 2\nunchanged\n"),
            "{case}: {out}\n{err}"
        );
        let expected = if case == "full" {
            "No space left on device"
        } else {
            "Read-only file system"
        };
        assert!(err.contains(expected), "{case}: {err}");
        // No backup, and no temporary file beside the manifest.
        assert_eq!(
            entries(&tmp.path().join("backup")),
            Vec::<String>::new(),
            "{case}: {err}"
        );
        assert!(!out.contains(".kube-apiserver.yaml."), "{case}: {out}");
    }
}

#[test]
fn stdout_errors_are_errors() {
    let file = fixtures_path("minikube-v1.28.yaml");
    for (redirect, message) in [
        (">&-", "writing standard output: Bad file descriptor"),
        (
            ">/dev/full",
            "writing standard output: No space left on device",
        ),
    ] {
        let diff = format!("--diff {file}");
        for args in [file.as_str(), &diff, "--help", "--version"] {
            let o = shell(&format!(r#""$0" {args} {redirect}; echo "status $?" >&2"#));
            let err = stderr(&o);
            assert!(err.ends_with("status 2\n"), "{args} {redirect}: {err}");
            assert!(err.contains(message), "{args} {redirect}: {err}");
        }
    }
    // The reader of the pipe goes away: killed by SIGPIPE, as other filters are. The
    // manifest is larger than a pipe's buffer, so that the write cannot finish first.
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.yaml");
    let comment = format!("# {}\n", "x".repeat(200_000));
    std::fs::write(&big, fixture("minikube-v1.28.yaml") + &comment).unwrap();
    let o = shell(&format!(
        r#"exec 3>&1; ( "$0" {}; echo "status $?" >&3 ) | head -c 1 >/dev/null"#,
        big.display()
    ));
    assert_eq!(stdout(&o), "status 141\n", "{}", stderr(&o));
}

#[test]
fn a_closed_stdin_is_an_error_not_an_empty_manifest() {
    let o = shell(r#""$0" - <&-; echo "status $?" >&2"#);
    let err = stderr(&o);
    assert!(
        err.contains("reading standard input: Bad file descriptor"),
        "{err}"
    );
    assert!(err.ends_with("status 2\n"), "{err}");
}

#[test]
fn a_full_stderr_is_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("manifests")).unwrap();
    let file = tmp.path().join("manifests/kube-apiserver.yaml");
    std::fs::write(&file, fixture("minikube-v1.28.yaml")).unwrap();
    // Success prints the backup's path and warnings on stderr; failing to is no reason to panic.
    let o = shell(&format!(
        r#""$0" --in-place {} --backup-dir {} 2>/dev/full; echo "status $?""#,
        file.display(),
        tmp.path().join("b").display()
    ));
    assert_eq!(stdout(&o), "status 0\n", "{}", stderr(&o));
}

fn fixtures_path(name: &str) -> String {
    common::fixtures_dir().join(name).display().to_string()
}
