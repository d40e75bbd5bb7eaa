//! Stage 1, preflight: reads only. It opens the one node session every later stage reuses,
//! reads the manifest and the audit files already on the node in one command, checks the
//! version, finds Falco, and computes the patched manifest. A mode the version cannot run is
//! refused here, before anything on the node changes.

use patch_apiserver::{KubeVersion, Mode, PatchOptions};

use crate::cluster_args::Kube;
use crate::durable::{self, DurablePlan};
use crate::enable::EnableArgs;
use crate::error::{Context, PipelineError, Result};
use crate::node::Node;
use crate::reachability::{self, Probed, Verdict};
use crate::report::Steps;
use crate::state::{self, State};
use crate::templates::FalcoUrl;
use crate::wait;

/// What the preflight learned; nothing on the node has changed yet.
pub struct Plan {
    pub node: Node,
    pub manifest_path: String,
    pub original: String,
    /// What the node holds now for each file we may upload, read with the manifest.
    pub existing: Vec<(&'static str, Option<Vec<u8>>)>,
    /// The record of an earlier enable that is still in force: its backup is the original.
    pub record: Option<State>,
    pub patched: patch_apiserver::Outcome,
    pub options: PatchOptions,
    pub falco: Option<FalcoUrl>,
    pub kube: Option<Kube>,
    pub old_hash: Option<String>,
    /// Warnings found while planning, shown under the preflight line.
    pub warnings: Vec<String>,
    /// Which Falco endpoint was chosen, and why.
    pub falco_reason: Option<String>,
    /// Which tool owns the manifest (it may rewrite it).
    pub manager: Option<crate::manager::Manager>,
    /// Our edit of kube-system/kubeadm-config, on a kubeadm cluster (not with --no-durable).
    pub durable: Option<DurablePlan>,
    /// Whether the node already keeps the original ClusterConfiguration (from an earlier enable).
    pub durable_original_kept: bool,
}

/// The files a mode puts on the node, from patch-apiserver's one list.
pub fn uploads(mode: Mode) -> Vec<&'static str> {
    patch_apiserver::audit_files(&PatchOptions::new(mode))
        .into_iter()
        .filter(|file| file.uploaded())
        .map(|file| file.file_name())
        .collect()
}

