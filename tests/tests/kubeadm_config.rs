//! The proof that our ClusterConfiguration edit survives what erases a manifest edit: the real
//! kubeadm v1.20.2 (`cargo xtask apiserver build` builds it beside the API server) regenerates
//! the API server's manifest from the ClusterConfiguration kept in `kube-system/kubeadm-config`
//! on the real API server, as `kubeadm upgrade` and `kubeadm join --control-plane` do.
//!
//! The ConfigMap goes through `cluster` (read at its resourceVersion, written back at it) and
//! the text through `patch_apiserver::patch_cluster_config` / `revert_cluster_config`, the
//! calls `enable` and `disable` make. kubeadm 1.20 has no output-directory flag, so it runs
//! with `--rootfs` (a chroot) over a scratch directory. The regenerated manifest then runs the
//! real API server through the kubelet stand-in, and an audit event reaches the webhook.

mod real;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use audit_sink::{Collector, Config, Server};
use cluster::{Cluster, ClusterError, ClusterOptions};
use patch_apiserver::{
    HostMount, KubeVersion, Mode, PatchOptions, audit_flags, check, inspect, our_flags,
    patch_cluster_config, revert_cluster_config,
};
use testkit::apiserver::{ApiServer, ControlPlane, exclusive, kubeadm_path};
use testkit::kubelet::{Kubelet, KubeletOptions, manifest_path};

/// What `kubeadm init` 1.20 stores, written by hand from the v1beta2 types.
const FIXTURE: &str = "fixtures/kubeadm-config/kubeadm-v1beta2.yaml";

/// The node's own part of kubeadm's configuration, which the ConfigMap does not hold. With
/// an address and a CRI socket given, kubeadm looks at neither the network nor a runtime.
const INIT_CONFIGURATION: &str = "apiVersion: kubeadm.k8s.io/v1beta2\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.10\n  bindPort: 6443\nnodeRegistration:\n  name: node1\n  criSocket: /var/run/dockershim.sock\n";

