//! Adding our flags, volume and mount.

use crate::edit::{self, Edit, New, escape};
use crate::error::{PatchError, Pos};
use crate::flags::{self, FlagSpec, Want};
use crate::locate::{self, Flag, Origin, Site, Target, spaced_value};
use crate::mounts::{covered, mount_edits, read_only_log, referenced_files};
use crate::revert::remove_flags;
use crate::yaml::{Node, Style};
use crate::{HostMount, Inspection, KubeVersion, Mode, Note, Outcome, PatchOptions};

/// The flags `patch` writes for these options and version (the version that matters
/// is the one the manifest runs; `None` means "assume a current one").
pub fn audit_flags(opts: &PatchOptions, version: Option<&KubeVersion>) -> Vec<String> {
    flags::specs(opts, version)
        .iter()
        .map(FlagSpec::render)
        .collect()
}

/// Paths of the files our flags name that must exist on the node before the API server
/// can start: the [`AuditFile`](crate::AuditFile)s of [`audit_files`](crate::audit_files)
/// that are [`uploaded`](crate::AuditFile::uploaded).
pub fn needed_files(opts: &PatchOptions) -> Vec<String> {
    crate::audit_files(opts)
        .into_iter()
        .filter(|f| f.uploaded())
        .map(|f| f.path(opts))
        .collect()
}

/// Whether the manifest already has everything `patch` would add (`Ok(true)`).
/// Conflicts and refused modes are errors, as in `patch`.
pub fn check(text: &str, opts: &PatchOptions) -> Result<bool, PatchError> {
    patch(text, opts).map(|o| !o.changed)
}

/// A UTF-8 byte order mark and the text after it. The kubelet's YAML reader skips the mark;
/// we work on the text after it (so positions count from there, as an editor shows them)
/// and give it back in front of the result.
pub(crate) fn split_bom(text: &str) -> (&str, &str) {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => (&text[..text.len() - rest.len()], rest),
        None => ("", text),
    }
}

/// Runs `f` on the text after a byte order mark and puts the mark back in front.
pub(crate) fn keeping_bom(
    text: &str,
    f: impl FnOnce(&str) -> Result<Outcome, PatchError>,
) -> Result<Outcome, PatchError> {
    let (bom, body) = split_bom(text);
    let mut out = f(body)?;
    out.text.insert_str(0, bom);
    Ok(out)
}

pub(crate) fn inspect(text: &str) -> Result<Inspection, PatchError> {
    let text = split_bom(text).1;
    let root = locate::load(text)?;
    let site = Site::locate(text, &root)?;
    let host_mounts = site
        .mount_list
        .iter()
        .filter_map(|m| {
            let v = site.volume_list.iter().find(|v| v.name == m.name)?;
            Some(HostMount {
                volume: m.name.clone(),
                host_path: v.host_path.clone()?,
                mount_path: m.mount_path.clone(),
            })
        })
        .collect();
    Ok(Inspection {
        shape: site.shape,
        version: site.version,
        apiserver_args: site.flags.iter().map(|f| f.text.clone()).collect(),
        host_mounts,
        patched: patched_mode(&site),
    })
}

fn has_entry(site: &Site<'_>, name: &str, want: &Want) -> bool {
    let Want::Entry { key, value } = want else {
        return false;
    };
    site.options()
        .iter()
        .filter(|f| f.name() == Some(name))
        .any(|f| {
            entries(f.value().unwrap_or(""))
                .iter()
                .any(|e| e.0 == *key && e.1 == *value)
        })
}

fn patched_mode(site: &Site<'_>) -> Option<Mode> {
    let has = |name: &str| {
        site.options()
            .iter()
            .any(|f| f.name() == Some(name) && f.value() != Some("false"))
    };
    let logs = has(flags::LOG_PATH) && has(flags::POLICY_FILE);
    let dynamic = has(flags::DYNAMIC_CONFIG)
        && has_entry(site, flags::FEATURE_GATES, &flags::DYNAMIC_GATE)
        && has_entry(site, flags::RUNTIME_CONFIG, &flags::DYNAMIC_API);
    match (logs, has(flags::WEBHOOK_CONFIG), dynamic) {
        (true, true, _) => Some(Mode::Static),
        (true, false, true) => Some(Mode::DynamicLog),
        (_, _, true) => Some(Mode::Dynamic),
        _ => None,
    }
}

