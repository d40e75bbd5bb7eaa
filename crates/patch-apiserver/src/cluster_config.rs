//! The same change in a kubeadm `ClusterConfiguration` (the `ClusterConfiguration` key of the
//! `kube-system/kubeadm-config` ConfigMap), so that `kubeadm upgrade` and
//! `kubeadm join --control-plane`, which regenerate the manifest from it, keep it.
//!
//! Our flags go in `apiServer.extraArgs` (a map of flag names without dashes in
//! v1beta1–v1beta3, a list of `{name, value}` in v1beta4) and our hostPath in
//! `apiServer.extraVolumes`. The text is edited as the manifest is: only additions, laid
//! out like their neighbours, and `revert` takes away only what `patch` added.
//!
//! Containers follow the manifest editor's rule so that revert can give back the very
//! bytes: a key we create in a block mapping is a block, in a flow mapping a tight
//! `{...}`/`[...]`; an existing empty `{}`/`[]` is filled padded, `{ ... }`. When revert
//! empties a block or tight container, the key goes with it; a padded one goes back to
//! `{}`.

use crate::edit::{self, Edit, eol_at, escape, lines_after};
use crate::error::{PatchError, Pos};
use crate::flags::{self, DYNAMIC_REMOVED, DYNAMIC_SINCE, FlagSpec, Want};
use crate::locate;
use crate::mounts::norm;
use crate::ours::claim;
use crate::patch::{EntryState, entries, entry_state, keeping_bom};
use crate::yaml::{Kind, Node, Style, col, line_start};
use crate::{KubeVersion, Note, Outcome, PatchOptions, VOLUME_NAME};

/// The `kubeadm.k8s.io` API version of a ClusterConfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeadmApi {
    /// kubeadm 1.13–1.14 (read up to 1.16).
    V1beta1,
    /// kubeadm 1.15–1.21.
    V1beta2,
    /// kubeadm 1.22–1.30.
    V1beta3,
    /// kubeadm 1.31 on: `extraArgs` is a list of `{name, value}`.
    V1beta4,
}

impl KubeadmApi {
    pub const ALL: [KubeadmApi; 4] = [
        KubeadmApi::V1beta1,
        KubeadmApi::V1beta2,
        KubeadmApi::V1beta3,
        KubeadmApi::V1beta4,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1beta1 => "kubeadm.k8s.io/v1beta1",
            KubeadmApi::V1beta2 => "kubeadm.k8s.io/v1beta2",
            KubeadmApi::V1beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    /// Whether `extraArgs` is a list of `{name, value}` rather than a map.
    pub fn args_list(self) -> bool {
        self == KubeadmApi::V1beta4
    }
}

const KIND: &str = "ClusterConfiguration";
const API_SERVER: &str = "apiServer";
const EXTRA_ARGS: &str = "extraArgs";
const EXTRA_VOLUMES: &str = "extraVolumes";

/// What a ClusterConfiguration says about the API server, for `status` and drift checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfigInfo {
    pub api: KubeadmApi,
    /// `kubernetesVersion`, when it is a version (not a label such as `stable`).
    pub kubernetes_version: Option<KubeVersion>,
    /// `apiServer.extraArgs` as command-line words, `--name=value`, in order.
    pub extra_args: Vec<String>,
    /// `apiServer.extraVolumes` with a name, a hostPath and a mountPath.
    pub extra_volumes: Vec<crate::HostMount>,
}

/// Reads a ClusterConfiguration: its API version, kubernetesVersion, and the API server's
/// extra arguments and volumes. Errors as [`patch_cluster_config`] has them.
pub fn inspect_cluster_config(text: &str) -> Result<ClusterConfigInfo, PatchError> {
    let body = crate::patch::split_bom(text).1;
    let root = load(body)?;
    let doc = Doc::locate(body, &root)?;
    Ok(ClusterConfigInfo {
        api: doc.api,
        kubernetes_version: doc.kube_version,
        extra_args: doc
            .args
            .iter()
            .map(|a| format!("--{}={}", a.name, a.value_str()))
            .collect(),
        extra_volumes: doc
            .volumes
            .iter()
            .filter_map(|v| {
                Some(crate::HostMount {
                    volume: v.name.clone(),
                    host_path: v.host_path.clone()?,
                    mount_path: v.mount_path.clone()?,
                })
            })
            .collect(),
    })
}

/// Adds our flags to `apiServer.extraArgs` and our hostPath to `apiServer.extraVolumes` of
/// a kubeadm ClusterConfiguration (v1beta1 to v1beta4), keeping every other byte.
/// Idempotent; a flag set to another value is a [`PatchError::Conflict`] unless
/// `opts.force`. The version for the mode's rules is `opts.kube_version`, else the
/// document's `kubernetesVersion`.
///
/// ```
/// use patch_apiserver::{Mode, PatchOptions, patch_cluster_config, revert_cluster_config};
/// let text = "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.20.2\n";
/// let opts = PatchOptions::new(Mode::Static);
/// let patched = patch_cluster_config(text, &opts).unwrap();
/// assert!(patched.text.contains("    audit-log-path: /var/lib/k8s_audit/audit.log\n"));
/// assert_eq!(revert_cluster_config(&patched.text, &opts).unwrap().text, text);
/// ```
pub fn patch_cluster_config(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    keeping_bom(text, |body| patch_body(body, opts))
}

/// Whether the ClusterConfiguration already has everything [`patch_cluster_config`] would
/// add (`Ok(true)`): for `status`, to tell whether it and the manifest agree. Conflicts and
/// refused modes are errors, as in `patch_cluster_config`.
pub fn check_cluster_config(text: &str, opts: &PatchOptions) -> Result<bool, PatchError> {
    patch_cluster_config(text, opts).map(|o| !o.changed)
}

/// Removes what [`patch_cluster_config`] adds, by the same rule as
/// [`revert`](crate::revert): flags whose value is what some mode writes with these
/// options (our entry only, from a list flag), the rotation flags with our log path, and
/// the volume with our name and our path. `revert(patch(x)) == x` byte for byte.
pub fn revert_cluster_config(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    keeping_bom(text, |body| revert_body(body, opts))
}

fn load(text: &str) -> Result<Node, PatchError> {
    if text
        .split('\n')
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(PatchError::Unexpected {
            at: Pos::of(text, text.len()),
            expected: "a kubeadm ClusterConfiguration",
            found: "an empty document".into(),
        });
    }
    locate::load(text)
}

/// One `extraArgs` entry: a map entry (v1beta1–3) or a `{name, value}` item (v1beta4).
struct Arg<'t> {
    index: usize,
    name: String,
    /// `None` for a v1beta4 item without `value:`.
    value: Option<&'t Node>,
    /// Where errors point: the value, or the entry.
    at: usize,
}

