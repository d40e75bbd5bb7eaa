//! The kubelet stand-in around the real kube-apiserver: a manifest change restarts the server
//! with the manifest's audit flags and republishes the mirror pod with a new config.hash; a bad
//! flag value crash-loops it; the original manifest brings it back.

mod real;

use std::path::Path;
use std::time::Duration;

use testkit::apiserver::{ControlPlane, exclusive};
use testkit::kubelet::{Kubelet, KubeletOptions, KubeletState, manifest_path};

const NODE: &str = "sandbox-node";
const MIRROR: &str = "/api/v1/namespaces/kube-system/pods/kube-apiserver-sandbox-node";

/// Writes beside the target and renames, as the pipeline does, so the stand-in never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, path).expect("rename manifest");
}

/// The old script's edit, by hand: flags after `- kube-apiserver`, a mount and a hostPath volume.
fn with_audit(original: &str, extra_flag: &str) -> String {
    original
        .replacen(
            "    - kube-apiserver\n",
            &format!(
                "    - kube-apiserver\n    - --audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml\n    - --audit-log-path=/var/lib/k8s_audit/audit.log\n{extra_flag}"
            ),
            1,
        )
        .replacen("    volumeMounts:\n", "    volumeMounts:\n    - mountPath: /var/lib/k8s_audit/\n      name: k8s-audit\n", 1)
        .replacen("  volumes:\n", "  volumes:\n  - hostPath:\n      path: /var/lib/k8s_audit\n      type: DirectoryOrCreate\n    name: k8s-audit\n", 1)
}

async fn mirror_pod(kubelet: &Kubelet) -> serde_json::Value {
    let client = kubelet.plane().client().await.unwrap();
    real::call(&client, http::Method::GET, MIRROR, None).await
}

fn describe(state: &KubeletState) -> String {
    format!("{state:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_changes_restart_the_server_and_the_mirror_pod_follows() {
    let _one_at_a_time = exclusive().await;
    let root = tempfile::tempdir().expect("sandbox root");
    let manifest = manifest_path(root.path());
    std::fs::create_dir_all(manifest.parent().expect("manifests dir")).expect("mkdir");
    let original = real::render_fixture("fixtures/manifests/minikube-v1.28.yaml", &[]);
    replace(&manifest, &original);

    let options = KubeletOptions {
        root: root.path().to_owned(),
        manifest: manifest.clone(),
        node_name: NODE.to_owned(),
    };
    let kubelet = Kubelet::start(ControlPlane::start().unwrap(), options).unwrap();
    let first = kubelet
        .wait_until(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash.is_some()
        })
        .await
        .unwrap();
    assert_eq!(
        (first.starts, first.crash_restarts),
        (1, 0),
        "{}",
        describe(&first)
    );
    assert!(
        first.flags.is_empty(),
        "no audit flags in the original manifest: {:?}",
        first.flags
    );
    let pod = mirror_pod(&kubelet).await;
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["kubernetes.io/config.hash"],
        first.mirror_hash.clone().expect("hash").as_str()
    );
    assert_eq!(
        annotations["kubernetes.io/config.mirror"],
        annotations["kubernetes.io/config.hash"]
    );
    assert_eq!(pod["spec"]["nodeName"], NODE);

    // Enable audit the way the pipeline does: files under the hostPath, then the manifest.
    let audit_dir = root.path().join("var/lib/k8s_audit");
    std::fs::create_dir_all(&audit_dir).expect("mkdir audit dir");
    let policy = real::render_fixture(
        "crates/pipeline/assets/audit-policy.yaml.in",
        &[("AUDIT_API_VERSION", "audit.k8s.io/v1")],
    );
    std::fs::write(audit_dir.join("audit-policy.yaml"), policy).expect("write policy");
    replace(&manifest, &with_audit(&original, ""));
    let second = kubelet
        .wait_until(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash.is_some() && s.mirror_hash != first.mirror_hash
        })
        .await
        .unwrap();
    assert_eq!(
        (second.starts, second.crash_restarts),
        (2, 0),
        "{}",
        describe(&second)
    );
    assert_eq!(
        second.flags,
        [
            format!(
                "--audit-policy-file={}",
                audit_dir.join("audit-policy.yaml").display()
            ),
            format!("--audit-log-path={}", audit_dir.join("audit.log").display()),
        ]
    );
    let pod = mirror_pod(&kubelet).await;
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/config.hash"],
        second.mirror_hash.clone().expect("hash").as_str()
    );
    let command = pod["spec"]["containers"][0]["command"]
        .as_array()
        .expect("command list")
        .clone();
    assert!(
        command
            .iter()
            .any(|f| f == "--audit-policy-file=/var/lib/k8s_audit/audit-policy.yaml"),
        "{command:?}"
    );
    // The server really audits through the mapped hostPath: the stand-in's and our own requests
    // on the mirror pod are pods requests, logged at RequestResponse by the bundled policy.
    let audit_log = audit_dir.join("audit.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&audit_log)
        .unwrap_or_default()
        .contains("kube-apiserver-sandbox-node")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} lacks the mirror pod requests",
            audit_log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A bad value makes it exit at startup; the stand-in keeps restarting it, the mirror pod stays.
    replace(
        &manifest,
        &with_audit(&original, "    - --audit-webhook-batch-max-wait=5\n"),
    );
    let crashing = kubelet
        .wait_until(Duration::from_secs(30), |s| {
            s.crash_restarts >= 1 && s.last_exit.is_some_and(|e| e.code() == Some(1))
        })
        .await
        .unwrap();
    assert!(!crashing.ready, "{}", describe(&crashing));
    assert_eq!(
        crashing.mirror_hash, second.mirror_hash,
        "a server that never became ready publishes nothing"
    );
    assert!(
        kubelet.log_tail(50).contains("missing unit in duration"),
        "{}",
        kubelet.log_tail(20)
    );

    // The original bytes: back to the first hash and no audit flags.
    replace(&manifest, &original);
    let restored = kubelet
        .wait_until(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash == first.mirror_hash
        })
        .await
        .unwrap();
    assert!(restored.flags.is_empty(), "{}", describe(&restored));
}
