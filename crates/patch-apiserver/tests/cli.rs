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
    let text = fixture("kubeadm-v1.28.yaml");
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
    let o = run(&["--diff", "-"], Some(&fixture("kubeadm-v1.28.yaml")));
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
    let text = fixture("kubeadm-v1.28.yaml");
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
    std::fs::write(&good, fixture("kubeadm-v1.28.yaml")).unwrap();
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
        fixture("kubeadm-v1.28.yaml")
    );
}

#[test]
fn help_has_examples() {
    let o = run(&["--help"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Examples:"));
    assert!(stdout(&o).contains("--in-place"));
}
