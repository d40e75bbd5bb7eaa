//! Finds the kube-apiserver container, where its flags live, and its volumes.

use crate::error::{PatchError, Pos};
use crate::flags::{is_binary, shell_words, split_flag};
use crate::yaml::{self, Map, Node};
use crate::{KubeVersion, Shape};

/// Where new flags go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'t> {
    /// Appended to this sequence (`command` or `args`).
    List(&'t Node),
    /// Inserted into this shell string right after the binary, at value byte `at`.
    Shell { scalar: &'t Node, at: usize },
}

/// One existing word after the binary.
#[derive(Debug, Clone)]
pub(crate) struct Flag<'t> {
    pub text: String,
    pub origin: Origin<'t>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'t> {
    /// A whole list item.
    Item { seq: &'t Node, index: usize },
    /// A shell word spanning value bytes `start..end` of a scalar.
    Word {
        scalar: &'t Node,
        start: usize,
        end: usize,
    },
}

/// The value of `flags[i]` when it is written as two words, `--flag value`, as pflag reads a
/// flag that takes a value: the next word, unless that is a flag itself. Its index comes along.
pub(crate) fn spaced_value<'a>(flags: &'a [Flag<'_>], i: usize) -> Option<(&'a str, usize)> {
    let flag = flags.get(i)?;
    if flag.name().is_none() || flag.value().is_some() {
        return None;
    }
    let next = flags.get(i + 1)?;
    (!next.text.starts_with('-')).then_some((next.text.as_str(), i + 1))
}

impl Flag<'_> {
    pub fn name(&self) -> Option<&str> {
        split_flag(&self.text).map(|(n, _)| n)
    }
    pub fn value(&self) -> Option<&str> {
        split_flag(&self.text).and_then(|(_, v)| v)
    }
    /// The scalar holding the word and the word's value-byte range in it.
    pub fn scalar_range(&self) -> Option<(&Node, usize, usize)> {
        match self.origin {
            Origin::Item { seq, index } => {
                let node = &seq.as_seq()?.items.get(index)?.node;
                Some((node, 0, node.as_str()?.len()))
            }
            Origin::Word { scalar, start, end } => Some((scalar, start, end)),
        }
    }
}

pub(crate) struct Volume<'t> {
    pub index: usize,
    pub name: String,
    pub host_path: Option<String>,
    pub node: &'t Node,
}

pub(crate) struct Mount<'t> {
    pub index: usize,
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    pub node: &'t Node,
}

pub(crate) struct Site<'t> {
    pub shape: Shape,
    pub spec: &'t Node,
    pub container: &'t Node,
    pub image: Option<String>,
    /// Source offset of the image (or of the container without one): where errors about
    /// the version point.
    pub image_at: usize,
    pub version: Option<KubeVersion>,
    pub target: Target<'t>,
    /// The words after the binary, in order (what `"$@"` hands on included).
    pub flags: Vec<Flag<'t>>,
    /// How many of `flags` are options: a `--` word ends them, and pflag reads every word
    /// after it as a positional argument, whatever it looks like.
    pub options_end: usize,
    /// Source offset of the binary's word (or of the args list that stands for it): the
    /// place errors about our flags as a whole point at.
    pub binary_at: usize,
    pub volumes: Option<&'t Node>,
    pub volume_list: Vec<Volume<'t>>,
    pub mounts: Option<&'t Node>,
    pub mount_list: Vec<Mount<'t>>,
    /// Where `containers:` is (for adding keys to the spec in the same style).
    pub containers: &'t Node,
}

