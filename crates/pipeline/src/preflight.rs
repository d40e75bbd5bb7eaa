//! Stage 1, preflight: reads only. It opens the one node session every later stage reuses,
//! reads the manifest and the audit files already on the node in one command, checks the
//! version, finds Falco, and computes the patched manifest. A mode the version cannot run is
//! refused here, before anything on the node changes.

use patch_apiserver::{KubeVersion, Mode, PatchOptions};

use crate::cluster_args::{ClusterArgs, Kube};
use crate::durable::{self, DurablePlan};
use crate::enable::EnableArgs;
use crate::error::{Context, PipelineError, Result, bail};
use crate::fleet::{self, Fleet, NodeTarget};
use crate::node::Node;
use crate::reachability::{self, Probed, Verdict};
use crate::state::{self, State};
use crate::target::{Jumps, TargetArgs};
use crate::templates::FalcoUrl;
use crate::wait;

/// What the preflight learned about one node; nothing on it has changed yet.
pub struct Plan {
    pub target: NodeTarget,
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
    /// The mirror pod's config hash before the change.
    pub old_hash: Option<String>,
    /// The version the manifest's image names.
    pub image_version: Option<KubeVersion>,
    /// Warnings found while planning, shown under the preflight line.
    pub warnings: Vec<String>,
    /// What the user should know that is not a problem (which Falco answered).
    pub infos: Vec<String>,
    /// Details for `--verbose`.
    pub details: Vec<String>,
    /// Which tool owns the manifest (it may rewrite it).
    pub manager: Option<crate::manager::Manager>,
    /// Whether the node already keeps the original ClusterConfiguration (from an earlier enable).
    pub durable_original_kept: bool,
    /// The preflight line's summary for this node.
    pub summary: String,
}

/// What the preflight learned about the cluster, shared by every node of the run.
pub struct Preflight {
    pub kube: Option<Kube>,
    pub fleet: Fleet,
    /// One plan per node, in the order the run changes them.
    pub plans: Vec<Plan>,
    /// Which Falco endpoint was chosen, and why.
    pub falco_reason: Option<String>,
    /// Our edit of kube-system/kubeadm-config, on a kubeadm cluster (not with --no-durable).
    pub durable: Option<DurablePlan>,
    /// Checks each node's own API server over its session; `None` without a cluster.
    pub probe: Option<cluster::NodeProbe>,
    pub warnings: Vec<String>,
    /// The jump hosts' connections, shared by the nodes behind them.
    pub jumps: Jumps,
}

/// The files a mode puts on the node, from patch-apiserver's one list.
pub fn uploads(mode: Mode) -> Vec<&'static str> {
    patch_apiserver::audit_files(&PatchOptions::new(mode))
        .into_iter()
        .filter(|file| file.uploaded())
        .map(|file| file.file_name())
        .collect()
}

/// The cluster and the nodes of a run: the kubeconfig when the run needs one (or was given
/// one), and every control-plane node it acts on.
pub fn cluster_and_fleet(
    target: &TargetArgs,
    cluster: &ClusterArgs,
    needs_cluster: bool,
) -> Result<(Option<Kube>, Fleet)> {
    let kube = match cluster.connect(needs_cluster) {
        Ok(kube) => kube,
        // Without a cluster the nodes must come from the arguments: when they do not, that is
        // what the user has to fix (the message says both ways).
        Err(error) => {
            fleet::resolve(target, &cluster.nodes, None, None)?;
            return Err(error);
        }
    };
    let plane = match &kube {
        Some(kube) => Some(kube.block_on(kube.cluster.control_plane())?),
        None => None,
    };
    let server = kube.as_ref().map(|k| k.cluster.server().to_string());
    let fleet = fleet::resolve(target, &cluster.nodes, plane.as_ref(), server.as_deref())?;
    Ok((kube, fleet))
}

/// Runs `work` for every node at once, one thread each, and gives the results back in order.
/// Every node's session is its own, so a slow node does not hold up the others.
pub fn on_every_node<T: Send>(
    fleet: &Fleet,
    work: impl Fn(&NodeTarget) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    if let [only] = fleet.nodes.as_slice() {
        return vec![work(only)];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .nodes
            .iter()
            .map(|node| scope.spawn(|| work(node)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PipelineError::failed("a node's thread panicked")))
            })
            .collect()
    })
}