impl Arg<'_> {
    fn value_str(&self) -> &str {
        self.value.and_then(Node::as_str).unwrap_or("")
    }
}

struct Vol<'t> {
    index: usize,
    name: String,
    host_path: Option<String>,
    mount_path: Option<String>,
    read_only: bool,
    node: &'t Node,
}

struct Doc<'t> {
    api: KubeadmApi,
    kube_version: Option<KubeVersion>,
    /// Where `kubernetesVersion` is, for errors about the version, and what it says.
    version_at: Option<usize>,
    kube_version_text: String,
    root: &'t Node,
    api_server: Option<&'t Node>,
    extra_args: Option<&'t Node>,
    extra_volumes: Option<&'t Node>,
    args: Vec<Arg<'t>>,
    volumes: Vec<Vol<'t>>,
}

fn unexpected(text: &str, off: usize, expected: &'static str, found: String) -> PatchError {
    PatchError::Unexpected {
        at: Pos::of(text, off),
        expected,
        found,
    }
}

fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar(_) if node.is_null() => "nothing (null)".to_string(),
        Kind::Scalar(s) => format!("{:?}", s.value),
        Kind::Seq(_) => "a list".into(),
        Kind::Map(_) => "a mapping".into(),
    }
}

/// The value of `key` in `map` if it is a mapping; absent is `None`, anything else an error.
fn child_map<'t>(
    text: &str,
    map: &'t Node,
    key: &str,
    expected: &'static str,
) -> Result<Option<&'t Node>, PatchError> {
    match map.as_map().and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(v) if v.as_map().is_some() => Ok(Some(v)),
        Some(v) => Err(unexpected(text, v.span.start, expected, describe(v))),
    }
}

fn child_seq<'t>(
    text: &str,
    map: &'t Node,
    key: &str,
    expected: &'static str,
) -> Result<Option<&'t Node>, PatchError> {
    match map.as_map().and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(v) if v.as_seq().is_some() => Ok(Some(v)),
        Some(v) => Err(unexpected(text, v.span.start, expected, describe(v))),
    }
}

fn scalar_of<'t>(map: &'t Node, key: &str) -> Option<&'t Node> {
    map.as_map()
        .and_then(|m| m.get(key))
        .filter(|v| v.as_scalar().is_some() && !v.is_null())
}

impl<'t> Doc<'t> {
    fn locate(text: &str, root: &'t Node) -> Result<Doc<'t>, PatchError> {
        let Some(m) = root.as_map() else {
            return Err(unexpected(
                text,
                root.span.start,
                "a kubeadm ClusterConfiguration (a mapping)",
                describe(root),
            ));
        };
        match m.get("kind") {
            Some(k) if k.as_str() == Some(KIND) => {}
            Some(k) => {
                return Err(unexpected(
                    text,
                    k.span.start,
                    "kind ClusterConfiguration",
                    format!("kind {}", describe(k)),
                ));
            }
            None => {
                return Err(unexpected(
                    text,
                    root.span.start,
                    "kind: ClusterConfiguration",
                    "no kind".into(),
                ));
            }
        }
        const API_EXPECTED: &str = "apiVersion kubeadm.k8s.io/v1beta1, v1beta2, v1beta3 or v1beta4";
        let api = match m.get("apiVersion") {
            Some(v) => KubeadmApi::ALL
                .into_iter()
                .find(|a| v.as_str() == Some(a.api_version()))
                .ok_or_else(|| {
                    unexpected(
                        text,
                        v.span.start,
                        API_EXPECTED,
                        format!("apiVersion {}", describe(v)),
                    )
                })?,
            None => {
                return Err(unexpected(
                    text,
                    root.span.start,
                    API_EXPECTED,
                    "no apiVersion".into(),
                ));
            }
        };
        let kube_version = m
            .get("kubernetesVersion")
            .and_then(Node::as_str)
            .and_then(|v| v.parse().ok());
        let version_at = m.get("kubernetesVersion").map(|v| v.span.start);
        let kube_version_text = m
            .get("kubernetesVersion")
            .and_then(Node::as_str)
            .unwrap_or("(none)")
            .to_string();
        let api_server = child_map(text, root, API_SERVER, "a mapping for apiServer")?;
        let mut doc = Doc {
            api,
            kube_version,
            version_at,
            kube_version_text,
            root,
            api_server,
            extra_args: None,
            extra_volumes: None,
            args: Vec::new(),
            volumes: Vec::new(),
        };
        let Some(server) = api_server else {
            return Ok(doc);
        };
        if api.args_list() {
            doc.extra_args = child_seq(
                text,
                server,
                EXTRA_ARGS,
                "a list of {name, value} for extraArgs (v1beta4)",
            )?;
            for (index, item) in doc
                .extra_args
                .and_then(Node::as_seq)
                .map_or(&[][..], |s| &s.items)
                .iter()
                .enumerate()
            {
                let name = scalar_of(&item.node, "name").and_then(Node::as_str);
                let (Some(_), Some(name)) = (item.node.as_map(), name) else {
                    return Err(unexpected(
                        text,
                        item.node.span.start,
                        "an extraArgs item with a name (`name: flag-name`)",
                        describe(&item.node),
                    ));
                };
                let value = item.node.as_map().and_then(|m| m.get("value"));
                if let Some(v) = value.filter(|v| v.as_scalar().is_none()) {
                    return Err(unexpected(
                        text,
                        v.span.start,
                        "a string value",
                        describe(v),
                    ));
                }
                doc.args.push(Arg {
                    index,
                    name: name.to_string(),
                    at: value.map_or(item.node.span.start, |v| v.span.start),
                    value,
                });
            }
        } else {
            doc.extra_args = child_map(
                text,
                server,
                EXTRA_ARGS,
                "a mapping of flag names for extraArgs",
            )?;
            for (index, e) in doc
                .extra_args
                .and_then(Node::as_map)
                .map_or(&[][..], |m| &m.entries)
                .iter()
                .enumerate()
            {
                let Some(name) = e.key.as_str() else {
                    return Err(unexpected(
                        text,
                        e.key.span.start,
                        "a flag name",
                        describe(&e.key),
                    ));
                };
                if e.value.as_scalar().is_none() {
                    return Err(unexpected(
                        text,
                        e.value.span.start,
                        "a string value",
                        describe(&e.value),
                    ));
                }
                doc.args.push(Arg {
                    index,
                    name: name.to_string(),
                    value: Some(&e.value),
                    at: e.value.span.start,
                });
            }
        }
        doc.extra_volumes = child_seq(
            text,
            server,
            EXTRA_VOLUMES,
            "a list of host path mounts for extraVolumes",
        )?;
        for (index, item) in doc
            .extra_volumes
            .and_then(Node::as_seq)
            .map_or(&[][..], |s| &s.items)
            .iter()
            .enumerate()
        {
            let name = scalar_of(&item.node, "name").and_then(Node::as_str);
            let (Some(_), Some(name)) = (item.node.as_map(), name) else {
                return Err(unexpected(
                    text,
                    item.node.span.start,
                    "an extraVolumes item with a name",
                    describe(&item.node),
                ));
            };
            let field = |k: &str| {
                scalar_of(&item.node, k)
                    .and_then(Node::as_str)
                    .map(str::to_string)
            };
            doc.volumes.push(Vol {
                index,
                name: name.to_string(),
                host_path: field("hostPath"),
                mount_path: field("mountPath"),
                read_only: field("readOnly").as_deref() == Some("true"),
                node: &item.node,
            });
        }
        Ok(doc)
    }

    /// Where errors about the document as a whole point.
    fn anchor(&self) -> usize {
        self.api_server.unwrap_or(self.root).span.start
    }
}

// ---------------------------------------------------------------------------------------
// Rendering new nodes in the neighbours' style.

/// A node we add; scalars are already rendered (quoted as needed).
#[derive(Debug, Clone)]
enum Val {
    Scalar(String),
    Map(Vec<(String, Val)>),
    Seq(Vec<Val>),
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Indentation step of nested block mappings.
    unit: usize,
    /// How far a block sequence's dashes sit right of its key.
    seq_indent: usize,
    /// JSON style: keys double-quoted.
    quote_keys: bool,
}

/// Whether `v` reads back as the same string when written plain (in flow context too).
fn plain_ok(v: &str, flow: bool) -> bool {
    let Some(first) = v.bytes().next() else {
        return false;
    };
    let safe = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-=+".contains(&b) || (!flow && b == b','));
    // YAML 1.1 (what kubeadm's decoder speaks) reads these as numbers, booleans or null.
    let numeric = v
        .bytes()
        .all(|b| b.is_ascii_digit() || b"._+-:".contains(&b))
        || v.as_bytes()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"0x"));
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ]
    .contains(&v.to_ascii_lowercase().as_str());
    safe && !b"-+.=".contains(&first) && !numeric && !reserved
}

