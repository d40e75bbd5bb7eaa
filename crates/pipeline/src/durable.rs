//! Stage 7, durable (kubeadm clusters): `kubeadm upgrade` and `kubeadm join --control-plane`
//! regenerate the static pod manifests from the ClusterConfiguration in
//! `kube-system/kubeadm-config`, and would silently erase a manifest edit. So the same flags
//! and mount go into `apiServer.extraArgs` and `apiServer.extraVolumes` there, edited as text
//! (`patch_apiserver::patch_cluster_config`), after the manifest change has succeeded.
//!
//! The original ClusterConfiguration text is kept on the node beside the state record, so
//! that `disable` can give it back byte for byte while the ConfigMap is still exactly our
//! edit of it, and otherwise removes only our entries.

use cluster::{ClusterError, KubeadmConfig};
use patch_apiserver::PatchOptions;

use crate::cluster_args::Kube;
use crate::error::{PipelineError, Result};
use crate::report::Steps;

/// `<audit dir>/kubeadm-config.orig`: the ClusterConfiguration before the first enable.
pub fn original_path(audit_dir: &str) -> String {
    format!("{audit_dir}/kubeadm-config.orig")
}

/// The ConfigMap's edit, computed in preflight, written after the wait.
#[derive(Debug, Clone)]
pub struct DurablePlan {
    pub read: KubeadmConfig,
    pub patched: String,
}

/// Reads kubeadm-config and computes our edit of it: `None` when the cluster has none (not a
/// kubeadm cluster after all) or it already carries our settings.
pub fn plan(kube: &Kube, options: &PatchOptions) -> Result<Option<DurablePlan>> {
    let Some(read) = kube.block_on(kube.cluster.read_kubeadm_config())? else {
        return Ok(None);
    };
    let patched = patch_config(&read.cluster_configuration, options)?;
    Ok((patched != read.cluster_configuration).then_some(DurablePlan { read, patched }))
}

fn patch_config(text: &str, options: &PatchOptions) -> Result<String> {
    patch_apiserver::patch_cluster_config(text, options)
        .map(|o| o.text)
        .map_err(|e| {
            PipelineError::failed(format!(
                "{}; pass --no-durable to change only the manifest (kubeadm upgrade would then undo it)",
                e.located("ConfigMap kube-system/kubeadm-config, key ClusterConfiguration")
            ))
        })
}

/// Writes `edit(text)` into the ConfigMap at the version it was read at; on a conflict
/// (someone wrote in between) reads again, redoes the edit, and tries once more.
pub fn write(
    kube: &Kube,
    read: &KubeadmConfig,
    edit: impl Fn(&str) -> Result<String>,
) -> Result<()> {
    let first = edit(&read.cluster_configuration)?;
    match kube.block_on(
        kube.cluster
            .update_kubeadm_config(&first, &read.resource_version),
    ) {
        Ok(_) => Ok(()),
        Err(ClusterError::KubeadmConfigConflict { .. }) => {
            let again = kube
                .block_on(kube.cluster.read_kubeadm_config())?
                .ok_or_else(|| PipelineError::failed("kube-system/kubeadm-config disappeared"))?;
            let second = edit(&again.cluster_configuration)?;
            kube.block_on(
                kube.cluster
                    .update_kubeadm_config(&second, &again.resource_version),
            )?;
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// After a successful enable: puts our settings into kubeadm-config. A failure leaves the
/// manifest enabled and says exactly that the change is not durable, and how to finish it.
pub fn apply(kube: &Kube, plan: &DurablePlan, options: &PatchOptions, steps: &Steps) -> Result<()> {
    steps.run("durable", || {
        write(kube, &plan.read, |text| patch_config(text, options)).map_err(|e| {
            PipelineError::failed(format!(
                "audit is enabled in the manifest, but NOT durable: kube-system/kubeadm-config was not updated ({}), so the next `kubeadm upgrade` will turn audit off. Run enable again once that is fixed, or add the flags and the k8s-audit volume to ClusterConfiguration.apiServer.extraArgs/extraVolumes by hand",
                e.report()
            ))
        })?;
        Ok((
            (),
            "kube-system/kubeadm-config: apiServer.extraArgs and extraVolumes carry the audit settings, so kubeadm upgrade keeps them".into(),
        ))
    })
}

/// What disable writes back: the original bytes while the ConfigMap is still exactly the
/// enables' edit of them, else the ConfigMap without our entries.
pub fn restored(current: &str, original: Option<&str>, enables: &[PatchOptions]) -> Result<String> {
    if let Some(original) = original {
        let replayed = enables
            .iter()
            .try_fold(original.to_string(), |text, options| {
                patch_apiserver::patch_cluster_config(&text, options).map(|o| o.text)
            });
        if replayed.is_ok_and(|text| text == current) {
            return Ok(original.to_string());
        }
    }
    enables
        .iter()
        .rev()
        .try_fold(current.to_string(), |text, options| {
            patch_apiserver::revert_cluster_config(&text, options)
                .map(|o| o.text)
                .map_err(|e| PipelineError::failed(e.located("kube-system/kubeadm-config")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use patch_apiserver::Mode;

    const V1BETA2: &str = "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.20.2\n# ours, kept\napiServer:\n  extraArgs:\n    authorization-mode: Node,RBAC\n";

    #[test]
    fn disable_gives_back_the_original_or_removes_only_ours() {
        let static_ = PatchOptions::new(Mode::Static);
        let patched = patch_config(V1BETA2, &static_).unwrap();
        assert!(patched.contains("audit-policy-file"), "{patched}");
        let enables = [static_];
        assert_eq!(
            restored(&patched, Some(V1BETA2), &enables).unwrap(),
            V1BETA2
        );
        // Someone changed the ConfigMap since: only our entries go.
        let changed = patched.replace("Node,RBAC", "Node,RBAC,ABAC");
        let back = restored(&changed, Some(V1BETA2), &enables).unwrap();
        assert_eq!(back, V1BETA2.replace("Node,RBAC", "Node,RBAC,ABAC"));
    }
}