/// `key=value` entries of a comma list, empty pieces skipped as the flag parser does.
/// What a `key=value,...` list holds for our entry `key=value`.
pub(crate) enum EntryState {
    Absent,
    /// Every entry for the key has our value.
    Ours,
    /// Another value, as `key=value`.
    Other(String),
}

pub(crate) fn entry_state(items: &[(&str, &str)], key: &str, value: &str) -> EntryState {
    if !items.iter().any(|(k, _)| *k == key) {
        return EntryState::Absent;
    }
    match items.iter().find(|(k, v)| *k == key && *v != value) {
        None => EntryState::Ours,
        Some((k, v)) => EntryState::Other(format!("{k}={v}")),
    }
}

pub(crate) fn entries(value: &str) -> Vec<(&str, &str)> {
    value
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|e| e.split_once('=').unwrap_or((e, "")))
        .collect()
}

/// The version to write for, after the mode's version rules.
fn resolve_version(
    text: &str,
    opts: &PatchOptions,
    site: &Site<'_>,
    notes: &mut Vec<Note>,
) -> Result<Option<KubeVersion>, PatchError> {
    let at = Pos::of(text, site.image_at);
    let version = match (opts.kube_version, site.version) {
        (Some(given), Some(image)) if given != image => {
            notes.push(Note::VersionOverride { image, given });
            Some(given)
        }
        (given, image) => given.or(image),
    };
    match (opts.mode, version) {
        (Mode::Static, Some(v)) if v < flags::STATIC_SINCE => {
            return Err(PatchError::TooOld { at, version: v });
        }
        (Mode::Static, Some(v)) if v < flags::BATCH_FLAGS_SINCE => {
            notes.push(Note::BatchWaitLeftOut { version: v })
        }
        (Mode::Static, None) => notes.push(Note::VersionUnknown),
        (Mode::Static, Some(_)) => {}
        (mode, None) => {
            return Err(PatchError::VersionUnknown {
                at,
                mode,
                image: site.image.clone().unwrap_or_default(),
            });
        }
        (mode, Some(v)) if v < flags::DYNAMIC_SINCE => {
            return Err(PatchError::ModeRefused {
                at,
                mode,
                version: v,
                reason: "dynamic audit configuration (AuditSink) first appeared in 1.13",
            });
        }
        (mode, Some(v)) if v >= flags::DYNAMIC_REMOVED => {
            return Err(PatchError::ModeRefused {
                at,
                mode,
                version: v,
                reason: "DynamicAuditing and the AuditSink API were removed in 1.19, and the API server refuses to start with their flags",
            });
        }
        (_, Some(_)) => {}
    }
    Ok(version)
}

pub fn patch(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    keeping_bom(text, |body| patch_body(body, opts))
}

fn patch_body(text: &str, opts: &PatchOptions) -> Result<Outcome, PatchError> {
    let root = locate::load(text)?;
    let site = Site::locate(text, &root)?;
    opts.validate(Pos::of(text, site.binary_at), true)?;
    let mut notes = Vec::new();
    let version = resolve_version(text, opts, &site, &mut notes)?;
    let specs = flags::specs(opts, version.as_ref());
    let mut edits = Vec::new();
    let mut new_flags = Vec::new();
    for spec in &specs {
        plan_flag(
            text,
            &site,
            spec,
            opts.force,
            &mut edits,
            &mut new_flags,
            &mut notes,
        )?;
    }
    if !new_flags.is_empty() {
        edits.push(insert_flags(text, &site, &new_flags)?);
    }
    if opts.mode.logs() {
        edits.extend(mount_edits(text, &site, opts, &mut notes)?);
    }
    let out = edit::apply(text, edits)?;
    verify(&out, opts, &specs)?;
    Ok(Outcome {
        changed: out != text,
        text: out,
        notes,
    })
}

pub(crate) fn flag_pos(text: &str, f: &Flag<'_>) -> Pos {
    let off = f.scalar_range().map_or(0, |(n, s, _)| {
        n.as_scalar().map_or(n.span.start, |sc| sc.source_offset(s))
    });
    Pos::of(text, off)
}