/// `v` as a YAML string scalar: in `style` when given, else plain where that is safe.
fn string_scalar(v: &str, style: Option<Style>, flow: bool) -> String {
    match style {
        Some(Style::Single) => format!("'{}'", escape(v, Style::Single)),
        Some(Style::Double) => format!("\"{}\"", escape(v, Style::Double)),
        _ if plain_ok(v, flow) => v.to_string(),
        _ => format!("\"{}\"", escape(v, Style::Double)),
    }
}

/// The quotes the neighbours use by choice: those of the existing values when every one
/// that could be plain is quoted all the same (values such as `"2"` must be quoted and say
/// nothing). JSON-style documents quote everything.
fn chosen_style<'a>(
    values: impl Iterator<Item = &'a Node>,
    flow: bool,
    json: bool,
) -> Option<Style> {
    if json {
        return Some(Style::Double);
    }
    let mut chosen = None;
    for sc in values.filter_map(Node::as_scalar) {
        if !plain_ok(&sc.value, flow) {
            continue;
        }
        match sc.style {
            Style::Single | Style::Double if chosen.is_none_or(|c| c == sc.style) => {
                chosen = Some(sc.style)
            }
            _ => return None,
        }
    }
    chosen
}

fn key_text(k: &str, lay: &Layout) -> String {
    if lay.quote_keys {
        format!("\"{k}\"")
    } else {
        k.to_string()
    }
}

