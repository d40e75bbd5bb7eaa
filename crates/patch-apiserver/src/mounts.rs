//! Our volume and mount: whether the files our flags name are already mounted from
//! the node, collisions by name and by path, and a new pair in the manifest's style.

use crate::edit::{self, Edit, New};
use crate::error::{PatchError, Pos};
use crate::flags;
use crate::locate::{Mount, Site};
use crate::yaml::{Node, Style, col};
use crate::{Note, PatchOptions, VOLUME_NAME};

/// `p` without trailing slashes (`/` stays `/`).
pub(crate) fn norm(p: &str) -> &str {
    match p.trim_end_matches('/') {
        "" => "/",
        d => d,
    }
}

/// Files our flags reference, with the flag naming each.
pub(crate) fn referenced_files(opts: &PatchOptions) -> Vec<(&'static str, String)> {
    crate::audit_files(opts)
        .into_iter()
        .map(|f| (f.flag(), f.path(opts)))
        .collect()
}

/// Whether `file` is inside a mount whose hostPath volume has the same path, so the
/// file we write on the node is the file the API server reads.
pub(crate) fn covered(site: &Site<'_>, file: &str) -> Option<String> {
    site.mount_list.iter().find_map(|m| {
        let v = site.volume_list.iter().find(|v| v.name == m.name)?;
        let mp = norm(&m.mount_path);
        let inside = mp == "/"
            || file
                .strip_prefix(mp)
                .is_some_and(|rest| rest.starts_with('/'));
        (inside && v.host_path.as_deref().map(norm) == Some(mp)).then(|| m.name.clone())
    })
}