fn kubeadm() -> PathBuf {
    let path = kubeadm_path().expect("HOME or XDG_CACHE_HOME is set");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask apiserver build` (it builds kubeadm beside kube-apiserver)",
        path.display()
    );
    path
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Lets the real kubeadm write the API server's manifest from `cluster_configuration`, inside
/// a scratch root, and returns the manifest.
fn regenerate(kubeadm: &Path, cluster_configuration: &str) -> String {
    let root = tempfile::tempdir().expect("scratch root");
    std::fs::create_dir(root.path().join("kubeadm")).expect("mkdir");
    // The node's document in the ClusterConfiguration's own API version.
    let api = patch_apiserver::inspect_cluster_config(cluster_configuration)
        .expect("a ClusterConfiguration")
        .api
        .api_version();
    let init = INIT_CONFIGURATION.replace("kubeadm.k8s.io/v1beta2", api);
    std::fs::write(
        root.path().join("kubeadm/config.yaml"),
        format!("{init}---\n{cluster_configuration}"),
    )
    .expect("write config");
    // `--rootfs` chroots before the config is read, so the config's path is inside the root.
    let mut command = if is_root() {
        Command::new(kubeadm)
    } else {
        // A user namespace grants the chroot to a user without root.
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user"]).arg(kubeadm);
        c
    };
    let output = command
        .args(["init", "phase", "control-plane", "apiserver"])
        .args(["--config", "/kubeadm/config.yaml", "--rootfs"])
        .arg(root.path())
        .output()
        .expect("run kubeadm");
    assert!(
        output.status.success(),
        "kubeadm failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(
        root.path()
            .join("etc/kubernetes/manifests/kube-apiserver.yaml"),
    )
    .expect("kubeadm wrote the manifest")
}

fn our_mount(manifest: &str) -> Option<HostMount> {
    inspect(manifest)
        .expect("kubeadm's manifest")
        .host_mounts
        .into_iter()
        .find(|m| m.volume == "k8s-audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_kubeadm_regenerates_our_flags_from_kubeadm_config_and_none_after_revert() {
    let kubeadm = kubeadm();
    let _one_at_a_time = exclusive().await;
    let original = real::render_fixture(FIXTURE, &[]);
    let opts = PatchOptions::new(Mode::Static);

    let server = ApiServer::start(&[]).await.unwrap();
    let options = ClusterOptions {
        kubeconfig: Some(server.plane().kubeconfig().to_path_buf()),
        context: None,
    };
    let cluster = Cluster::connect(&options).await.unwrap();
    assert_eq!(cluster.read_kubeadm_config().await.unwrap(), None);
    let client = server.plane().client().await.unwrap();
    real::call(
        &client,
        http::Method::POST,
        "/api/v1/namespaces/kube-system/configmaps",
        Some(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {
                "ClusterConfiguration": original,
                "ClusterStatus": "apiEndpoints:\n  node1:\n    advertiseAddress: 10.0.0.10\n    bindPort: 6443\napiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterStatus\n",
            },
        })),
    )
    .await;

    // enable: read at a version, edit, write back at that version.
    let read = cluster.read_kubeadm_config().await.unwrap().unwrap();
    assert_eq!(read.cluster_configuration, original);
    let patched = patch_cluster_config(&read.cluster_configuration, &opts).unwrap();
    assert!(patched.changed);
    let written_at = cluster
        .update_kubeadm_config(&patched.text, &read.resource_version)
        .await
        .unwrap();
    // A second writer holding the old version is refused, not silently overwriting.
    let stale = cluster
        .update_kubeadm_config(&original, &read.resource_version)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, ClusterError::KubeadmConfigConflict { .. }),
        "{stale:?}"
    );
    let stored = cluster.read_kubeadm_config().await.unwrap().unwrap();
    assert_eq!(stored.cluster_configuration, patched.text);
    assert_eq!(stored.resource_version, written_at);

    // What `kubeadm upgrade` would write from it.
    let before = regenerate(&kubeadm, &original);
    let manifest = regenerate(&kubeadm, &stored.cluster_configuration);
    let args = inspect(&manifest).unwrap().apiserver_args;
    let ours = audit_flags(&opts, Some(&KubeVersion::new(1, 20, 2)));
    assert_eq!(ours.len(), 4, "{ours:?}");
    for flag in &ours {
        assert!(args.contains(flag), "{flag} missing from\n{manifest}");
    }
    assert_eq!(
        our_mount(&manifest),
        Some(HostMount {
            volume: "k8s-audit".into(),
            host_path: "/var/lib/k8s_audit".into(),
            mount_path: "/var/lib/k8s_audit".into(),
        }),
        "{manifest}"
    );
    assert!(
        manifest.contains("    - mountPath: /var/lib/k8s_audit\n      name: k8s-audit\n"),
        "the mount is writable (no readOnly): {manifest}"
    );
    assert!(
        manifest.contains("      path: /var/lib/k8s_audit\n      type: DirectoryOrCreate\n"),
        "{manifest}"
    );
    // Nothing for the manifest editor to add: the two edits agree on what enabled means.
    assert_eq!(check(&manifest, &opts), Ok(true));
    // And nothing else changed: the other flags are kubeadm's, as before.
    let others: Vec<&String> = args.iter().filter(|a| !ours.contains(a)).collect();
    let before_args = inspect(&before).unwrap().apiserver_args;
    assert_eq!(others, before_args.iter().collect::<Vec<_>>());

    // disable: only our entries go, and the text is the original byte for byte.
    let now = cluster.read_kubeadm_config().await.unwrap().unwrap();
    let reverted = revert_cluster_config(&now.cluster_configuration, &opts).unwrap();
    assert_eq!(reverted.text, original);
    cluster
        .update_kubeadm_config(&reverted.text, &now.resource_version)
        .await
        .unwrap();
    let back = cluster.read_kubeadm_config().await.unwrap().unwrap();
    assert_eq!(back.cluster_configuration.as_bytes(), original.as_bytes());
    let after = regenerate(&kubeadm, &back.cluster_configuration);
    let after_args = inspect(&after).unwrap().apiserver_args;
    assert_eq!(our_flags(&after_args, &opts), Vec::<&str>::new());
    assert!(
        !after_args.iter().any(|a| a.starts_with("--audit-")),
        "{after}"
    );
    assert_eq!(our_mount(&after), None);
    assert!(!after.contains("k8s-audit"), "{after}");
    assert_eq!(after, before);
    drop(server);

    // The regenerated manifest runs: the real API server started from it (through the
    // kubelet stand-in, which passes the manifest's audit flags, paths mapped through the
    // pod's own volumes) delivers an event to the webhook.
    let collector = Collector::new();
    let sink = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Config::default(),
        collector.clone(),
    )
    .await
    .expect("bind audit-sink");
    let root = tempfile::tempdir().expect("node root");
    let audit_dir = root.path().join("var/lib/k8s_audit");
    std::fs::create_dir_all(&audit_dir).expect("mkdir audit dir");
    std::fs::write(
        audit_dir.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .expect("write policy");
    std::fs::write(
        audit_dir.join("webhook-config.yaml"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sink\n  cluster:\n    server: \"{}\"\ncontexts:\n- name: default\n  context:\n    cluster: sink\n    user: \"\"\ncurrent-context: default\nusers: []\n",
            sink.url()
        ),
    )
    .expect("write webhook config");
    let manifest_file = manifest_path(root.path());
    std::fs::create_dir_all(manifest_file.parent().expect("manifests dir")).expect("mkdir");
    std::fs::write(&manifest_file, &manifest).expect("write manifest");
    let kubelet = Kubelet::start(
        ControlPlane::start().unwrap(),
        KubeletOptions {
            root: root.path().to_owned(),
            manifest: manifest_file,
            node_name: "node1".into(),
        },
    )
    .unwrap();
    let state = kubelet
        .wait_until(Duration::from_secs(90), |s| {
            s.ready && s.mirror_hash.is_some()
        })
        .await
        .unwrap();
    for flag in [
        "--audit-log-path=",
        "--audit-policy-file=",
        "--audit-webhook-config-file=",
        "--audit-webhook-batch-max-wait=5s",
    ] {
        assert!(
            state.flags.iter().any(|f| f.starts_with(flag)),
            "{flag} not passed: {:?}",
            state.flags
        );
    }
    let client = kubelet.plane().client().await.unwrap();
    let name = real::unique_name("kubeadm-proof");
    real::call(
        &client,
        http::Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"probe": "kubeadm-config"},
        })),
    )
    .await;
    collector
        .wait_for(Duration::from_secs(30), |e| {
            e.name() == Some(name.as_str()) && e.verb == "create"
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; kube-apiserver log:\n{}", kubelet.log_tail(30)));
    let log = std::fs::read_to_string(audit_dir.join("audit.log")).unwrap_or_default();
    assert!(
        log.contains(name.as_str()),
        "the log backend wrote the event too"
    );
}

/// The other texts kubeadm 1.20 reads: v1beta1 (with a control plane it deploys, 1.19 or
/// newer) and a v1beta2 text with comments, quoted values and an extraVolume of the user's.
/// v1beta3 and v1beta4 are newer than kubeadm 1.20; the fixture tests cover them.
#[test]
fn the_real_kubeadm_reads_our_edit_of_every_format_it_knows() {
    let kubeadm = kubeadm();
    let opts = PatchOptions::new(Mode::Static);
    for (fixture, version) in [
        ("fixtures/kubeadm-config/kubeadm-v1beta1.yaml", "v1.14.10"),
        (
            "fixtures/kubeadm-config/v1beta1-feature-gates.yaml",
            "v1.13.12",
        ),
        (
            "fixtures/kubeadm-config/v1beta2-extra-volumes-comments.yaml",
            "v1.19.7",
        ),
    ] {
        let original = real::render_fixture(fixture, &[]).replace(
            &format!("kubernetesVersion: {version}"),
            "kubernetesVersion: v1.20.2",
        );
        let patched = patch_cluster_config(&original, &opts).unwrap().text;
        let manifest = regenerate(&kubeadm, &patched);
        assert_eq!(check(&manifest, &opts), Ok(true), "{fixture}:\n{manifest}");
        assert!(our_mount(&manifest).is_some(), "{fixture}:\n{manifest}");
        let back = revert_cluster_config(&patched, &opts).unwrap().text;
        assert_eq!(back, original, "{fixture}");
        assert_eq!(
            regenerate(&kubeadm, &back),
            regenerate(&kubeadm, &original),
            "{fixture}"
        );
    }
}
