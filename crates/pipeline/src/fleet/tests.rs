use clap::Parser;

use super::*;

#[derive(Parser)]
struct Line {
    #[command(flatten)]
    target: TargetArgs,
}

fn args(line: &[&str]) -> TargetArgs {
    Line::try_parse_from(std::iter::once("t").chain(line.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .target
}

fn pod(node: &str, ip: Option<&str>, port: u16) -> ApiServerPod {
    ApiServerPod {
        node_name: node.into(),
        pod_name: format!("kube-apiserver-{node}"),
        host_ip: ip.map(String::from),
        secure_port: port,
        config_hash: Some("h".into()),
        command: Vec::new(),
    }
}

fn three() -> ControlPlaneNodes {
    ControlPlaneNodes {
        apiservers: vec![
            pod("cp-a", Some("10.0.0.1"), 6443),
            pod("cp-b", Some("10.0.0.2"), 6443),
            pod("cp-c", Some("10.0.0.3"), 6443),
        ],
        labelled_without_pod: Vec::new(),
    }
}

fn names(fleet: &Fleet) -> Vec<&str> {
    fleet.nodes.iter().map(|n| n.name.as_str()).collect()
}

fn error(result: Result<Fleet>) -> String {
    result.expect_err("an error").report()
}

#[test]
fn the_cluster_gives_every_node_and_its_address() {
    let fleet = resolve(&args(&["ssh"]), &[], Some(&three()), None).unwrap();
    assert_eq!(names(&fleet), ["cp-a", "cp-b", "cp-c"]);
    let b = &fleet.nodes[1];
    assert_eq!(b.host.as_deref(), Some("10.0.0.2"));
    assert_eq!(b.api.as_ref().unwrap().to_string(), "10.0.0.2:6443");
    assert!(b.in_cluster);
    assert!(fleet.warnings.is_empty());
}

#[test]
fn the_node_behind_the_kubeconfig_goes_last() {
    let plane = three();
    let fleet = resolve(
        &args(&["ssh"]),
        &[],
        Some(&plane),
        Some("https://10.0.0.1:6443"),
    )
    .unwrap();
    assert_eq!(names(&fleet), ["cp-b", "cp-c", "cp-a"]);
    // A load balancer is none of them: the order stays by name.
    let fleet = resolve(
        &args(&["ssh"]),
        &[],
        Some(&plane),
        Some("https://10.0.0.9:6443/"),
    )
    .unwrap();
    assert_eq!(names(&fleet), ["cp-a", "cp-b", "cp-c"]);
    // Same address, another port: another server.
    let fleet = resolve(
        &args(&["ssh"]),
        &[],
        Some(&plane),
        Some("https://10.0.0.1:8443"),
    )
    .unwrap();
    assert_eq!(names(&fleet), ["cp-a", "cp-b", "cp-c"]);
}

#[test]
fn hosts_are_matched_by_name_or_address_and_every_node_needs_one() {
    let plane = three();
    let line = args(&[
        "ssh", "--host", "10.0.0.3", "--host", "cp-a", "--host", "10.0.0.2",
    ]);
    let fleet = resolve(&line, &[], Some(&plane), None).unwrap();
    assert_eq!(names(&fleet), ["cp-a", "cp-b", "cp-c"]);
    assert_eq!(fleet.nodes[2].host.as_deref(), Some("10.0.0.3"));

    let line = args(&["ssh", "--host", "cp-a", "--host", "cp-b"]);
    let message = error(resolve(&line, &[], Some(&plane), None));
    assert!(message.contains("no --host reaches cp-c"), "{message}");

    let line = args(&["ssh", "--host", "cp-a", "--host", "elsewhere.invalid"]);
    let message = error(resolve(&line, &[], Some(&plane), None));
    assert!(
        message.contains("--host elsewhere.invalid matches no control-plane node"),
        "{message}"
    );
}

#[test]
fn node_narrows_the_run_loudly() {
    let plane = three();
    let only = ["cp-b".to_string()];
    let fleet = resolve(&args(&["ssh", "--host", "cp-b"]), &only, Some(&plane), None).unwrap();
    assert_eq!(names(&fleet), ["cp-b"]);
    assert_eq!(fleet.warnings.len(), 1);
    assert!(
        fleet.warnings[0].contains("cp-a, cp-c"),
        "{:?}",
        fleet.warnings
    );
    assert!(
        fleet.warnings[0].contains("UNAUDITED"),
        "{:?}",
        fleet.warnings
    );

    let message = error(resolve(
        &args(&["ssh"]),
        &["cp-z".into()],
        Some(&plane),
        None,
    ));
    assert!(
        message.contains("--node cp-z: no such control-plane node (known: cp-a, cp-b, cp-c)"),
        "{message}"
    );
}

#[test]
fn a_labelled_node_without_an_api_server_is_reported() {
    let mut plane = three();
    plane.labelled_without_pod.push("cp-d".into());
    let fleet = resolve(&args(&["ssh"]), &[], Some(&plane), None).unwrap();
    assert_eq!(names(&fleet), ["cp-a", "cp-b", "cp-c"]);
    assert!(
        fleet.warnings[0].contains("cp-d is labelled control-plane"),
        "{:?}",
        fleet.warnings
    );
}

#[test]
fn one_host_and_one_api_server_are_the_same_machine() {
    let plane = ControlPlaneNodes {
        apiservers: vec![pod("minikube", Some("192.168.49.2"), 8443)],
        labelled_without_pod: Vec::new(),
    };
    let fleet = resolve(
        &args(&["ssh", "--host", "127.0.0.1"]),
        &[],
        Some(&plane),
        None,
    )
    .unwrap();
    assert_eq!(names(&fleet), ["minikube"]);
    assert_eq!(fleet.nodes[0].host.as_deref(), Some("127.0.0.1"));
}

#[test]
fn root_may_hold_the_node_name() {
    let line = args(&["ssh", "--root", "/tmp/sandbox/{node}/root"]);
    let fleet = resolve(&line, &[], Some(&three()), None).unwrap();
    assert_eq!(
        fleet.nodes[1].root.as_deref(),
        Some(std::path::Path::new("/tmp/sandbox/cp-b/root"))
    );
    // The local variant changes a sandbox per node only with {node}; otherwise it is one machine.
    let line = args(&["local", "--root", "/tmp/n/{node}"]);
    assert_eq!(
        resolve(&line, &[], Some(&three()), None)
            .unwrap()
            .nodes
            .len(),
        3
    );
    let message = error(resolve(
        &args(&["local", "--root", "/tmp/n"]),
        &[],
        Some(&three()),
        None,
    ));
    assert!(
        message.contains("pass --node with this machine's node name"),
        "{message}"
    );
}

#[test]
fn without_a_cluster_the_hosts_are_the_nodes() {
    let line = args(&["ssh", "--host", "cp2", "--host", "cp1", "--host", "cp2"]);
    let fleet = resolve(&line, &[], None, None).unwrap();
    assert_eq!(names(&fleet), ["cp1", "cp2"]);
    assert!(fleet.nodes.iter().all(|n| n.api.is_none() && !n.in_cluster));
    let message = error(resolve(&args(&["ssh"]), &[], None, None));
    assert!(message.contains("needs --host"), "{message}");
}

#[test]
fn kops_without_a_kubeconfig_needs_every_host() {
    // SAFETY of the test: nothing else in this process reads APISERVER_HOST concurrently
    // (the env is only read by kops resolution, exercised here alone).
    let message = with_apiserver_host("api.k.example.com", || {
        error(resolve(&args(&["kops"]), &[], None, None))
    });
    assert!(
        message.contains("kops without a kubeconfig needs every control-plane node as --host"),
        "{message}"
    );
    assert!(
        message.contains("APISERVER_HOST=api.k.example.com is usually the load balancer"),
        "{message}"
    );
    let fleet = resolve(
        &args(&["kops", "--host", "m1", "--host", "m2"]),
        &[],
        None,
        None,
    )
    .unwrap();
    assert_eq!(names(&fleet), ["m1", "m2"]);
}

fn with_apiserver_host<T>(value: &str, body: impl FnOnce() -> T) -> T {
    // SAFETY: the pipeline's unit tests read APISERVER_HOST only in this test.
    unsafe { std::env::set_var("APISERVER_HOST", value) };
    let out = body();
    unsafe { std::env::remove_var("APISERVER_HOST") };
    out
}

#[test]
fn kubeconfig_servers_parse_to_endpoints() {
    let endpoint = |s| server_endpoint(s).map(|e| e.to_string());
    assert_eq!(
        endpoint("https://10.0.0.1:6443").as_deref(),
        Some("10.0.0.1:6443")
    );
    assert_eq!(
        endpoint("https://api.example.com").as_deref(),
        Some("api.example.com:443")
    );
    assert_eq!(
        endpoint("https://[fd00::1]:6443/").as_deref(),
        Some("[fd00::1]:6443")
    );
    assert_eq!(endpoint("unix:///x"), None);
}

#[test]
fn a_lone_host_naming_another_node_is_not_the_chosen_one() {
    let only = ["cp-a".to_string()];
    let line = args(&["ssh", "--host", "cp-b"]);
    let message = error(resolve(&line, &only, Some(&three()), None));
    assert!(
        message.contains("--host cp-b matches no control-plane node"),
        "{message}"
    );
}