/// Every node's result, or one error that lists each node's problem (not only the first).
pub fn all_or_report<T>(fleet: &Fleet, results: Vec<Result<T>>, what: &str) -> Result<Vec<T>> {
    if fleet.nodes.len() == 1 {
        return results.into_iter().collect();
    }
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for (node, result) in fleet.nodes.iter().zip(results) {
        match result {
            Ok(value) => ok.push(value),
            Err(error) => problems.push(format!("  {}: {}", node.name, error.report())),
        }
    }
    if problems.is_empty() {
        return Ok(ok);
    }
    Err(PipelineError::failed(format!(
        "{} of {} control-plane nodes failed {what}; nothing was written on any node:\n{}",
        problems.len(),
        fleet.nodes.len(),
        problems.join("\n")
    )))
}

/// The preflight of `enable`: the cluster, then every node at once; returns the plans and the
/// step's one-line summary.
pub fn run(args: &EnableArgs) -> Result<(Preflight, String)> {
    let needs_cluster =
        !args.restart.no_wait || args.mode != Mode::Static || args.falco.falco_url.is_none();
    args.target.audit_dir()?;
    let (kube, fleet) = cluster_and_fleet(&args.target, &args.cluster, needs_cluster)?;
    let (candidates, falco_reason) = resolve_falco(args, kube.as_ref())?;
    let multi = fleet.nodes.len() > 1;
    let jumps = Jumps::default();
    let results = on_every_node(&fleet, |target| {
        plan_node(args, target, multi, &candidates, &jumps)
    });
    let mut plans = all_or_report(&fleet, results, "the preflight")?;
    let mut warnings = fleet.warnings.clone();
    check_versions(args, kube.as_ref(), &mut plans, &mut warnings)?;
    let durable = match (&kube, plans.first()) {
        (Some(kube), Some(first))
            if first.manager == Some(crate::manager::Manager::Kubeadm) && !args.no_durable =>
        {
            durable::plan(kube, &first.options)?
        }
        _ => None,
    };
    if let (Some(kube), false) = (&kube, args.restart.no_wait) {
        let now = std::time::SystemTime::now();
        for plan in &mut plans {
            let pod = wait::mirror_pod(
                kube,
                plan.target.in_cluster.then_some(plan.target.name.as_str()),
            );
            warnings.extend(
                pod.as_ref()
                    .and_then(|pod| wait::recent_restart_warning(pod, now)),
            );
            plan.old_hash = pod.and_then(|pod| pod.config_hash);
        }
    }
    let probe = match (&kube, multi) {
        (Some(kube), true) => Some(kube.cluster.node_probe()?),
        _ => None,
    };
    let falco = plans.first().and_then(|p| p.falco.as_ref());
    let summary = match plans.as_slice() {
        [plan] => plan.summary.clone(),
        _ => format!(
            "{} control-plane nodes: {}{}",
            plans.len(),
            fleet.names(),
            falco
                .map(|f| format!("; Falco at {}", f.to_url()))
                .unwrap_or_default()
        ),
    };
    let preflight = Preflight {
        kube,
        fleet,
        plans,
        falco_reason,
        durable,
        probe,
        warnings,
        jumps,
    };
    Ok((preflight, summary))
}