fn flow(v: &Val, lay: &Layout) -> String {
    match v {
        Val::Scalar(s) => s.clone(),
        Val::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", key_text(k, lay), flow(v, lay)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Val::Seq(items) => {
            let inner: Vec<String> = items.iter().map(|i| flow(i, lay)).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

/// Block lines for `key: value` with the key at column `c`.
fn entry_lines(c: usize, key: &str, v: &Val, lay: &Layout, out: &mut Vec<String>) {
    let pad = " ".repeat(c);
    let k = key_text(key, lay);
    match v {
        Val::Scalar(s) => out.push(format!("{pad}{k}: {s}")),
        Val::Map(entries) => {
            out.push(format!("{pad}{k}:"));
            for (ck, cv) in entries {
                entry_lines(c + lay.unit, ck, cv, lay, out);
            }
        }
        Val::Seq(items) => {
            out.push(format!("{pad}{k}:"));
            for item in items {
                item_lines(c + lay.seq_indent, 2, item, lay, out);
            }
        }
    }
}

/// Block lines for one sequence item, its dash at column `dash` and its content `gap`
/// columns right of it.
fn item_lines(dash: usize, gap: usize, item: &Val, lay: &Layout, out: &mut Vec<String>) {
    let content = dash + gap;
    let first = out.len();
    match item {
        Val::Map(entries) => {
            for (k, v) in entries {
                entry_lines(content, k, v, lay, out);
            }
        }
        other => out.push(format!("{}{}", " ".repeat(content), flow(other, lay))),
    }
    if let Some(l) = out.get_mut(first) {
        l.replace_range(dash..dash + 1, "-");
    }
}

/// The layout of the document: the step of its nested mappings and the offset of its
/// block sequences, from the first of each found (kubeadm writes 2 and 0).
fn layout(text: &str, doc: &Doc<'_>) -> Layout {
    fn walk(text: &str, node: &Node, unit: &mut Option<usize>, seq: &mut Option<usize>) {
        let Some(m) = node.as_map().filter(|m| !m.flow) else {
            return;
        };
        for e in &m.entries {
            let kc = col(text, e.key.span.start);
            match &e.value.kind {
                Kind::Map(cm) if !cm.flow && unit.is_none() => {
                    if let Some(f) = cm.entries.first() {
                        *unit = col(text, f.key.span.start).checked_sub(kc);
                    }
                }
                Kind::Seq(s) if !s.flow && seq.is_none() => {
                    if let Some(f) = s.items.first() {
                        *seq = col(text, f.dash).checked_sub(kc);
                    }
                }
                _ => {}
            }
            walk(text, &e.value, unit, seq);
            if let Kind::Seq(s) = &e.value.kind {
                for i in &s.items {
                    walk(text, &i.node, unit, seq);
                }
            }
        }
    }
    let (mut unit, mut seq) = (None, None);
    if let Some(s) = doc.api_server {
        walk(text, s, &mut unit, &mut seq);
    }
    walk(text, doc.root, &mut unit, &mut seq);
    let quote_keys = doc
        .root
        .as_map()
        .and_then(|m| m.entries.first())
        .and_then(|e| e.key.as_scalar())
        .is_some_and(|s| s.style == Style::Double);
    Layout {
        unit: unit.filter(|&u| u > 0).unwrap_or(2),
        seq_indent: seq.unwrap_or(0),
        quote_keys,
    }
}

fn is_flow(node: &Node) -> bool {
    match &node.kind {
        Kind::Map(m) => m.flow,
        Kind::Seq(s) => s.flow,
        Kind::Scalar(_) => false,
    }
}

/// Adds entries to a mapping (`Val::Map`) or items to a sequence (`Val::Seq`) in `node`.
fn append(text: &str, node: &Node, add: &Val, lay: &Layout) -> Result<Edit, PatchError> {
    // (start, end) of each existing member, and the rendered new ones.
    let (members, flow_new, dash_model): (Vec<(usize, usize)>, Vec<String>, Option<usize>) =
        match (&node.kind, add) {
            (Kind::Map(m), Val::Map(new)) => (
                m.entries
                    .iter()
                    .map(|e| (e.key.span.start, e.value.span.end.max(e.key.span.end)))
                    .collect(),
                new.iter()
                    .map(|(k, v)| format!("{}: {}", key_text(k, lay), flow(v, lay)))
                    .collect(),
                None,
            ),
            (Kind::Seq(s), Val::Seq(new)) => (
                s.items
                    .iter()
                    .map(|i| (i.dash, i.node.span.end.max(i.dash + 1)))
                    .collect(),
                new.iter().map(|v| flow(v, lay)).collect(),
                s.items.last().map(|i| i.dash),
            ),
            _ => return Err(PatchError::Internal("append of a mismatched node".into())),
        };
    if is_flow(node) {
        let (start, end) = (node.span.start, node.span.end);
        let Some(&(_, last_end)) = members.last() else {
            if text.get(start..end).is_some_and(|s| s == "{}" || s == "[]") {
                return Ok(Edit::insert(
                    start + 1,
                    format!(" {} ", flow_new.join(", ")),
                ));
            }
            return Ok(Edit::insert(start + 1, flow_new.join(", ")));
        };
        let last_start = members.last().map_or(start, |m| m.0);
        if line_start(text, last_start) == line_start(text, start) {
            return Ok(Edit::insert(last_end, format!(", {}", flow_new.join(", "))));
        }
        let indent = &text[line_start(text, last_start)..last_start];
        let indent = " ".repeat(indent.len());
        let sep = format!(",{}{indent}", eol_at(text, last_end));
        return Ok(Edit::insert(
            last_end,
            format!("{sep}{}", flow_new.join(&sep)),
        ));
    }
    let Some(&(first_start, _)) = members.first() else {
        return Err(PatchError::Internal("empty block collection".into()));
    };
    let last_end = members.last().map_or(first_start, |m| m.1);
    let mut lines = Vec::new();
    match add {
        Val::Map(new) => {
            let c = col(text, first_start);
            for (k, v) in new {
                entry_lines(c, k, v, lay, &mut lines);
            }
        }
        Val::Seq(new) => {
            let s = node.as_seq();
            let last = s.and_then(|s| s.items.last());
            let dash = col(text, dash_model.unwrap_or(first_start));
            let gap = last
                .filter(|i| {
                    !i.node.is_null()
                        && line_start(text, i.dash) == line_start(text, i.node.span.start)
                })
                .map_or(2, |i| col(text, i.node.span.start) - dash);
            // Items written as `- {a: b}` get company in the same style.
            let flow_items = last.is_some_and(|i| is_flow(&i.node));
            for v in new {
                if flow_items {
                    lines.push(format!(
                        "{}-{}{}",
                        " ".repeat(dash),
                        " ".repeat(gap - 1),
                        flow(v, lay)
                    ));
                } else {
                    item_lines(dash, gap, v, lay, &mut lines);
                }
            }
        }
        Val::Scalar(_) => return Err(PatchError::Internal("append of a scalar".into())),
    }
    let ls = line_start(text, first_start);
    if !text[ls..first_start].bytes().all(|b| b == b' ') {
        return Err(unexpected(
            text,
            first_start,
            "a mapping or list that starts its own line",
            "text before it".into(),
        ));
    }
    Ok(lines_after(text, last_end, &lines))
}

// ---------------------------------------------------------------------------------------
// patch

fn flag_name(spec: &FlagSpec) -> &'static str {
    spec.name.trim_start_matches('-')
}

fn wanted(spec: &FlagSpec) -> String {
    match &spec.want {
        Want::Value(v) => v.clone(),
        Want::Switch => "true".into(),
        Want::Entry { key, value } => format!("{key}={value}"),
    }
}

/// Whether `node` sits inside a flow collection, where plain scalars end at `,`.
fn in_flow(container: Option<&Node>) -> bool {
    container.is_some_and(is_flow)
}

/// Replaces a scalar's whole text with `value`, in its quoting style where it can.
fn replace_scalar(text: &str, node: &Node, value: &str, flow: bool) -> Edit {
    let style = node
        .as_scalar()
        .map(|s| s.style)
        .filter(|s| matches!(s, Style::Single | Style::Double) && !node.is_null());
    let mut rendered = string_scalar(value, style, flow);
    // `key:` with nothing after it: the value needs its space.
    if node.is_null() && !text[..node.span.start].ends_with(' ') {
        rendered.insert(0, ' ');
    }
    Edit {
        start: node.span.start,
        end: node.span.end,
        text: rendered,
    }
}

/// Appends `suffix` to a string scalar, keeping its style when it can.
fn append_to_scalar(text: &str, node: &Node, suffix: &str, flow: bool) -> Edit {
    match node.as_scalar() {
        Some(sc)
            if !node.is_null()
                && match sc.style {
                    Style::Single | Style::Double => true,
                    Style::Plain => plain_ok(&format!("{}{suffix}", sc.value), flow),
                    Style::Literal | Style::Folded => false,
                } =>
        {
            Edit::insert(sc.source_offset(sc.value.len()), escape(suffix, sc.style))
        }
        // A plain value that cannot take the suffix as it is (a comma in a flow collection)
        // is quoted, and our comma written as `\x2C`: the mark tells revert that the quotes
        // are ours too.
        Some(sc) if sc.style == Style::Plain && !node.is_null() && suffix.starts_with(',') => {
            Edit {
                start: node.span.start,
                end: node.span.end,
                text: format!(
                    "\"{}{OUR_COMMA}{}\"",
                    escape(&sc.value, Style::Double),
                    escape(&suffix[1..], Style::Double)
                ),
            }
        }
        Some(sc) => replace_scalar(text, node, &format!("{}{suffix}", sc.value), flow),
        None => replace_scalar(text, node, suffix, flow),
    }
}

/// The comma `append_to_scalar` writes when it had to quote a plain value.
const OUR_COMMA: &str = "\\x2C";

fn patch_body(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    let root = load(text)?;
    let doc = Doc::locate(text, &root)?;
    let at = Pos::of(text, doc.anchor());
    opts.validate(at, true)?;
    let mut notes = Vec::new();
    // The manifest's patch notes an override or a missing version already, in the words of
    // the image tag; here the version only picks the rules.
    let version = opts.kube_version.or(doc.kube_version);
    if opts.mode.dynamic() {
        let at = match (opts.kube_version, doc.version_at) {
            (None, Some(off)) => Pos::of(text, off),
            _ => at,
        };
        match version {
            Some(v) if v < DYNAMIC_SINCE || v >= DYNAMIC_REMOVED => {
                return Err(PatchError::ModeRefused {
                    at,
                    mode: opts.mode,
                    version: v,
                    reason: if v < DYNAMIC_SINCE {
                        "dynamic audit configuration arrived in 1.13"
                    } else {
                        "dynamic audit configuration was removed in 1.19"
                    },
                });
            }
            Some(_) => {}
            None => {
                return Err(PatchError::VersionUnknown {
                    at,
                    mode: opts.mode,
                    image: format!("kubernetesVersion: {}", doc.kube_version_text),
                });
            }
        }
    }
    let specs = flags::specs(opts, version.as_ref());
    let lay = layout(text, &doc);
    let args_flow = in_flow(doc.extra_args);
    let value_style = chosen_style(
        doc.args.iter().filter_map(|a| a.value),
        args_flow,
        lay.quote_keys,
    );
    let mut edits = Vec::new();
    let mut new_args: Vec<(String, String)> = Vec::new();
    for spec in &specs {
        let name = flag_name(spec);
        let existing: Vec<&Arg<'_>> = doc.args.iter().filter(|a| a.name == name).collect();
        let conflict = |a: &Arg<'_>, existing: String| PatchError::Conflict {
            at: Pos::of(text, a.at),
            flag: spec.name.to_string(),
            existing,
            ours: spec.shown(),
        };
        let Some(last) = existing.last() else {
            new_args.push((name.to_string(), wanted(spec)));
            continue;
        };
        match &spec.want {
            Want::Value(_) | Want::Switch => {
                let ours = wanted(spec);
                let mut replaced = false;
                for a in &existing {
                    let have = a.value_str();
                    if have == ours {
                        continue;
                    }
                    if !opts.force {
                        return Err(conflict(a, have.to_string()));
                    }
                    edits.push(match a.value {
                        Some(v) => replace_scalar(text, v, &ours, args_flow),
                        None => {
                            return Err(conflict(a, "(no value)".into()));
                        }
                    });
                    notes.push(Note::Replaced {
                        at: Pos::of(text, a.at),
                        flag: spec.name.to_string(),
                        old: have.to_string(),
                    });
                    replaced = true;
                }
                if !replaced {
                    notes.push(Note::AlreadyPresent {
                        flag: spec.render(),
                    });
                }
            }
            Want::Entry { key, value } => {
                let mut present = false;
                for a in &existing {
                    let list = a.value_str();
                    let items = entries(list);
                    let have = match entry_state(&items, key, value) {
                        EntryState::Absent => continue,
                        EntryState::Ours => {
                            present = true;
                            continue;
                        }
                        EntryState::Other(have) => have,
                    };
                    if !opts.force {
                        return Err(conflict(a, have));
                    }
                    let merged: Vec<String> = items
                        .iter()
                        .map(|(k, v)| format!("{k}={}", if k == key { value } else { v }))
                        .collect();
                    if let Some(v) = a.value {
                        edits.push(replace_scalar(text, v, &merged.join(","), args_flow));
                    }
                    notes.push(Note::Replaced {
                        at: Pos::of(text, a.at),
                        flag: format!("{} entry {key}", spec.name),
                        old: have,
                    });
                    present = true;
                }
                if present {
                    notes.push(Note::AlreadyPresent {
                        flag: spec.render(),
                    });
                } else {
                    let entry = format!("{key}={value}");
                    // Always `,entry`, even after an empty value: the API server skips
                    // empty items, and revert can give the empty value back exactly.
                    let Some(v) = last.value else {
                        return Err(conflict(last, "(no value)".into()));
                    };
                    edits.push(append_to_scalar(text, v, &format!(",{entry}"), args_flow));
                    notes.push(Note::Merged {
                        flag: spec.name,
                        entry,
                    });
                }
            }
        }
    }

    let mut new_volume = None;
    if opts.mode.logs() {
        new_volume = plan_volume(text, &doc, opts, &mut notes)?;
    }

    // The new nodes, in the style of the collections they join.
    let name_style = chosen_style(
        doc.extra_args
            .and_then(Node::as_seq)
            .map_or(&[][..], |s| &s.items)
            .iter()
            .filter_map(|i| scalar_of(&i.node, "name")),
        args_flow,
        lay.quote_keys,
    );
    let args_val = |flow: bool| -> Option<Val> {
        if new_args.is_empty() {
            return None;
        }
        let render = |v: &str| Val::Scalar(string_scalar(v, value_style, flow));
        Some(if doc.api.args_list() {
            Val::Seq(
                new_args
                    .iter()
                    .map(|(n, v)| {
                        Val::Map(vec![
                            (
                                "name".into(),
                                Val::Scalar(string_scalar(n, name_style, true)),
                            ),
                            ("value".into(), render(v)),
                        ])
                    })
                    .collect(),
            )
        } else {
            Val::Map(
                new_args
                    .iter()
                    .map(|(n, v)| (n.clone(), render(v)))
                    .collect(),
            )
        })
    };
    let volume_val = |flow: bool| -> Option<Val> {
        let dir = new_volume.as_deref()?;
        let style = chosen_style(
            doc.volumes
                .iter()
                .filter_map(|v| scalar_of(v.node, "hostPath")),
            in_flow(doc.extra_volumes),
            lay.quote_keys,
        );
        let s = |v: &str| Val::Scalar(string_scalar(v, style, flow));
        let fields = [
            ("hostPath", s(dir)),
            ("mountPath", s(dir)),
            ("name", s(VOLUME_NAME)),
            ("pathType", s("DirectoryOrCreate")),
            ("readOnly", Val::Scalar("false".into())),
        ];
        // In the key order of the user's own volumes; kubeadm writes them sorted.
        let order: Vec<String> = doc
            .volumes
            .first()
            .and_then(|v| v.node.as_map())
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|e| e.key.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut fields: Vec<(String, Val)> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        fields.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
        Some(Val::Seq(vec![Val::Map(fields)]))
    };

    match doc.api_server {
        None => {
            let flow = is_flow(doc.root);
            let mut server = Vec::new();
            if let Some(a) = args_val(flow) {
                server.push((EXTRA_ARGS.to_string(), a));
            }
            if let Some(v) = volume_val(flow) {
                server.push((EXTRA_VOLUMES.to_string(), v));
            }
            if !server.is_empty() {
                let add = Val::Map(vec![(API_SERVER.to_string(), Val::Map(server))]);
                edits.push(append(text, doc.root, &add, &lay)?);
            }
        }
        Some(server) => {
            let mut new_keys = Vec::new();
            for (key, existing, make) in [
                (
                    EXTRA_ARGS,
                    doc.extra_args,
                    &args_val as &dyn Fn(bool) -> Option<Val>,
                ),
                (EXTRA_VOLUMES, doc.extra_volumes, &volume_val),
            ] {
                match existing {
                    Some(node) => {
                        if let Some(v) = make(is_flow(node)) {
                            edits.push(append(text, node, &v, &lay)?);
                        }
                    }
                    None => {
                        if let Some(v) = make(is_flow(server)) {
                            new_keys.push((key.to_string(), v));
                        }
                    }
                }
            }
            if !new_keys.is_empty() {
                edits.push(append(text, server, &Val::Map(new_keys), &lay)?);
            }
        }
    }
    let out = edit::apply(text, edits)?;
    verify(&out, opts, &specs)?;
    Ok(Outcome {
        changed: out != text,
        text: out,
        notes,
    })
}