/// The preflight of `enable`; returns the plan and its one-line summary.
pub fn run(args: &EnableArgs, steps: &Steps) -> Result<(Plan, String)> {
    let needs_cluster =
        !args.restart.no_wait || args.mode != Mode::Static || args.falco.falco_url.is_none();
    let dir = args.target.audit_dir()?;
    let node = args.target.connect()?;
    let kube = args.cluster.connect(needs_cluster)?;
    let (candidates, falco_reason) = resolve_falco(args, kube.as_ref())?;
    let manifest_path = args.target.manifest();
    let names = uploads(args.mode);
    let mut paths = vec![
        manifest_path.clone(),
        state::state_path(dir),
        durable::original_path(dir),
    ];
    paths.extend(names.iter().map(|name| format!("{dir}/{name}")));
    let probe: &[FalcoUrl] = if args.skip_reachability {
        &[]
    } else {
        &candidates
    };
    // The probe verifies an https Falco with the same CA the webhook will use. (A client
    // certificate is not offered: its key would have to reach the node for the probe alone.)
    let ca = candidates
        .first()
        .and_then(|url| url.tls.as_ref())
        .and_then(|tls| tls.ca_pem.as_deref())
        .map(String::from_utf8_lossy);
    let (mut read, probed) = node.lock_and_read(
        &crate::lock::dir_for(&manifest_path),
        &paths.iter().map(String::as_str).collect::<Vec<_>>(),
        probe,
        ca.as_deref(),
    )?;
    let mut warnings = Vec::new();
    let falco = choose_falco(args, candidates, &probed, steps, &mut warnings)?;
    let existing = names.iter().copied().zip(read.split_off(3)).collect();
    let durable_original_kept = read.pop().flatten().is_some();
    let record_bytes = read.pop().flatten();
    let original = manifest_text(&node, &manifest_path, read.pop().flatten())?;
    let on_node = format!("{} on {}", manifest_path, node.describe());
    let inspection = patch_apiserver::inspect(&original)
        .map_err(|e| PipelineError::failed(e.located(&on_node)))?;
    let version = args.kube_version.or(inspection.version);
    steps.detail(format!(
        "shape {}, image version {}",
        inspection.shape,
        describe_version(inspection.version.as_ref())
    ));

    if let Some(kube) = &kube {
        let served = kube.block_on(kube.cluster.version())?;
        steps.detail(format!(
            "API server {} reports {served}",
            kube.cluster.server()
        ));
        if let (Ok(served), Some(image)) = (served.parse::<KubeVersion>(), &inspection.version)
            && (served.major, served.minor) != (image.major, image.minor)
        {
            // The dynamic modes exist only in 1.13-1.18, and a 1.19+ server refuses their flags
            // and does not start: which version is right decides whether the node survives.
            match args.kube_version {
                None if args.mode != Mode::Static => {
                    return Err(PipelineError::failed(format!(
                        "{on_node}: the manifest's image says {image} but the API server reports {served}; {} mode depends on the version (1.13-1.18 only), so nothing was written. Pass --kube-version with the version the node really runs (--force does not decide this)",
                        args.mode
                    )));
                }
                None => warnings.push(format!(
                    "the API server runs {served} but the manifest's image is {image}: the flags follow the manifest, which is what the kubelet will start"
                )),
                Some(chosen) => warnings.push(format!(
                    "the API server runs {served} and the manifest's image is {image}; --kube-version {chosen} decides the flags"
                )),
            }
        }
    }

    let mut options = PatchOptions::new(args.mode);
    options.audit_dir = args.target.node.audit_dir.clone();
    options.batch_max_wait = args.batch_max_wait.clone();
    options.force = args.force;
    options.kube_version = version;
    let mut patched = patch_apiserver::patch(&original, &options)
        .map_err(|e| PipelineError::failed(e.located(&on_node)))?;
    if let Some(value) = &args.test_only_batch_max_wait {
        // patch-apiserver refuses invalid durations; the rollback tests need one to reach the API server.
        let ours = format!("--audit-webhook-batch-max-wait={}", args.batch_max_wait);
        patched.text = patched
            .text
            .replace(&ours, &format!("--audit-webhook-batch-max-wait={value}"));
    }
    for note in &patched.notes {
        match note {
            // Expected on every re-run; not worth a warning.
            patch_apiserver::Note::AlreadyPresent { .. } => steps.detail(note.to_string()),
            _ => warnings.push(note.to_string()),
        }
    }

    let record = record_in_force(
        record_bytes,
        dir,
        &manifest_path,
        &inspection,
        &mut warnings,
    );
    let manager = crate::manager::Manager::detect(&original);
    let durable = match (&kube, manager) {
        (Some(kube), Some(crate::manager::Manager::Kubeadm)) if !args.no_durable => {
            durable::plan(kube, &options)?
        }
        _ => None,
    };
    if let Some(url) = falco.as_ref().filter(|url| url.is_cluster_dns_name()) {
        warnings.push(format!(
            "{} is a cluster DNS name: the API server runs in the host's network with the host's resolver, which does not know cluster names; use the Service's ClusterIP or a NodePort on 127.0.0.1",
            url.host
        ));
    }
    let old_hash = match (&kube, args.restart.no_wait) {
        (Some(kube), false) => wait::mirror_hash(kube, args.cluster.node_name.as_deref()),
        _ => None,
    };
    let summary = format!(
        "{}: {manifest_path} ({}, Kubernetes {}){}",
        node.describe(),
        inspection.shape,
        describe_version(version.as_ref()),
        falco
            .as_ref()
            .map(|f| format!(", Falco at {}", f.to_url()))
            .unwrap_or_default(),
    );
    let plan = Plan {
        node,
        manifest_path,
        original,
        existing,
        record,
        patched,
        options,
        falco,
        kube,
        old_hash,
        warnings,
        falco_reason,
        manager,
        durable,
        durable_original_kept,
    };
    Ok((plan, summary))
}