fn style_of(node: &Node) -> Style {
    node.as_scalar().map_or(Style::Plain, |s| s.style)
}

/// Replaces the whole word of `f` with `word`, quoting as its scalar needs.
pub(crate) fn rewrite_word(f: &Flag<'_>, word: &str) -> Result<Edit, PatchError> {
    let Some((node, s, e)) = f.scalar_range() else {
        return Err(PatchError::Internal("flag without a scalar".into()));
    };
    let Some(sc) = node.as_scalar() else {
        return Err(PatchError::Internal("flag in a non-scalar".into()));
    };
    let in_flow =
        matches!(f.origin, Origin::Item { seq, .. } if seq.as_seq().is_some_and(|q| q.flow));
    if sc.style == Style::Plain && in_flow && word.contains([',', '[', ']', '{', '}', '#', ':']) {
        let quoted = format!("\"{}\"", escape(word, Style::Double));
        return Ok(Edit {
            start: node.span.start,
            end: node.span.end,
            text: quoted,
        });
    }
    let word = match f.origin {
        Origin::Word { .. }
            if word
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"-_=.,/:+@%".contains(&b))) =>
        {
            format!("'{}'", word.replace('\'', "'\\''"))
        }
        _ => word.to_string(),
    };
    Ok(Edit {
        start: sc.source_offset(s),
        end: sc.source_offset(e),
        text: escape(&word, sc.style),
    })
}

/// Appends `suffix` to the end of the word of `f`.
fn append_to_word(f: &Flag<'_>, suffix: &str) -> Result<Edit, PatchError> {
    let Some((node, _, e)) = f.scalar_range() else {
        return Err(PatchError::Internal("flag without a scalar".into()));
    };
    let Some(sc) = node.as_scalar() else {
        return Err(PatchError::Internal("flag in a non-scalar".into()));
    };
    let in_flow =
        matches!(f.origin, Origin::Item { seq, .. } if seq.as_seq().is_some_and(|q| q.flow));
    if sc.style == Style::Plain && in_flow && suffix.contains(',') {
        return rewrite_word(f, &format!("{}{suffix}", f.text));
    }
    Ok(Edit::insert(sc.source_offset(e), escape(suffix, sc.style)))
}