/// Our volume's path when it must be added; `None` when the directory is already mounted.
fn plan_volume(
    text: &str,
    doc: &Doc<'_>,
    opts: &PatchOptions,
    notes: &mut Vec<Note>,
) -> Result<Option<String>, PatchError> {
    let dir = opts.dir();
    let is_dir = |p: &Option<String>| p.as_deref().map(norm) == Some(dir);
    let read_only = |v: &Vol<'_>| PatchError::ReadOnlyMount {
        at: Pos::of(text, v.node.span.start),
        file: crate::AuditFile::Log.path(opts),
        volume: v.name.clone(),
        path: v.mount_path.clone().unwrap_or_default(),
    };
    if let Some(v) = doc.volumes.iter().find(|v| v.name == VOLUME_NAME) {
        if !(is_dir(&v.host_path) && is_dir(&v.mount_path)) {
            return Err(PatchError::VolumeNameTaken {
                at: Pos::of(text, v.node.span.start),
                name: VOLUME_NAME.into(),
                existing: v.host_path.clone().map_or_else(
                    || "a volume without hostPath".to_string(),
                    |p| {
                        format!(
                            "hostPath {p} mounted at {}",
                            v.mount_path.as_deref().unwrap_or("(none)")
                        )
                    },
                ),
                wanted: dir.to_string(),
            });
        }
        if v.read_only {
            return Err(read_only(v));
        }
        return Ok(None);
    }
    if let Some(v) = doc.volumes.iter().find(|v| is_dir(&v.mount_path)) {
        if !is_dir(&v.host_path) {
            return Err(PatchError::MountPathTaken {
                at: Pos::of(text, v.node.span.start),
                path: dir.to_string(),
                volume: v.name.clone(),
            });
        }
        if v.read_only {
            return Err(read_only(v));
        }
        notes.push(Note::DirAlreadyMounted {
            volume: v.name.clone(),
        });
        return Ok(None);
    }
    Ok(Some(dir.to_string()))
}