/// The record an earlier enable left, when it still describes this manifest: it names it, and
/// the manifest still carries flags that one of its enables wrote. Otherwise this enable starts
/// afresh (with a warning when the record could not be read).
fn record_in_force(
    bytes: Option<Vec<u8>>,
    audit_dir: &str,
    manifest_path: &str,
    inspection: &patch_apiserver::Inspection,
    warnings: &mut Vec<String>,
) -> Option<State> {
    let text = String::from_utf8_lossy(&bytes?).into_owned();
    let record = match State::parse(&text, audit_dir) {
        Ok(record) => record,
        Err(error) => {
            warnings.push(format!(
                "ignoring the unreadable state record {}: {}",
                state::state_path(audit_dir),
                error.report()
            ));
            return None;
        }
    };
    let ours = record.enables.iter().any(|enabled| {
        !patch_apiserver::our_flags(&inspection.apiserver_args, &enabled.options()).is_empty()
    });
    (record.manifest == manifest_path && ours).then_some(record)
}

pub fn describe_version(version: Option<&KubeVersion>) -> String {
    version.map_or("unknown".into(), |v| v.to_string())
}

pub fn read_manifest(node: &Node, manifest_path: &str) -> Result<String> {
    let bytes = node.read_many(&[manifest_path])?.pop().flatten();
    manifest_text(node, manifest_path, bytes)
}

pub fn manifest_text(node: &Node, manifest_path: &str, bytes: Option<Vec<u8>>) -> Result<String> {
    let bytes = bytes.with_context(|| {
        format!(
            "there is no manifest at {manifest_path} on {} (pass --manifest if it lives elsewhere)",
            node.describe()
        )
    })?;
    String::from_utf8(bytes).with_context(|| format!("{manifest_path} is not UTF-8 text"))
}

/// The endpoint to write, from what the node said of each candidate: the first that answered;
/// with none, static mode stops here, before anything is written (the API server's webhook
/// would drop every event while the control plane looks healthy).
fn choose_falco(
    args: &EnableArgs,
    candidates: Vec<FalcoUrl>,
    probed: &[Probed],
    steps: &Steps,
    warnings: &mut Vec<String>,
) -> Result<Option<FalcoUrl>> {
    if args.skip_reachability {
        warnings.push(
            "--skip-reachability: nothing checked that the API server's host can reach Falco"
                .into(),
        );
        return Ok(candidates.into_iter().next());
    }
    match reachability::verdict(probed) {
        Verdict::Reachable(ok) => {
            steps.info(format!("reachable from the node: {ok}"));
            Ok(Some(ok.url.clone()))
        }
        Verdict::Unverified(p) => {
            warnings.push(format!(
                "could not check that the node reaches Falco ({p}); the webhook is written unverified"
            ));
            Ok(candidates.into_iter().next())
        }
        Verdict::Unreachable if args.mode == Mode::Static => Err(PipelineError::failed(
            reachability::unreachable_message(probed),
        )),
        Verdict::Unreachable => {
            warnings.push(reachability::unreachable_message(probed));
            Ok(candidates.into_iter().next())
        }
    }
}

/// Falco's candidate endpoints, best first, and a sentence on why when they were looked up.
/// Discovery yields addresses only (a ClusterIP, a nodePort on 127.0.0.1), never a DNS name.
/// The TLS files are read and checked here, before anything is written.
fn resolve_falco(
    args: &EnableArgs,
    kube: Option<&Kube>,
) -> Result<(Vec<FalcoUrl>, Option<String>)> {
    let falco = &args.falco;
    let tls = crate::templates::FalcoTls::load(
        falco.falco_ca_file.as_deref(),
        falco.falco_client_cert.as_deref(),
        falco.falco_client_key.as_deref(),
    )?
    .map(std::sync::Arc::new);
    if let Some(url) = &falco.falco_url {
        return Ok((vec![FalcoUrl::parse(url)?.with_tls(tls)?], None));
    }
    let kube =
        kube.context("finding Falco needs the cluster: pass --falco-url, or a kubeconfig")?;
    let endpoint = kube.block_on(kube.cluster.find_falco(&cluster::FalcoQuery {
        namespace: falco.falco_namespace.clone(),
        name: falco.falco_service.clone(),
        via_node_port: falco.falco_via_nodeport,
    }))?;
    let reason = format!("Falco endpoint {} ({})", endpoint.url(), endpoint.reason);
    let candidates = endpoint
        .candidates
        .into_iter()
        .map(|c| FalcoUrl::http(c.host, c.port, c.path).with_tls(tls.clone()))
        .collect::<Result<_>>()?;
    Ok((candidates, Some(reason)))
}