/// One node's reads and checks, on a thread of its own (no cluster calls here: the runtime is
/// the caller's).
fn plan_node(
    args: &EnableArgs,
    target: &NodeTarget,
    multi: bool,
    candidates: &[FalcoUrl],
    jumps: &Jumps,
) -> Result<Plan> {
    let dir = args.target.audit_dir()?;
    let node = args.target.connect(target, multi, jumps)?;
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
        candidates
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
    let (mut infos, mut details) = (Vec::new(), Vec::new());
    let falco = choose_falco(
        args,
        candidates.to_vec(),
        &probed,
        &mut infos,
        &mut warnings,
    )?;
    let existing = names.iter().copied().zip(read.split_off(3)).collect();
    let durable_original_kept = read.pop().flatten().is_some();
    let record_bytes = read.pop().flatten();
    let original = manifest_text(&node, &manifest_path, read.pop().flatten())?;
    let on_node = format!("{} on {}", manifest_path, node.describe());
    let inspection = patch_apiserver::inspect(&original)
        .map_err(|e| PipelineError::failed(e.located(&on_node)))?;
    let version = args.kube_version.or(inspection.version);
    details.push(format!(
        "shape {}, image version {}",
        inspection.shape,
        describe_version(inspection.version.as_ref())
    ));

    let mut options = PatchOptions::new(args.mode);
    options.audit_dir = args.target.node.audit_dir.clone();
    options.batch_max_wait = args.batch_max_wait.clone();
    options.force = args.force;
    options.kube_version = version;
    let mut patched = patch_apiserver::patch(&original, &options)
        .map_err(|e| PipelineError::failed(e.located(&on_node)))?;
    let failing =
        args.test_only_batch_max_wait
            .as_deref()
            .and_then(|spec| match spec.split_once('=') {
                Some((name, value)) => (name == target.name).then_some(value),
                None => Some(spec),
            });
    if let Some(value) = failing {
        // patch-apiserver refuses invalid durations; the rollback tests need one to reach the API server.
        let ours = format!("--audit-webhook-batch-max-wait={}", args.batch_max_wait);
        patched.text = patched
            .text
            .replace(&ours, &format!("--audit-webhook-batch-max-wait={value}"));
    }
    for note in &patched.notes {
        match note {
            // Expected on every re-run; not worth a warning.
            patch_apiserver::Note::AlreadyPresent { .. } => details.push(note.to_string()),
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
    if let Some(url) = falco.as_ref().filter(|url| url.is_cluster_dns_name()) {
        warnings.push(format!(
            "{} is a cluster DNS name: the API server runs in the host's network with the host's resolver, which does not know cluster names; use the Service's ClusterIP or a NodePort on 127.0.0.1",
            url.host
        ));
    }
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
    Ok(Plan {
        target: target.clone(),
        node,
        manifest_path,
        original,
        existing,
        record,
        patched,
        options,
        falco,
        old_hash: None,
        image_version: inspection.version,
        warnings,
        infos,
        details,
        manager,
        durable_original_kept,
        summary,
    })
}

/// The versions the nodes run against what the cluster serves and against each other. The
/// dynamic modes exist only in 1.13-1.18, and a 1.19+ server refuses their flags and does not
/// start: which version is right decides whether a node survives.
fn check_versions(
    args: &EnableArgs,
    kube: Option<&Kube>,
    plans: &mut [Plan],
    warnings: &mut Vec<String>,
) -> Result<()> {
    let minor = |v: &KubeVersion| (v.major, v.minor);
    let mut images: Vec<KubeVersion> = plans.iter().filter_map(|p| p.image_version).collect();
    images.sort_by_key(minor);
    images.dedup_by_key(|v| minor(v));
    if images.len() > 1 {
        let each = plans
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.target.name,
                    describe_version(p.image_version.as_ref())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if args.mode != Mode::Static {
            bail!(
                "the control-plane nodes run different Kubernetes versions ({each}), a half-finished upgrade; {} mode depends on the version (1.13-1.18 only), so nothing was written. Finish the upgrade first",
                args.mode
            );
        }
        warnings.push(format!(
            "the control-plane nodes run different Kubernetes versions ({each}): an upgrade is half done; each node gets the flags of its own version"
        ));
    }
    let Some(kube) = kube else {
        return Ok(());
    };
    let served = kube.block_on(kube.cluster.version())?;
    for plan in plans.iter_mut() {
        plan.details.push(format!(
            "API server {} reports {served}",
            kube.cluster.server()
        ));
        let on_node = format!("{} on {}", plan.manifest_path, plan.node.describe());
        if let (Ok(served), Some(image)) = (served.parse::<KubeVersion>(), &plan.image_version)
            && minor(&served) != minor(image)
        {
            match args.kube_version {
                None if args.mode != Mode::Static => {
                    return Err(PipelineError::failed(format!(
                        "{on_node}: the manifest's image says {image} but the API server reports {served}; {} mode depends on the version (1.13-1.18 only), so nothing was written. Pass --kube-version with the version the node really runs (--force does not decide this)",
                        args.mode
                    )));
                }
                None => plan.warnings.push(format!(
                    "the API server runs {served} but the manifest's image is {image}: the flags follow the manifest, which is what the kubelet will start"
                )),
                Some(chosen) => plan.warnings.push(format!(
                    "the API server runs {served} and the manifest's image is {image}; --kube-version {chosen} decides the flags"
                )),
            }
        }
    }
    Ok(())
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
    infos: &mut Vec<String>,
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
            infos.push(format!("reachable from the node: {ok}"));
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