fn plan_flag(
    text: &str,
    site: &Site<'_>,
    spec: &FlagSpec,
    force: bool,
    edits: &mut Vec<Edit>,
    new_flags: &mut Vec<String>,
    notes: &mut Vec<Note>,
) -> Result<(), PatchError> {
    // With their indexes in `site.flags`: a two-word flag's value is the next one.
    let existing: Vec<(usize, &Flag<'_>)> = site
        .options()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() == Some(spec.name))
        .collect();
    let Some(&(_, last)) = existing.last() else {
        new_flags.push(spec.render());
        return Ok(());
    };
    let conflict = |f: &Flag<'_>, existing: String, ours: String| PatchError::Conflict {
        at: flag_pos(text, f),
        flag: spec.name.to_string(),
        existing,
        ours,
    };
    match &spec.want {
        Want::Value(_) | Want::Switch => {
            let mut replaced = false;
            for &(i, f) in &existing {
                // `--flag value` (two words) for flags that take a value; never for switches.
                let spaced = match spec.want {
                    Want::Value(_) => spaced_value(site.options(), i),
                    _ => None,
                };
                let value = f.value().or(spaced.map(|(v, _)| v));
                let same = match (&spec.want, value) {
                    (Want::Value(v), Some(have)) => have == v,
                    (Want::Switch, None | Some("true")) => true,
                    _ => false,
                };
                if same {
                    continue;
                }
                let have = value.map_or_else(|| "(no value)".to_string(), str::to_string);
                if !force || (value.is_none() && matches!(spec.want, Want::Value(_))) {
                    return Err(conflict(f, have, spec.shown()));
                }
                edits.push(rewrite_word(f, &spec.render())?);
                if let Some((_, index)) = spaced {
                    let mut drop = vec![false; site.flags.len()];
                    drop[index] = true;
                    edits.extend(remove_flags(text, site, &drop)?);
                }
                notes.push(Note::Replaced {
                    at: flag_pos(text, f),
                    flag: spec.name.to_string(),
                    old: have,
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
            for &(_, f) in &existing {
                let Some(list) = f.value() else {
                    return Err(conflict(f, "(no value)".into(), spec.shown()));
                };
                let items = entries(list);
                let have = match entry_state(&items, key, value) {
                    EntryState::Absent => continue,
                    EntryState::Ours => {
                        present = true;
                        continue;
                    }
                    EntryState::Other(have) => have,
                };
                if !force {
                    return Err(conflict(f, have, spec.shown()));
                }
                let merged: Vec<String> = items
                    .iter()
                    .map(|(k, v)| {
                        if k == key {
                            format!("{k}={value}")
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                edits.push(rewrite_word(
                    f,
                    &format!("{}={}", spec.name, merged.join(",")),
                )?);
                notes.push(Note::Replaced {
                    at: flag_pos(text, f),
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
                // Always `,entry`, even after an empty `--runtime-config=`: the API server
                // skips empty list items, and `revert` can then give the empty flag back
                // byte for byte instead of mistaking the whole flag for ours.
                let entry = format!("{key}={value}");
                edits.push(append_to_word(last, &format!(",{entry}"))?);
                notes.push(Note::Merged {
                    flag: spec.name,
                    entry,
                });
            }
        }
    }
    Ok(())
}

fn insert_flags(text: &str, site: &Site<'_>, new_flags: &[String]) -> Result<Edit, PatchError> {
    match site.target {
        Target::List(seq) => {
            let style = seq.as_seq().and_then(|s| s.items.last()).map_or(
                if site.shape == crate::Shape::Json {
                    Style::Double
                } else {
                    Style::Plain
                },
                |i| style_of(&i.node),
            );
            let style = if matches!(style, Style::Literal | Style::Folded) {
                Style::Plain
            } else {
                style
            };
            let items: Vec<New> = new_flags.iter().map(|f| New::Str(f.clone())).collect();
            // Before a `--` in this list: after it, flags would be positional arguments.
            let before = match site.terminator().map(|f| f.origin) {
                Some(Origin::Item { seq: s, index }) if std::ptr::eq(s, seq) => index,
                _ => seq.as_seq().map_or(0, |s| s.items.len()),
            };
            edit::insert_items(text, seq, before, &items, style, 2)
        }
        Target::Shell { scalar, at } => {
            let Some(sc) = scalar.as_scalar() else {
                return Err(PatchError::Internal("shell command is not a scalar".into()));
            };
            let words: String = new_flags.iter().map(|f| format!(" {f}")).collect();
            Ok(Edit::insert(sc.source_offset(at), escape(&words, sc.style)))
        }
    }
}

/// Re-reads the result: it must parse, carry every flag, and mount every file.
fn verify(out: &str, opts: &PatchOptions, specs: &[FlagSpec]) -> Result<(), PatchError> {
    let root = locate::load(out)
        .map_err(|e| PatchError::Internal(format!("the result does not parse: {e}")))?;
    let site = Site::locate(out, &root)
        .map_err(|e| PatchError::Internal(format!("the result is not a manifest: {e}")))?;
    for spec in specs {
        let ok = match &spec.want {
            Want::Value(v) => site.options().iter().enumerate().any(|(i, f)| {
                f.name() == Some(spec.name)
                    && f.value()
                        .or(spaced_value(site.options(), i).map(|(s, _)| s))
                        == Some(v)
            }),
            Want::Switch => site.options().iter().any(|f| f.name() == Some(spec.name)),
            w @ Want::Entry { .. } => has_entry(&site, spec.name, w),
        };
        if !ok {
            return Err(PatchError::Internal(format!(
                "{} is missing from the result",
                spec.render()
            )));
        }
    }
    read_only_log(out, &site, opts)?;
    for (flag, file) in referenced_files(opts) {
        if covered(&site, &file).is_none() {
            return Err(PatchError::NotMounted {
                at: Pos::of(out, site.container.span.start),
                file,
                flag,
            });
        }
    }
    Ok(())
}