/// Checks the text with serde_norway (which knows all of YAML), then parses it with
/// our locator.
pub(crate) fn load(text: &str) -> Result<Node, PatchError> {
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(text) {
        let reason = without_locations(&e.to_string());
        if let Some(loc) = e.location() {
            return Err(PatchError::Yaml {
                at: Pos {
                    line: loc.line(),
                    column: loc.column(),
                },
                reason,
            });
        }
        // Without a location (e.g. several documents) our own parser says where.
        yaml::parse(text)?;
        return Err(PatchError::Yaml {
            at: Pos { line: 1, column: 1 },
            reason,
        });
    }
    // YAML (and the kubelet) read a lone CR as a line break; our lines end at LF, and an
    // edit placed by them would land in the wrong line.
    let lone_cr = text
        .bytes()
        .enumerate()
        .find(|&(i, b)| b == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n'));
    if let Some((i, _)) = lone_cr {
        return Err(PatchError::Unsupported {
            at: Pos::of(text, i),
            what: "a line break that is a lone CR, not LF or CRLF",
        });
    }
    yaml::parse(text)
}

/// serde's message without its ` at line L column C` parts, for callers that print the
/// position first (this crate, and the pipeline's policy check).
pub fn without_locations(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " at line ".len()..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let n = digits(tail);
        match tail[n..].strip_prefix(" column ") {
            Some(after) if n > 0 => rest = &after[digits(after)..],
            _ => {
                out.push_str(" at line ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn map_of<'t>(text: &str, node: &'t Node, expected: &'static str) -> Result<&'t Map, PatchError> {
    node.as_map()
        .ok_or_else(|| unexpected(text, node, expected))
}

fn seq_items<'t>(
    text: &str,
    node: Option<&'t Node>,
    expected: &'static str,
) -> Result<Vec<&'t Node>, PatchError> {
    match node {
        None => Ok(Vec::new()),
        Some(n) if n.is_null() => Err(unexpected(text, n, expected)),
        Some(n) => n
            .as_seq()
            .map(|s| s.items.iter().map(|i| &i.node).collect())
            .ok_or_else(|| unexpected(text, n, expected)),
    }
}

pub(crate) fn unexpected(text: &str, node: &Node, expected: &'static str) -> PatchError {
    let found = match &node.kind {
        _ if node.is_null() => "nothing".to_string(),
        yaml::Kind::Scalar(s) => format!("{:?}", s.value),
        yaml::Kind::Seq(_) => "a list".to_string(),
        yaml::Kind::Map(_) => "a mapping".to_string(),
    };
    PatchError::Unexpected {
        at: Pos::of(text, node.span.start),
        expected,
        found,
    }
}

fn string_at<'t>(
    text: &str,
    map: &'t Map,
    key: &str,
    expected: &'static str,
) -> Result<Option<&'t str>, PatchError> {
    match map.get(key) {
        None => Ok(None),
        Some(n) => n
            .as_str()
            .map(Some)
            .ok_or_else(|| unexpected(text, n, expected)),
    }
}

struct Candidate<'t> {
    shape: Shape,
    target: Target<'t>,
    flags: Vec<Flag<'t>>,
    container: &'t Node,
    binary_at: usize,
}

impl<'t> Site<'t> {
    /// The words the API server reads as flags: those before a `--`.
    pub fn options(&self) -> &[Flag<'t>] {
        &self.flags[..self.options_end.min(self.flags.len())]
    }

