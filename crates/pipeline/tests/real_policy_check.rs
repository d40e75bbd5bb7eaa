//! `--policy FILE` is checked locally so that a policy the API server would refuse at startup
//! never reaches the node. This holds the check against the real kube-apiserver v1.20.2: what
//! the server refuses, the check refuses; what the check accepts, the server starts with. The
//! check is stricter in one way, on purpose: the server ignores unknown fields (a `verb:` typo
//! would silently widen the rule), and the check refuses them.

use std::time::Duration;

use patch_apiserver::KubeVersion;
use pipeline::policy;
use testkit::apiserver::{ApiServer, exclusive};

const HEAD: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

/// Starts the server with the policy: it must become ready when `accepted`, and exit at startup
/// naming the policy otherwise.
async fn assert_server(dir: &std::path::Path, text: &str, accepted: bool, what: &str) {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let flags = [format!("--audit-policy-file={}", path.display())];
    if accepted {
        let started = ApiServer::start(&flags).await;
        assert!(started.is_ok(), "{what}: {:?}", started.err());
    } else {
        let failure = ApiServer::start_expecting_failure(&flags, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{what}: the server started: {e}"));
        assert!(
            failure.log.contains("policy"),
            "{what}: refused for another reason:\n{}",
            failure.log
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_refuses_what_the_server_refuses() {
    let _one_at_a_time = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let version: KubeVersion = "v1.20.2".parse().unwrap();
    let bundled =
        String::from_utf8(pipeline::templates::audit_policy(Some(&version)).unwrap()).unwrap();
    let cases = [
        ("the bundled policy", bundled, true),
        (
            "an unknown level",
            HEAD.replace("Metadata", "Everything"),
            false,
        ),
        (
            "an upper-case group",
            format!("{HEAD}  resources: [{{group: RBAC.authorization.k8s.io}}]\n"),
            false,
        ),
        (
            "resourceNames without resources",
            format!("{HEAD}  resources: [{{group: \"\", resourceNames: [x]}}]\n"),
            false,
        ),
        (
            "a wildcard in the middle of a URL",
            format!("{HEAD}  nonResourceURLs: [\"/a*b\"]\n"),
            false,
        ),
        (
            "the * URL",
            format!("{HEAD}  nonResourceURLs: [\"*\"]\n"),
            true,
        ),
        (
            "v1beta1, which 1.20 still serves",
            HEAD.replace("/v1\n", "/v1beta1\n"),
            true,
        ),
        (
            "omitManagedFields, new in 1.20",
            format!("{HEAD}  omitManagedFields: true\n"),
            true,
        ),
    ];
    for (what, text, accepted) in cases {
        let checked = policy::check(&text, Some(&version));
        assert_eq!(checked.is_ok(), accepted, "{what}: {checked:?}");
        assert_server(dir.path(), &text, accepted, what).await;
    }
}