/// Re-reads the result: it must parse and carry every flag and the directory's mount.
fn verify(out: &str, opts: &PatchOptions, specs: &[FlagSpec]) -> Result<(), PatchError> {
    let root = locate::load(out)
        .map_err(|e| PatchError::Internal(format!("the result does not parse: {e}")))?;
    let doc = Doc::locate(out, &root).map_err(|e| {
        PatchError::Internal(format!("the result is not a ClusterConfiguration: {e}"))
    })?;
    for spec in specs {
        let name = flag_name(spec);
        let ok = doc.args.iter().any(|a| {
            a.name == name
                && match &spec.want {
                    Want::Value(v) => a.value_str() == v,
                    Want::Switch => a.value_str() == "true",
                    Want::Entry { key, value } => entries(a.value_str())
                        .iter()
                        .any(|(k, v)| k == key && v == value),
                }
        });
        if !ok {
            return Err(PatchError::Internal(format!(
                "{} is missing from the result",
                spec.render()
            )));
        }
    }
    let dir = opts.dir();
    if opts.mode.logs()
        && !doc.volumes.iter().any(|v| {
            v.host_path.as_deref().map(norm) == Some(dir)
                && v.mount_path.as_deref().map(norm) == Some(dir)
                && !v.read_only
        })
    {
        return Err(PatchError::Internal(format!(
            "the result does not mount {dir}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// revert

fn revert_body(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    let root = load(text)?;
    let doc = Doc::locate(text, &root)?;
    opts.validate(Pos::of(text, doc.anchor()), false)?;
    let specs = flags::all_specs(opts);
    let args_flow = in_flow(doc.extra_args);
    let mut notes = Vec::new();
    let mut edits = Vec::new();
    let mut remove_args = Vec::new();
    let mut log_removed = false;
    for a in &doc.args {
        let word = format!("--{}={}", a.name, a.value_str());
        let Some(spec) = claim(&word, &specs) else {
            continue;
        };
        match &spec.want {
            Want::Entry { key, value } => {
                let entry = format!(",{key}={value}");
                let list = a.value_str();
                let kept: Vec<String> = entries(list)
                    .into_iter()
                    .filter(|(k, v)| !(k == key && v == value))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let sc = a.value.and_then(Node::as_scalar);
                match sc {
                    // Undo our append exactly while the value still ends with it.
                    Some(sc)
                        if list.ends_with(&entry)
                            && matches!(sc.style, Style::Plain | Style::Single | Style::Double) =>
                    {
                        let n = sc.value.len();
                        let start = sc.source_offset(n - entry.len());
                        let node = a.value.unwrap_or(doc.root);
                        if sc.style == Style::Double && text[start..].starts_with(OUR_COMMA) {
                            // We quoted a plain value to append: it goes back to plain.
                            edits.push(Edit {
                                start: node.span.start,
                                end: node.span.end,
                                text: list[..n - entry.len()].to_string(),
                            });
                        } else {
                            edits.push(Edit::delete(start, sc.source_offset(n)));
                        }
                    }
                    _ if kept.is_empty() => {
                        remove_args.push(a.index);
                        notes.push(Note::EmptiedFlagRemoved { flag: spec.name });
                    }
                    _ => {
                        if let Some(v) = a.value {
                            edits.push(replace_scalar(text, v, &kept.join(","), args_flow));
                        }
                    }
                }
            }
            Want::Value(_) | Want::Switch => {
                remove_args.push(a.index);
                log_removed |= spec.name == flags::LOG_PATH;
            }
        }
    }
    if log_removed {
        for a in &doc.args {
            if flags::ROTATION_FLAGS.contains(&format!("--{}", a.name).as_str())
                && !remove_args.contains(&a.index)
            {
                remove_args.push(a.index);
            }
        }
    }
    remove_args.sort_unstable();
    let mut remove_vols = Vec::new();
    for v in doc.volumes.iter().filter(|v| v.name == VOLUME_NAME) {
        if v.host_path.as_deref().map(norm) == Some(opts.dir()) {
            remove_vols.push(v.index);
        } else {
            notes.push(Note::ForeignVolumeKept {
                path: v.host_path.clone().unwrap_or_default(),
            });
        }
    }
    if let Some(server) = doc.api_server {
        edits.extend(remove_parts(
            text,
            &doc,
            server,
            &[
                (EXTRA_ARGS, doc.extra_args, remove_args),
                (EXTRA_VOLUMES, doc.extra_volumes, remove_vols),
            ],
        )?);
    }
    let out = edit::apply(text, edits)?;
    let back = locate::load(&out)
        .map_err(|e| PatchError::Internal(format!("the result does not parse: {e}")))?;
    Doc::locate(&out, &back).map_err(|e| {
        PatchError::Internal(format!("the result is not a ClusterConfiguration: {e}"))
    })?;
    Ok(Outcome {
        changed: out != text,
        text: out,
        notes,
    })
}

fn members(node: &Node) -> usize {
    match &node.kind {
        Kind::Map(m) => m.entries.len(),
        Kind::Seq(s) => s.items.len(),
        Kind::Scalar(_) => 0,
    }
}

/// The (start, end) of a flow collection's first and last member.
fn member_bounds(node: &Node) -> Option<(usize, usize)> {
    match &node.kind {
        Kind::Map(m) => Some((
            m.entries.first()?.key.span.start,
            m.entries
                .last()
                .map(|e| e.value.span.end.max(e.key.span.end))?,
        )),
        Kind::Seq(s) => Some((
            s.items.first()?.dash,
            s.items.last().map(|i| i.node.span.end)?,
        )),
        Kind::Scalar(_) => None,
    }
}

/// What emptying a container means: its key goes (a block, or a tight flow collection we
/// created), or it goes back to `{}`/`[]` (a padded one we filled). `None`: other flow
/// text, whose members are deleted one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emptied {
    DropKey,
    Unpad,
}

fn when_emptied(text: &str, node: &Node) -> Option<Emptied> {
    if !is_flow(node) {
        return Some(Emptied::DropKey);
    }
    let (start, end) = (node.span.start, node.span.end);
    let (first, last) = member_bounds(node)?;
    if first == start + 1 && last + 1 == end {
        return Some(Emptied::DropKey);
    }
    if first == start + 2
        && last + 2 == end
        && text.get(start + 1..start + 2) == Some(" ")
        && text.get(end - 2..end - 1) == Some(" ")
    {
        return Some(Emptied::Unpad);
    }
    None
}

fn delete_members(text: &str, node: &Node, indexes: &[usize]) -> Result<Vec<Edit>, PatchError> {
    match &node.kind {
        Kind::Map(_) => edit::delete_entries(text, node, indexes),
        Kind::Seq(_) => edit::delete_items(text, node, indexes),
        Kind::Scalar(_) => Ok(Vec::new()),
    }
}

fn key_index(map: &Node, key: &str) -> Option<usize> {
    map.as_map()?
        .entries
        .iter()
        .position(|e| e.key.as_str() == Some(key))
}

/// The source ranges of members `indexes` of a block mapping or sequence.
fn member_spans(node: &Node, indexes: &[usize]) -> Vec<(usize, usize)> {
    let spans: Vec<(usize, usize)> = match &node.kind {
        Kind::Map(m) => m
            .entries
            .iter()
            .map(|e| (e.key.span.start, e.value.span.end.max(e.key.span.end)))
            .collect(),
        Kind::Seq(q) => q
            .items
            .iter()
            .map(|i| (i.dash, i.node.span.end.max(i.dash + 1)))
            .collect(),
        Kind::Scalar(_) => Vec::new(),
    };
    indexes
        .iter()
        .filter_map(|&i| spans.get(i).copied())
        .collect()
}

/// Whole lines to delete (block members) and other edits (in flow collections).
#[derive(Default)]
struct Removals {
    lines: Vec<(usize, usize)>,
    edits: Vec<Edit>,
}

impl Removals {
    fn members(&mut self, text: &str, node: &Node, indexes: &[usize]) -> Result<(), PatchError> {
        if is_flow(node) {
            self.edits.extend(delete_members(text, node, indexes)?);
        } else {
            self.lines.extend(member_spans(node, indexes));
        }
        Ok(())
    }

    /// Neighbouring lines go as one block, even from different collections: at the end of a
    /// CRLF file without a final line break the last line takes the `\r\n` before it,
    /// which the deletion of the line before it would take as well.
    fn into_edits(mut self, text: &str) -> Result<Vec<Edit>, PatchError> {
        self.lines.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (start, end) in self.lines {
            match merged.last_mut() {
                Some(last)
                    if start <= last.1
                        || line_start(text, start) == crate::yaml::line_end(text, last.1) + 1 =>
                {
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        for (start, end) in merged {
            self.edits.push(edit::delete_lines(text, start, end)?);
        }
        Ok(self.edits)
    }
}

/// Removes members of `apiServer`'s containers; a container left empty goes by
/// [`when_emptied`], and so does `apiServer` when all of its keys go.
fn remove_parts(
    text: &str,
    doc: &Doc<'_>,
    server: &Node,
    parts: &[(&str, Option<&Node>, Vec<usize>)],
) -> Result<Vec<Edit>, PatchError> {
    let mut out = Removals::default();
    let mut drop_keys = Vec::new();
    for (key, node, indexes) in parts {
        let Some(node) = node else { continue };
        if indexes.is_empty() {
            continue;
        }
        if indexes.len() < members(node) {
            out.members(text, node, indexes)?;
            continue;
        }
        match when_emptied(text, node) {
            Some(Emptied::DropKey) => {
                if let Some(i) = key_index(server, key) {
                    drop_keys.push(i);
                }
            }
            Some(Emptied::Unpad) => {
                out.edits
                    .push(Edit::delete(node.span.start + 1, node.span.end - 1));
            }
            None => out.members(text, node, indexes)?,
        }
    }
    drop_keys.sort_unstable();
    if !drop_keys.is_empty() && drop_keys.len() == members(server) {
        match when_emptied(text, server) {
            Some(Emptied::DropKey) => {
                if let Some(i) = key_index(doc.root, API_SERVER) {
                    out.members(text, doc.root, &[i])?;
                    return out.into_edits(text);
                }
            }
            Some(Emptied::Unpad) => {
                out.edits
                    .push(Edit::delete(server.span.start + 1, server.span.end - 1));
                return out.into_edits(text);
            }
            None => {}
        }
    }
    if !drop_keys.is_empty() {
        out.members(text, server, &drop_keys)?;
    }
    out.into_edits(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;

    const V1BETA2: &str = "apiServer:\n  extraArgs:\n    authorization-mode: Node,RBAC\n  timeoutForControlPlane: 4m0s\napiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.20.2\n";

    fn round_trip(text: &str, mode: Mode) -> String {
        let o = PatchOptions::new(mode);
        let p = patch_cluster_config(text, &o).unwrap();
        assert!(p.changed);
        let again = patch_cluster_config(&p.text, &o).unwrap();
        assert_eq!(again.text, p.text, "idempotent");
        assert!(!again.changed);
        assert_eq!(revert_cluster_config(&p.text, &o).unwrap().text, text);
        p.text
    }

    #[test]
    fn map_form_appends_to_extra_args() {
        let out = round_trip(V1BETA2, Mode::Static);
        assert!(out.starts_with("apiServer:\n  extraArgs:\n    authorization-mode: Node,RBAC\n    audit-log-path: /var/lib/k8s_audit/audit.log\n"), "{out}");
        assert!(out.contains("  timeoutForControlPlane: 4m0s\n  extraVolumes:\n  - hostPath: /var/lib/k8s_audit\n    mountPath: /var/lib/k8s_audit\n    name: k8s-audit\n    pathType: DirectoryOrCreate\n    readOnly: false\napiVersion"), "{out}");
    }

    #[test]
    fn flow_containers_are_filled_and_emptied_back() {
        for text in [
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer: {}\n",
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer: {certSANs: [a]}\n",
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n  extraArgs: {}\n  extraVolumes: []\n",
            "{\"apiVersion\": \"kubeadm.k8s.io/v1beta3\", \"kind\": \"ClusterConfiguration\"}",
            "apiVersion: kubeadm.k8s.io/v1beta3\r\nkind: ClusterConfiguration\r\napiServer:\r\n  extraArgs:\r\n    v: \"2\"\r\n",
        ] {
            let out = round_trip(text, Mode::Static);
            serde_norway::from_str::<serde_norway::Value>(&out).unwrap();
        }
    }

    /// Found by the property test: a plain list value in a flow mapping is quoted to take
    /// our comma, and revert takes the quotes away again.
    #[test]
    fn a_plain_list_value_in_flow_style_comes_back_plain() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta1\nkind: ClusterConfiguration\nkubernetesVersion: v1.13.5\napiServer: {extraArgs: {runtime-config: api/all=true, feature-gates: A=true}}";
        let out = round_trip(text, Mode::Dynamic);
        assert!(
            out.contains(
                "runtime-config: \"api/all=true\\x2Cauditregistration.k8s.io/v1alpha1=true\""
            ),
            "{out}"
        );
        let v: serde_norway::Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(
            v["apiServer"]["extraArgs"]["feature-gates"].as_str(),
            Some("A=true,DynamicAuditing=true")
        );
    }

    /// Found by the property test: at the end of a CRLF text without a final line break, our
    /// list items and our key were deleted separately and overlapped.
    #[test]
    fn neighbouring_removals_at_the_end_of_a_crlf_text_are_one() {
        for text in [
            "apiVersion: kubeadm.k8s.io/v1beta4\r\nkind: ClusterConfiguration\r\napiServer:\r\n  extraArgs:\r\n  - name: authorization-mode\r\n    value: Node,RBAC",
            "apiVersion: kubeadm.k8s.io/v1beta1\r\nkind: ClusterConfiguration\r\napiServer:\r\n  timeoutForControlPlane: 4m0s",
        ] {
            round_trip(text, Mode::Static);
        }
    }

    #[test]
    fn values_that_yaml_would_not_read_as_strings_are_quoted() {
        for (v, plain) in [
            ("/var/lib/k8s_audit/audit.log", true),
            ("5s", true),
            ("30", false),
            ("true", false),
            ("Off", false),
            ("1.5", false),
            ("0x1f", false),
            ("", false),
            ("-x", false),
            ("a: b", false),
            ("éa", false),
            ("0xé", false),
            ("€a", false),
        ] {
            assert_eq!(plain_ok(v, false), plain, "{v}");
        }
    }

    #[test]
    fn dynamic_merges_into_list_flags() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta1\nkind: ClusterConfiguration\nkubernetesVersion: v1.14.0\napiServer:\n  extraArgs:\n    feature-gates: A=true\n    runtime-config: \"\"\n";
        let out = round_trip(text, Mode::Dynamic);
        assert!(
            out.contains("feature-gates: A=true,DynamicAuditing=true\n"),
            "{out}"
        );
        assert!(
            out.contains("runtime-config: \",auditregistration.k8s.io/v1alpha1=true\"\n"),
            "{out}"
        );
        assert!(
            out.contains("audit-dynamic-configuration: \"true\"\n"),
            "{out}"
        );
        let o = PatchOptions::new(Mode::Dynamic);
        let label = text.replace("v1.14.0", "stable-1");
        assert_eq!(
            patch_cluster_config(&label, &o).unwrap_err().to_string(),
            "3:20: mode dynamic needs the Kubernetes version and the image \"kubernetesVersion: stable-1\" has no version tag; pass --kube-version"
        );
        let late = text.replace("v1.14.0", "v1.20.2");
        assert!(matches!(
            patch_cluster_config(&late, &o),
            Err(PatchError::ModeRefused { .. })
        ));
    }

    #[test]
    fn refusals_point_at_the_offending_text() {
        let o = PatchOptions::new(Mode::Static);
        for (text, want) in [
            (
                "apiVersion: kubeadm.k8s.io/v1beta2\nkind: InitConfiguration\n",
                "2:7: expected kind ClusterConfiguration, found kind \"InitConfiguration\"",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta9\nkind: ClusterConfiguration\n",
                "1:13: expected apiVersion",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n    v: \"2\"\n",
                "5:5: expected a list of {name, value}",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n    audit-log-path: /x\n",
                "5:21: --audit-log-path is already set to \"/x\"",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n",
                "3:11: expected a mapping for apiServer",
            ),
            (
                "",
                "expected a kubeadm ClusterConfiguration, found an empty document",
            ),
            (
                "- a\n",
                "1:1: expected a kubeadm ClusterConfiguration (a mapping)",
            ),
            ("a: [\n", "not valid YAML"),
        ] {
            let e = patch_cluster_config(text, &o).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
