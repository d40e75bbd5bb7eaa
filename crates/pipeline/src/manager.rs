//! Which tool owns a kube-apiserver manifest. Each of them rewrites the manifest on upgrade or
//! reprovisioning, and each has its own durable way to set the same flags.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Minikube,
    Kops,
    Rke2,
    Kubeadm,
}

impl Manager {
    /// Recognises the manager from marks each one leaves in the manifests it writes.
    pub fn detect(manifest: &str) -> Option<Manager> {
        let has = |mark: &str| manifest.contains(mark);
        if has("rancher/hardened-kubernetes") || has("/var/lib/rancher/rke2") {
            Some(Manager::Rke2)
        } else if has("/var/lib/minikube") {
            Some(Manager::Minikube)
        } else if has("/srv/kubernetes") || has("k8s-app: kube-apiserver") || has("kops") {
            Some(Manager::Kops)
        } else if has("kubeadm.kubernetes.io") || has("tier: control-plane") {
            Some(Manager::Kubeadm)
        } else {
            None
        }
    }

    /// The warning above the durable settings `enable` prints for this manager.
    pub fn rewrites(self) -> &'static str {
        match self {
            Manager::Minikube => {
                "minikube start rewrites this manifest and audit will be off after it; to keep it, do this once:"
            }
            Manager::Kops => {
                "kops nodeup rewrites this manifest on every update and audit will be off after it; to keep it, put this in the cluster spec:"
            }
            Manager::Rke2 => {
                "RKE2 rewrites this manifest at every start and audit will be off after it; to keep it, put this in /etc/rancher/rke2/config.yaml:"
            }
            Manager::Kubeadm => {
                "kubeadm upgrade rewrites this manifest; kube-system/kubeadm-config keeps the settings (see the durable step)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../../fixtures/manifests/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn recognises_the_bundled_manifests() {
        assert_eq!(
            Manager::detect(&fixture("minikube-v1.28.yaml")),
            Some(Manager::Minikube)
        );
        assert_eq!(
            Manager::detect(&fixture("kops-v1.18.manifest")),
            Some(Manager::Kops)
        );
        assert_eq!(
            Manager::detect("image: rancher/hardened-kubernetes:v1.28.9-rke2r1-build20240416"),
            Some(Manager::Rke2)
        );
        assert_eq!(
            Manager::detect("labels:\n    component: kube-apiserver\n    tier: control-plane\n"),
            Some(Manager::Kubeadm)
        );
        assert_eq!(Manager::detect("kind: Pod\n"), None);
    }
}
