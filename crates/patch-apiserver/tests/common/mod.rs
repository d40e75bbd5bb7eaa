//! Checks shared by the fixture and property tests.
#![allow(dead_code)]

use patch_apiserver::{Mode, PatchOptions, Shape, VOLUME_NAME, audit_flags, inspect};
use serde_norway::{Mapping, Value};

pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manifests")
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every inserted character, no deletions: `old` is `new` with pieces cut out.
#[track_caller]
pub fn assert_additions_only(old: &str, new: &str) {
    let diff = similar::TextDiff::from_chars(old, new);
    for op in diff.ops() {
        assert!(
            !matches!(
                op.tag(),
                similar::DiffTag::Delete | similar::DiffTag::Replace
            ),
            "the edit deletes text: {op:?}\n{}",
            patch_apiserver::unified_diff(old, new, "old", "new")
        );
    }
}

/// Lines the edit changed (rather than added), with what they became.
pub fn changed_lines(old: &str, new: &str) -> Vec<(String, String)> {
    // A missing final newline is kept by design; compare lines, not terminators.
    let (old, new) = (
        &format!("{}\n", old.trim_end_matches('\n')),
        &format!("{}\n", new.trim_end_matches('\n')),
    );
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = Vec::new();
    for op in diff.ops() {
        if let similar::DiffOp::Replace {
            old_index,
            old_len,
            new_index,
            new_len,
        } = *op
        {
            let olds: Vec<&str> = old.lines().skip(old_index).take(old_len).collect();
            let news: Vec<&str> = new.lines().skip(new_index).take(new_len).collect();
            // Lines of a replaced block that survive unchanged are not changes; the
            // others pair with the new line that extends them, if any.
            for o in olds.iter().filter(|o| !news.contains(o)) {
                let now = news.iter().find(|n| n.starts_with(*o)).unwrap_or(&"");
                out.push((o.to_string(), now.to_string()));
            }
        }
        if let similar::DiffOp::Delete {
            old_index, old_len, ..
        } = *op
        {
            for o in old.lines().skip(old_index).take(old_len) {
                out.push((o.to_string(), String::new()));
            }
        }
    }
    out
}

/// The line-level rule per shape: block lists only gain lines; a shell command changes
/// only on the binary's line; JSON may also gain separators; merged list flags change
/// their own line.
#[track_caller]
pub fn assert_line_rule(old: &str, new: &str, shape: Shape) {
    for (was, now) in changed_lines(old, new) {
        let binary_line = was.contains("kube-apiserver ")
            || was.trim_end().ends_with("kube-apiserver")
            || was.contains("kube-apiserver\\");
        let separator = now == format!("{was},");
        let merged = was.contains("--feature-gates") || was.contains("--runtime-config");
        let flow_line = was.contains('[') || was.contains('{');
        // An empty flow list (`volumes: []`) takes our item on its own line.
        let empty_list = {
            let w = was.trim_end();
            w.ends_with('[')
                || w.strip_suffix(']')
                    .is_some_and(|w| w.trim_end().ends_with('['))
        };
        // A last line without a newline "changes" when lines are added after it.
        let ok = was == now
            || match shape {
                Shape::Shell => binary_line || merged || empty_list,
                // A one-line JSON manifest changes on its only line.
                Shape::Json => {
                    binary_line || separator || merged || empty_list || old.lines().count() == 1
                }
                Shape::Command | Shape::Args | Shape::GoRunner => merged || flow_line,
            };
        assert!(
            ok,
            "{shape:?}: line changed beyond the rule:\n-{was}\n+{now}"
        );
    }
}

/// The manifest's meaning. serde_norway does not skip a byte order mark; the kubelet does.
pub fn parse(text: &str) -> Value {
    serde_norway::from_str(text.strip_prefix('\u{feff}').unwrap_or(text))
        .unwrap_or_else(|e| panic!("does not parse: {e}\n{text}"))
}