    /// The `--` that ends the options, if any.
    pub fn terminator(&self) -> Option<&Flag<'t>> {
        self.flags.get(self.options_end)
    }

    pub fn locate(text: &str, root: &'t Node) -> Result<Site<'t>, PatchError> {
        let top = map_of(text, root, "a Pod manifest (a mapping)")?;
        let kind = top.get("kind");
        match kind.and_then(Node::as_str) {
            Some("Pod") => {}
            Some(other) => {
                return Err(PatchError::NotAPod {
                    at: Pos::of(text, kind.map_or(0, |k| k.span.start)),
                    found: other.to_string(),
                });
            }
            None => {
                return Err(PatchError::NotAPod {
                    at: Pos::of(text, kind.map_or(root.span.start, |k| k.span.start)),
                    found: String::new(),
                });
            }
        }
        let spec = top
            .get("spec")
            .ok_or_else(|| unexpected(text, root, "a Pod with `spec:`"))?;
        let spec_map = map_of(text, spec, "the Pod spec (a mapping)")?;
        let containers = spec_map
            .get("containers")
            .ok_or_else(|| unexpected(text, spec, "a spec with `containers:`"))?;
        let mut found: Option<Candidate<'t>> = None;
        for c in seq_items(text, Some(containers), "a list of containers")? {
            let Some(candidate) = classify(text, c)? else {
                continue;
            };
            if let Some(first) = &found {
                return Err(PatchError::SeveralApiservers {
                    at: Pos::of(text, c.span.start),
                    first: Pos::of(text, first.container.span.start),
                });
            }
            found = Some(candidate);
        }
        let Some(mut candidate) = found else {
            return Err(PatchError::NoApiserver {
                at: Pos::of(text, containers.span.start),
            });
        };
        if root.as_map().is_some_and(|m| m.flow) {
            candidate.shape = Shape::Json;
        }
        let container = map_of(text, candidate.container, "a container")?;
        let image = string_at(text, container, "image", "an image name")?.map(str::to_string);
        let version = image.as_deref().and_then(KubeVersion::from_image);

        let volumes = spec_map.get("volumes");
        let mut volume_list = Vec::new();
        for (index, v) in seq_items(text, volumes, "a list of volumes")?
            .into_iter()
            .enumerate()
        {
            let m = map_of(text, v, "a volume (a mapping)")?;
            let name =
                string_at(text, m, "name", "a volume name")?.ok_or(PatchError::UnnamedVolume {
                    at: Pos::of(text, v.span.start),
                })?;
            let host_path = match m.get("hostPath") {
                Some(h) => string_at(
                    text,
                    map_of(text, h, "a hostPath (a mapping)")?,
                    "path",
                    "a path",
                )?,
                None => None,
            };
            volume_list.push(Volume {
                index,
                name: name.to_string(),
                host_path: host_path.map(str::to_string),
                node: v,
            });
        }
        let mounts = container.get("volumeMounts");
        let mut mount_list = Vec::new();
        for (index, v) in seq_items(text, mounts, "a list of volume mounts")?
            .into_iter()
            .enumerate()
        {
            let m = map_of(text, v, "a volume mount (a mapping)")?;
            let at = Pos::of(text, v.span.start);
            let name =
                string_at(text, m, "name", "a volume name")?.ok_or(PatchError::UnnamedMount {
                    at,
                    what: "a volume mount",
                })?;
            let mount_path =
                string_at(text, m, "mountPath", "a mount path")?.ok_or(PatchError::Unexpected {
                    at,
                    expected: "a volume mount with `mountPath:`",
                    found: "none".into(),
                })?;
            // YAML 1.1 booleans, as the kubelet's decoder reads them.
            let read_only = m.get("readOnly").and_then(Node::as_str).is_some_and(|v| {
                matches!(
                    v,
                    "true"
                        | "True"
                        | "TRUE"
                        | "yes"
                        | "Yes"
                        | "YES"
                        | "on"
                        | "On"
                        | "ON"
                        | "y"
                        | "Y"
                )
            });
            mount_list.push(Mount {
                index,
                name: name.to_string(),
                mount_path: mount_path.to_string(),
                read_only,
                node: v,
            });
        }
        let options_end = candidate
            .flags
            .iter()
            .position(|f| f.text == "--")
            .unwrap_or(candidate.flags.len());
        Ok(Site {
            shape: candidate.shape,
            spec,
            container: candidate.container,
            image_at: container
                .get("image")
                .map_or(candidate.container.span.start, |n| n.span.start),
            image,
            version,
            target: candidate.target,
            flags: candidate.flags,
            options_end,
            binary_at: candidate.binary_at,
            volumes,
            volume_list,
            mounts,
            mount_list,
            containers,
        })
    }
}

