//! Removing what `patch` adds.
//!
//! A flag the user had with exactly our value looks the same as ours, so the rule is
//! by value: every flag whose name and value are what some mode writes with these
//! options is removed, and the rotation flags go with our `--audit-log-path`. Our entry
//! is cut from the end of a list flag (`--runtime-config=,ours` goes back to the empty
//! `--runtime-config=` it was); a list flag holding nothing but our entry is removed whole.
//! The volume goes only if it has our name and our path; the mount goes with it.

use std::collections::BTreeMap;

use crate::edit::{self, Edit};
use crate::flags::{self, FlagSpec, Want};
use crate::locate::{self, Flag, Origin, Site};
use crate::mounts::norm;
use crate::ours::claim;
use crate::patch::{entries, rewrite_word};
use crate::yaml::Node;
use crate::{Note, Outcome, PatchError, PatchOptions, VOLUME_NAME};

pub fn revert(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    crate::patch::keeping_bom(text, |body| revert_body(body, opts))
}

fn revert_body(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    let root = locate::load(text)?;
    let site = Site::locate(text, &root)?;
    opts.validate(crate::Pos::of(text, site.binary_at), false)?;
    let specs = flags::all_specs(opts);
    let mut notes = Vec::new();
    let mut edits = Vec::new();
    let mut remove = vec![false; site.flags.len()];
    let mut log_removed = false;
    // The rule is `ours::claim`, which `is_our_flag` and `our_flags` share.
    for (i, f) in site.options().iter().enumerate() {
        let Some(spec) = claim(&f.text, &specs) else {
            continue;
        };
        match &spec.want {
            Want::Entry { key, value } => match drop_entry(f, spec, key, value)? {
                Dropped::Nothing => {}
                Dropped::Flag => {
                    remove[i] = true;
                    notes.push(Note::EmptiedFlagRemoved { flag: spec.name });
                }
                Dropped::Entry(e) => edits.push(e),
            },
            Want::Value(_) | Want::Switch => {
                remove[i] = true;
                log_removed |= spec.name == flags::LOG_PATH;
            }
        }
    }
    if log_removed {
        for (i, f) in site.options().iter().enumerate() {
            remove[i] |= f.name().is_some_and(|n| flags::ROTATION_FLAGS.contains(&n));
        }
    }
    edits.extend(remove_flags(text, &site, &remove)?);
    edits.extend(remove_volume(text, &site, opts, &mut notes)?);
    let out = edit::apply(text, edits)?;
    locate::load(&out)
        .map_err(|e| PatchError::Internal(format!("the result does not parse: {e}")))?;
    Ok(Outcome {
        changed: out != text,
        text: out,
        notes,
    })
}

enum Dropped {
    Nothing,
    Flag,
    Entry(Edit),
}

/// Takes our `key=value` out of a list flag.
fn drop_entry(
    f: &Flag<'_>,
    spec: &FlagSpec,
    key: &str,
    value: &str,
) -> Result<Dropped, PatchError> {
    let Some(list) = f.value() else {
        return Ok(Dropped::Nothing);
    };
    let items = entries(list);
    let ours = |(k, v): &(&str, &str)| *k == key && *v == value;
    if !items.iter().any(ours) {
        return Ok(Dropped::Nothing);
    }
    // Undo our append exactly when the word still ends with it (also after an empty list,
    // which `patch` leaves as `--flag=,entry`).
    let entry = format!(",{key}={value}");
    if let (Some((node, s, e)), Some(sc)) = (
        f.scalar_range(),
        f.scalar_range().and_then(|r| r.0.as_scalar()),
    ) {
        let word = sc.value.get(s..e).unwrap_or("");
        if word.ends_with(&entry) && node.as_scalar().is_some() {
            return Ok(Dropped::Entry(Edit::delete(
                sc.source_offset(e - entry.len()),
                sc.source_offset(e),
            )));
        }
    }
    let kept: Vec<String> = items
        .iter()
        .filter(|e| !ours(e))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if kept.is_empty() {
        return Ok(Dropped::Flag);
    }
    rewrite_word(f, &format!("{}={}", spec.name, kept.join(","))).map(Dropped::Entry)
}