fn containers_mut(v: &mut Value) -> &mut Vec<Value> {
    match v.get_mut("spec").and_then(|s| s.get_mut("containers")) {
        Some(Value::Sequence(s)) => s,
        _ => panic!("no containers"),
    }
}

fn is_binary(s: &str) -> bool {
    s == "kube-apiserver" || s.ends_with("/kube-apiserver")
}

fn push_to(map: &mut Mapping, key: &str, item: Value) {
    match map.get_mut(key) {
        Some(Value::Sequence(s)) => s.push(item),
        _ => {
            map.insert(Value::from(key), Value::Sequence(vec![item]));
        }
    }
}

/// The input, parsed, plus exactly the flags, volume and mount `patch` intends, applied
/// on the parsed value (not on the text).
pub fn expected_value(input: &str, opts: &PatchOptions) -> Value {
    let mut v = parse(input);
    let info = inspect(input).expect("inspect");
    let version = opts.kube_version.or(info.version);
    let flags = audit_flags(opts, version.as_ref());
    let present = |f: &str| info.apiserver_args.iter().any(|a| a == f);
    let mut append = Vec::new();
    let mut merges = Vec::new();
    for f in flags {
        if present(&f) {
            continue;
        }
        let (name, entry) = f.split_once('=').map_or((f.as_str(), ""), |(n, e)| (n, e));
        let list_flag = name == "--feature-gates" || name == "--runtime-config";
        if list_flag
            && info
                .apiserver_args
                .iter()
                .any(|a| a.starts_with(&format!("{name}=")))
        {
            let already = info.apiserver_args.iter().any(|a| {
                a.strip_prefix(&format!("{name}="))
                    .is_some_and(|l| l.split(',').any(|e| e == entry))
            });
            if !already {
                merges.push((name.to_string(), entry.to_string()));
            }
        } else {
            append.push(f);
        }
    }
    let container = containers_mut(&mut v)
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver"))
        .expect("apiserver container");
    let map = container.as_mapping_mut().expect("container mapping");
    // Merge into the last occurrence of each list flag, wherever it is.
    for (name, entry) in &merges {
        let mut done = false;
        for key in ["args", "command"] {
            let Some(Value::Sequence(items)) = map.get_mut(key) else {
                continue;
            };
            for item in items.iter_mut().rev() {
                let Some(s) = item.as_str() else { continue };
                // Always `,entry`: after an empty list too (the API server skips empty items).
                if s.starts_with(&format!("{name}=")) {
                    *item = Value::from(format!("{s},{entry}"));
                    done = true;
                    break;
                }
                // A shell string: append after the last such flag's word.
                if let Some(pos) = s.rfind(&format!("{name}=")) {
                    let end = s[pos..].find(' ').map_or(s.len(), |e| pos + e);
                    *item = Value::from(format!("{},{entry}{}", &s[..end], &s[end..]));
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
        }
        assert!(done, "no {name} to merge into");
    }
    if !append.is_empty() {
        let joined = append.join(" ");
        let mut placed = false;
        let list = |key: &str| match map.get(key) {
            Some(Value::Sequence(items)) => {
                Some(items.iter().position(|i| i.as_str().is_some_and(is_binary)))
            }
            _ => None,
        };
        // Where the flags go, read from the parsed value rather than from the library.
        let list_key = match (list("command"), list("args")) {
            (Some(Some(i)), args) => {
                let last =
                    matches!(map.get("command"), Some(Value::Sequence(c)) if i + 1 == c.len());
                Some(if last && args.is_some() {
                    "args"
                } else {
                    "command"
                })
            }
            (_, Some(Some(_))) => Some("args"),
            (None, Some(None)) => Some("args"),
            _ => None,
        };
        if let Some(key) = list_key {
            if let Some(Value::Sequence(items)) = map.get_mut(key) {
                // Before a `--` after the binary: what follows it is not read as flags.
                let binary = items
                    .iter()
                    .position(|i| i.as_str().is_some_and(is_binary))
                    .map_or(0, |b| b + 1);
                let at = items
                    .iter()
                    .skip(binary)
                    .position(|i| i.as_str() == Some("--"))
                    .map_or(items.len(), |t| binary + t);
                items.splice(at..at, append.iter().cloned().map(Value::from));
                placed = true;
            }
        } else {
            for key in ["command", "args"] {
                let Some(Value::Sequence(items)) = map.get_mut(key) else {
                    continue;
                };
                for item in items.iter_mut() {
                    let Some(s) = item.as_str() else { continue };
                    // The binary's word ends at a space; `/var/log/kube-apiserver.log` does not.
                    let binary = s
                        .match_indices("kube-apiserver")
                        .map(|(i, _)| i)
                        .find(|&i| {
                            s[i + "kube-apiserver".len()..]
                                .chars()
                                .next()
                                .is_none_or(char::is_whitespace)
                        });
                    if let Some(pos) = binary.filter(|_| s.contains(' ')) {
                        let end = pos + "kube-apiserver".len();
                        *item = Value::from(format!("{} {joined}{}", &s[..end], &s[end..]));
                        placed = true;
                        break;
                    }
                }
                if placed {
                    break;
                }
            }
        }
        assert!(placed, "nowhere to put flags for {:?}", info.shape);
    }
    if opts.mode.logs() {
        let dir = opts.audit_dir.trim_end_matches('/');
        let already = info.host_mounts.iter().any(|m| {
            m.mount_path.trim_end_matches('/') == dir && m.host_path.trim_end_matches('/') == dir
        });
        if !already {
            let mut mount = Mapping::new();
            mount.insert("mountPath".into(), dir.into());
            mount.insert("name".into(), VOLUME_NAME.into());
            push_to(map, "volumeMounts", Value::Mapping(mount));
            let spec = v
                .get_mut("spec")
                .and_then(Value::as_mapping_mut)
                .expect("spec");
            let has_volume = matches!(spec.get("volumes"), Some(Value::Sequence(vs)) if vs.iter().any(|x| x.get("name").and_then(Value::as_str) == Some(VOLUME_NAME)));
            if !has_volume {
                let mut host = Mapping::new();
                host.insert("path".into(), dir.into());
                host.insert("type".into(), "DirectoryOrCreate".into());
                let mut vol = Mapping::new();
                vol.insert("hostPath".into(), Value::Mapping(host));
                vol.insert("name".into(), VOLUME_NAME.into());
                push_to(spec, "volumes", Value::Mapping(vol));
            }
        }
    }
    v
}

/// All the properties of one successful patch.
#[track_caller]
pub fn assert_properties(input: &str, opts: &PatchOptions, pristine: bool) -> String {
    let out = patch_apiserver::patch(input, opts)
        .unwrap_or_else(|e| panic!("{}\n{input}", e.located("input")));
    let shape = inspect(input).expect("inspect").shape;
    assert_additions_only(input, &out.text);
    assert_line_rule(input, &out.text, shape);
    let got = parse(&out.text);
    assert_eq!(
        got,
        expected_value(input, opts),
        "semantics differ\n{}",
        out.text
    );
    let again = patch_apiserver::patch(&out.text, opts).expect("second patch");
    assert_eq!(again.text, out.text, "not idempotent");
    assert!(!again.changed);
    assert_eq!(patch_apiserver::check(&out.text, opts), Ok(true));
    assert_eq!(patch_apiserver::check(input, opts), Ok(!out.changed));
    assert_eq!(
        inspect(&out.text).expect("inspect output").patched,
        Some(opts.mode)
    );
    if pristine {
        let back = patch_apiserver::revert(&out.text, opts).expect("revert");
        assert_eq!(back.text, input, "revert(patch(x)) != x");
        assert!(out.changed);
    }
    out.text
}

pub fn opts(mode: Mode) -> PatchOptions {
    PatchOptions::new(mode)
}