fn item_flags<'t>(seq: &'t Node, from: usize) -> Vec<Flag<'t>> {
    seq.as_seq()
        .map(|s| {
            s.items
                .iter()
                .enumerate()
                .skip(from)
                .filter_map(|(index, item)| {
                    Some(Flag {
                        text: item.node.as_str()?.to_string(),
                        origin: Origin::Item { seq, index },
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_shell(word: &str) -> bool {
    matches!(
        word.rsplit('/').next(),
        Some("sh" | "bash" | "ash" | "dash")
    )
}

/// Whether `word`, as written in a shell line, expands to all the positional parameters.
fn is_positional(word: &str) -> bool {
    matches!(
        word,
        "$@" | "\"$@\"" | "${@}" | "\"${@}\"" | "$*" | "\"$*\"" | "${*}" | "\"${*}\""
    )
}

/// Whether `argv[k]` is the script of `sh -c SCRIPT [$0 [$1...]]`: a shell, then only
/// options up to the script, one of them `-c` (alone or in a cluster such as `-ec`).
fn is_sh_c_script(argv: &[(&Node, usize, &Node)], k: usize) -> bool {
    let word = |i: usize| argv.get(i).and_then(|(_, _, n)| n.as_str()).unwrap_or("");
    let options: Vec<&str> = (1..k).map(word).collect();
    is_shell(word(0).trim())
        && options
            .iter()
            .all(|o| o.starts_with('-') && !o.starts_with("--"))
        && options.iter().any(|o| o.contains('c'))
}

/// Decides whether a container runs kube-apiserver, and if so in which shape.
fn classify<'t>(text: &str, c: &'t Node) -> Result<Option<Candidate<'t>>, PatchError> {
    let map = map_of(text, c, "a container (a mapping)")?;
    let command = map.get("command");
    let args = map.get("args");
    let command_items = seq_items(text, command, "a command list")?;
    let args_items = seq_items(text, args, "an args list")?;
    let binary_at = |items: &[&Node]| {
        items
            .iter()
            .position(|n| n.as_str().is_some_and(|s| is_binary(s.trim())))
    };

    if let (Some(cmd), Some(i)) = (command, binary_at(&command_items)) {
        let last = i + 1 == command_items.len();
        let binary_at = command_items[i].span.start;
        return Ok(Some(match args {
            Some(a) if last => Candidate {
                shape: Shape::Args,
                target: Target::List(a),
                flags: item_flags(a, 0),
                container: c,
                binary_at,
            },
            _ => {
                let mut flags = item_flags(cmd, i + 1);
                if let Some(a) = args {
                    flags.extend(item_flags(a, 0));
                }
                Candidate {
                    shape: Shape::Command,
                    target: Target::List(cmd),
                    flags,
                    container: c,
                    binary_at,
                }
            }
        }));
    }
    if let (Some(a), Some(i)) = (args, binary_at(&args_items)) {
        let shape = if command.is_some() {
            Shape::GoRunner
        } else {
            Shape::Args
        };
        return Ok(Some(Candidate {
            shape,
            target: Target::List(a),
            flags: item_flags(a, i + 1),
            container: c,
            binary_at: args_items[i].span.start,
        }));
    }
    // The container's argv: command, then args; each item with its list and index.
    let argv: Vec<(&Node, usize, &Node)> = [command, args]
        .into_iter()
        .flatten()
        .filter_map(|seq| Some((seq, seq.as_seq()?)))
        .flat_map(|(seq, s)| {
            s.items
                .iter()
                .enumerate()
                .map(move |(i, item)| (seq, i, &item.node))
        })
        .collect();
    for (k, &(_, _, node)) in argv.iter().enumerate() {
        let Some(s) = node.as_str() else { continue };
        for words in shell_words(s) {
            let Some(b) = words.iter().position(|w| is_binary(&w.text)) else {
                continue;
            };
            let end = words[b].end;
            // `sh -c SCRIPT $0 $1...`: "$@" hands the binary the items after $0.
            let positional = is_sh_c_script(&argv, k).then(|| argv.get(k + 2..).unwrap_or(&[]));
            let mut flags = Vec::new();
            let mut expanded = false;
            for w in &words[b + 1..] {
                if let Some(items) =
                    positional.filter(|_| is_positional(s.get(w.start..w.end).unwrap_or("")))
                {
                    // A second "$@" repeats the same items, which are read once.
                    if !expanded {
                        flags.extend(items.iter().filter_map(|&(seq, index, n)| {
                            Some(Flag {
                                text: n.as_str()?.to_string(),
                                origin: Origin::Item { seq, index },
                            })
                        }));
                        expanded = true;
                    }
                    continue;
                }
                flags.push(Flag {
                    text: w.text.clone(),
                    origin: Origin::Word {
                        scalar: node,
                        start: w.start,
                        end: w.end,
                    },
                });
            }
            let binary_at = node
                .as_scalar()
                .map_or(node.span.start, |sc| sc.source_offset(words[b].start));
            return Ok(Some(Candidate {
                shape: Shape::Shell,
                target: Target::Shell {
                    scalar: node,
                    at: end,
                },
                flags,
                container: c,
                binary_at,
            }));
        }
    }
    let named = map.get("name").and_then(Node::as_str) == Some("kube-apiserver");
    let imaged = map
        .get("image")
        .and_then(Node::as_str)
        .is_some_and(|i| i.contains("kube-apiserver"));
    if !(named || imaged) {
        return Ok(None);
    }
    let first = command_items.first().and_then(|n| n.as_str()).unwrap_or("");
    if is_shell(first) {
        let last = command_items
            .last()
            .or(args_items.last())
            .copied()
            .unwrap_or(c);
        return Err(PatchError::ShellWithoutBinary {
            at: Pos::of(text, last.span.start),
        });
    }
    match (command, args) {
        (None, Some(a)) => Ok(Some(Candidate {
            shape: Shape::Args,
            target: Target::List(a),
            flags: item_flags(a, 0),
            container: c,
            binary_at: a.span.start,
        })),
        _ if !named => Ok(None),
        _ => Err(unexpected(
            text,
            command.unwrap_or(c),
            "a command or args list that runs the kube-apiserver binary",
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn serde_locations_are_cut_from_messages() {
        assert_eq!(
            super::without_locations(
                "did not find expected ',' at line 6 column 1, while parsing a flow mapping at line 5 column 5"
            ),
            "did not find expected ',', while parsing a flow mapping"
        );
        assert_eq!(super::without_locations("x at line y"), "x at line y");
    }
}