/// Deletes the flags marked in `remove` (indexes into `site.flags`), with their separators.
pub(crate) fn remove_flags(
    text: &str,
    site: &Site<'_>,
    remove: &[bool],
) -> Result<Vec<Edit>, PatchError> {
    let mut edits = Vec::new();
    // List items are removed per sequence, so separators are handled together.
    let mut by_seq: BTreeMap<usize, (&Node, Vec<usize>)> = BTreeMap::new();
    for (f, _) in site.flags.iter().zip(remove).filter(|(_, r)| **r) {
        match f.origin {
            Origin::Item { seq, index } => by_seq
                .entry(seq.span.start)
                .or_insert((seq, Vec::new()))
                .1
                .push(index),
            Origin::Word { scalar, start, end } => {
                let Some(sc) = scalar.as_scalar() else {
                    continue;
                };
                let v = sc.value.as_bytes();
                let raw = |i: usize| sc.source_offset(i);
                let edit = if start > 0 && v[start - 1] == b' ' && raw(start) == raw(start - 1) + 1
                {
                    Edit::delete(raw(start - 1), raw(end))
                } else if v.get(end) == Some(&b' ') && raw(end + 1) == raw(end) + 1 {
                    Edit::delete(raw(start), raw(end + 1))
                } else {
                    Edit::delete(raw(start), raw(end))
                };
                edits.push(edit);
            }
        }
    }
    for (seq, mut indexes) in by_seq.into_values() {
        indexes.sort_unstable();
        indexes.dedup();
        // A block list cannot be empty: emptied, its key would be left as `args:` (null),
        // which nothing reads as a list again. The key goes with its last item.
        let block = seq.as_seq().is_some_and(|s| !s.flow);
        let all = seq.as_seq().is_some_and(|s| s.items.len() == indexes.len());
        let entry = site
            .container
            .as_map()
            .and_then(|m| m.entries.iter().position(|e| std::ptr::eq(&e.value, seq)));
        match entry {
            Some(p) if block && all => {
                edits.extend(edit::delete_entries(text, site.container, &[p])?)
            }
            _ => edits.extend(edit::delete_items(text, seq, &indexes)?),
        }
    }
    Ok(edits)
}

fn remove_volume(
    text: &str,
    site: &Site<'_>,
    opts: &PatchOptions,
    notes: &mut Vec<Note>,
) -> Result<Vec<Edit>, PatchError> {
    let mut edits = Vec::new();
    let Some(v) = site.volume_list.iter().find(|v| v.name == VOLUME_NAME) else {
        // Our mount without its volume (someone removed the volume by hand) is dangling.
        let dangling: Vec<usize> = site
            .mount_list
            .iter()
            .filter(|m| m.name == VOLUME_NAME && norm(&m.mount_path) == opts.dir())
            .map(|m| m.index)
            .collect();
        if let Some(list) = site.mounts {
            edits.extend(remove_from(
                text,
                site.container,
                "volumeMounts",
                list,
                &dangling,
            )?);
        }
        return Ok(edits);
    };
    if v.host_path.as_deref().map(norm) != Some(opts.dir()) {
        notes.push(Note::ForeignVolumeKept {
            path: v.host_path.clone().unwrap_or_default(),
        });
        return Ok(edits);
    }
    let mounts: Vec<usize> = site
        .mount_list
        .iter()
        .filter(|m| m.name == VOLUME_NAME)
        .map(|m| m.index)
        .collect();
    if let Some(list) = site.mounts {
        edits.extend(remove_from(
            text,
            site.container,
            "volumeMounts",
            list,
            &mounts,
        )?);
    }
    if let Some(list) = site.volumes {
        edits.extend(remove_from(text, site.spec, "volumes", list, &[v.index])?);
    }
    Ok(edits)
}

/// Removes items of `map[key]`, or the whole key when nothing else is left in it.
fn remove_from(
    text: &str,
    map: &Node,
    key: &str,
    list: &Node,
    indexes: &[usize],
) -> Result<Vec<Edit>, PatchError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let Some(seq) = list.as_seq() else {
        return Ok(Vec::new());
    };
    if seq.items.len() != indexes.len() {
        return edit::delete_items(text, list, indexes);
    }
    // Everything in the list goes. Whether the key goes too depends on who wrote it:
    // `patch` adds a key as a block list to a block mapping and as a tight `[item]` to a
    // flow mapping; it fills an existing `[]` of a flow mapping as `[ item ]`. Any other
    // flow list was there before, and stays, empty.
    let (start, end) = (list.span.start, list.span.end);
    let only = (seq.items.len() == 1).then(|| &seq.items[0]);
    let tight = only.is_some_and(|i| i.dash == start + 1 && i.node.span.end + 1 == end);
    let padded = only.is_some_and(|i| {
        i.dash == start + 2
            && i.node.span.end + 2 == end
            && text.get(start + 1..start + 2) == Some(" ")
            && text.get(end - 2..end - 1) == Some(" ")
    });
    let flow_map = map.as_map().is_some_and(|m| m.flow);
    if !seq.flow || (flow_map && tight) {
        let position = map
            .as_map()
            .and_then(|m| m.entries.iter().position(|e| e.key.as_str() == Some(key)));
        if let Some(p) = position {
            return edit::delete_entries(text, map, &[p]);
        }
    }
    if flow_map && padded {
        return Ok(vec![Edit::delete(start + 1, end - 1)]);
    }
    edit::delete_items(text, list, indexes)
}
