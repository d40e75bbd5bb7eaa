//! Tests that send packets beyond loopback run in a network namespace of their own, where the
//! only interface is `lo`: an address like a ClusterIP is unroutable there, so nothing can leave
//! the machine. [`run_isolated`] re-runs one ignored test of the current test binary inside such
//! a namespace; [`assert_probe_allowed`] refuses a probe of a non-loopback address anywhere else.

use std::process::Command;

/// Whether this process's network namespace has no interface but `lo`, so that no packet can
/// leave it. (`/proc/self/net/dev` lists the interfaces of the namespace we are in; comparing
/// with PID 1's namespace is not possible here, as its link cannot be read.)
pub fn isolated() -> bool {
    let Ok(dev) = std::fs::read_to_string("/proc/self/net/dev") else {
        return false;
    };
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    interfaces == ["lo"]
}

/// Runs the ignored test `name` of this test binary in a new network namespace with only `lo`
/// up, and fails when it fails. Needs root (as CI and the developers' machines have).
pub fn run_isolated(name: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .expect("run unshare (util-linux) and ip (iproute2)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} in its own network namespace:\n{text}"
    );
}

/// Panics unless every URL's host is a loopback address, or this test runs in a namespace of
/// its own: a probe of a ClusterIP from the host would send packets out of the machine.
pub fn assert_probe_allowed(urls: &[&str]) {
    if isolated() {
        return;
    }
    for url in urls {
        let host = url
            .split_once("://")
            .map_or(*url, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        assert!(
            host == "localhost" || host.starts_with("127."),
            "a probe of {url} would leave the machine: run this test with testkit::netns::run_isolated"
        );
    }
}