/// The mount the container sees `file` through: the deepest mount path holding it.
pub(crate) fn innermost<'s, 't>(site: &'s Site<'t>, file: &str) -> Option<&'s Mount<'t>> {
    site.mount_list
        .iter()
        .filter(|m| {
            let mp = norm(&m.mount_path);
            mp == "/"
                || file
                    .strip_prefix(mp)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| norm(&m.mount_path).len())
}

/// The audit log must not land on a read-only mount: the API server could not write it.
pub(crate) fn read_only_log(
    text: &str,
    site: &Site<'_>,
    opts: &PatchOptions,
) -> Result<(), PatchError> {
    if !opts.mode.logs() {
        return Ok(());
    }
    let file = flags::log_file(opts);
    match innermost(site, &file).filter(|m| m.read_only) {
        Some(m) => Err(PatchError::ReadOnlyMount {
            at: Pos::of(text, m.node.span.start),
            file,
            volume: m.name.clone(),
            path: m.mount_path.clone(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn mount_edits(
    text: &str,
    site: &Site<'_>,
    opts: &PatchOptions,
    notes: &mut Vec<Note>,
) -> Result<Vec<Edit>, PatchError> {
    let dir = opts.dir();
    let files = referenced_files(opts);
    let covering: Vec<Option<String>> = files.iter().map(|(_, f)| covered(site, f)).collect();
    if covering.iter().all(Option::is_some) {
        // No mount of ours: the log goes where the existing mounts say (checked here, so the
        // error points into the input; `patch` checks the result again).
        read_only_log(text, site, opts)?;
        if let Some(Some(v)) = covering
            .first()
            .filter(|v| v.as_deref() != Some(VOLUME_NAME))
        {
            notes.push(Note::DirAlreadyMounted { volume: v.clone() });
        }
        return Ok(Vec::new());
    }
    if let Some(m) = site.mount_list.iter().find(|m| norm(&m.mount_path) == dir) {
        return Err(PatchError::MountPathTaken {
            at: Pos::of(text, m.node.span.start),
            path: dir.to_string(),
            volume: m.name.clone(),
        });
    }
    if let Some(m) = site.mount_list.iter().find(|m| m.name == VOLUME_NAME) {
        return Err(PatchError::VolumeNameTaken {
            at: Pos::of(text, m.node.span.start),
            name: VOLUME_NAME.to_string(),
            existing: format!("a mount at {}", m.mount_path),
            wanted: dir.to_string(),
        });
    }
    let ours = site.volume_list.iter().find(|v| v.name == VOLUME_NAME);
    if let Some(v) = ours
        && v.host_path.as_deref().map(norm) != Some(dir)
    {
        return Err(PatchError::VolumeNameTaken {
            at: Pos::of(text, v.node.span.start),
            name: VOLUME_NAME.to_string(),
            existing: v.host_path.as_ref().map_or_else(
                || "a volume that is not a hostPath".into(),
                |p| format!("hostPath {p}"),
            ),
            wanted: dir.to_string(),
        });
    }
    let json = site.shape == crate::Shape::Json;
    let seq_indent = seq_indent(text, site);
    let mut edits = Vec::new();

    let name_first = |list: Option<&Node>| {
        list.and_then(Node::as_seq)
            .and_then(|s| s.items.first())
            .and_then(|i| i.node.as_map())
            .and_then(|m| m.entries.first())
            .and_then(|e| e.key.as_str())
            == Some("name")
    };
    let named = |first: bool, mut rest: Vec<(&'static str, New)>| {
        let name = ("name", New::Str(VOLUME_NAME.to_string()));
        if first {
            rest.insert(0, name);
        } else {
            rest.push(name);
        }
        New::Map(rest)
    };
    let mount = named(
        name_first(site.mounts),
        vec![("mountPath", New::Str(dir.to_string()))],
    );
    edits.push(match site.mounts {
        Some(list) => append_ours(text, site.container, list, mount, 2)?,
        None => edit::add_key(
            text,
            site.container,
            "volumeMounts",
            &[mount],
            json,
            seq_indent,
            2,
        )?,
    });
    if ours.is_none() {
        let host = New::Map(vec![
            ("path", New::Str(dir.to_string())),
            ("type", New::Str("DirectoryOrCreate".into())),
        ]);
        let volume = named(name_first(site.volumes), vec![("hostPath", host)]);
        let unit = map_unit(text, site);
        edits.push(match site.volumes {
            Some(list) => append_ours(text, site.spec, list, volume, unit)?,
            None => edit::add_key(
                text,
                site.spec,
                "volumes",
                &[volume],
                json,
                seq_indent,
                unit,
            )?,
        });
    }
    Ok(edits)
}

/// Appends our volume or mount to an existing list of `parent`. Into a tight `[]` of a
/// flow mapping (JSON) it goes padded, as `[ item ]`: `add_key` writes a new key there as
/// `[item]`, and `revert` must tell the two apart to give back `[]` or no key at all.
fn append_ours(
    text: &str,
    parent: &Node,
    list: &Node,
    item: New,
    unit: usize,
) -> Result<Edit, PatchError> {
    let mut e = edit::append_items(text, list, &[item], Style::Plain, unit)?;
    let tight_empty = text.get(list.span.start..list.span.end) == Some("[]");
    if tight_empty && parent.as_map().is_some_and(|m| m.flow) {
        e.text = format!(" {} ", e.text);
    }
    Ok(e)
}

/// How far `containers:` items' dashes sit right of the key (0 for kubeadm, 2 for others).
fn seq_indent(text: &str, site: &Site<'_>) -> usize {
    let key = site
        .spec
        .as_map()
        .and_then(|m| m.entry("containers"))
        .map(|e| col(text, e.key.span.start));
    let dash = site
        .containers
        .as_seq()
        .filter(|s| !s.flow)
        .and_then(|s| s.items.first())
        .map(|i| col(text, i.dash));
    match (key, dash) {
        (Some(k), Some(d)) if d >= k => d - k,
        _ => 0,
    }
}

/// The indentation step of nested mappings, read from the existing volumes (where our
/// `hostPath:` goes) or else from the container.
fn map_unit(text: &str, site: &Site<'_>) -> usize {
    let step = |m: &crate::yaml::Map| {
        m.entries.iter().find_map(|e| {
            let inner = e.value.as_map().filter(|m| !m.flow)?;
            let first = inner.entries.first()?;
            col(text, first.key.span.start).checked_sub(col(text, e.key.span.start))
        })
    };
    site.volume_list
        .iter()
        .find_map(|v| v.node.as_map().and_then(step))
        .or_else(|| site.container.as_map().and_then(step))
        .filter(|&u| u > 0)
        .unwrap_or(2)
}
