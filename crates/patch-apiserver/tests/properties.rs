//! Property tests over generated manifests: indentation 2/4, indented or flush
//! sequences, `- ` or `-   ` items, comments (own line, trailing, commented-out
//! flags), blank and whitespace-only lines, flag order, `name:`-first items, a final
//! newline or not, LF, CRLF or a mix of both line by line, empty flow lists (`[]`) for the
//! volumes and mounts, one-line JSON, a byte order mark, a `--` ending the options, and
//! every shape (a shell wrapper passing its args on with `"$@"` included). For each mode
//! that the version allows: additions only, semantic equality with the intended additions,
//! idempotence, revert byte for byte.

mod common;

use common::{assert_properties, opts};
use patch_apiserver::{Mode, PatchError, patch};
use proptest::prelude::*;

const FLAG_POOL: &[&str] = &[
    "--advertise-address=10.0.0.1",
    "--allow-privileged=true",
    "--authorization-mode=Node,RBAC",
    "--client-ca-file=/etc/kubernetes/pki/ca.crt",
    "--etcd-servers=https://127.0.0.1:2379",
    "--secure-port=6443",
    "--service-cluster-ip-range=10.96.0.0/12",
    "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
    "--v=2",
    "--feature-gates=EphemeralContainers=true",
    "--runtime-config=api/all=true",
    "--runtime-config=",
    "--feature-gates=",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenShape {
    Command,
    ArgsAfterCommand,
    ArgsFirst,
    ArgsNoCommand,
    GoRunner,
    ShellPlain,
    ShellFolded,
    ShellDouble,
    /// `sh -c 'exec kube-apiserver "$@"' --` with the flags in `args`.
    ShellPositional,
    JsonList,
    JsonShell,
}

#[derive(Debug, Clone)]
struct Gen {
    shape: GenShape,
    unit: usize,
    flush_seqs: bool,
    wide_dash: bool,
    name_first: bool,
    flags: Vec<&'static str>,
    /// Per flag: 0 nothing, 1 comment line, 2 trailing comment, 3 blank line,
    /// 4 whitespace-only line, 5 commented-out flag.
    decor: Vec<u8>,
    header_comment: bool,
    final_newline: bool,
    /// 0: no key, 1: one item, 2: an empty flow list `[]`.
    mounts: u8,
    volumes: u8,
    minor: u32,
    status: bool,
    /// 0: LF, 1: CRLF, 2: each line as `crlf_lines` says (cycled).
    line_ends: u8,
    crlf_lines: Vec<bool>,
    one_line_json: bool,
    bom: bool,
    /// A `--` after the flags.
    terminator: bool,
}

fn manifests() -> impl Strategy<Value = Gen> {
    let shapes = prop_oneof![
        Just(GenShape::Command),
        Just(GenShape::ArgsAfterCommand),
        Just(GenShape::ArgsFirst),
        Just(GenShape::ArgsNoCommand),
        Just(GenShape::GoRunner),
        Just(GenShape::ShellPlain),
        Just(GenShape::ShellFolded),
        Just(GenShape::ShellDouble),
        Just(GenShape::ShellPositional),
        Just(GenShape::JsonList),
        Just(GenShape::JsonShell),
    ];
    let flags = proptest::sample::subsequence(FLAG_POOL, 1..FLAG_POOL.len()).prop_shuffle();
    (
        shapes,
        prop_oneof![Just(2usize), Just(4usize)],
        any::<[bool; 9]>(),
        flags,
        proptest::collection::vec(0u8..6, FLAG_POOL.len()),
        prop_oneof![13u32..=18, 10u32..=30],
        (0u8..3, 0u8..3, 0u8..3),
        proptest::collection::vec(any::<bool>(), 1..8),
    )
        .prop_map(
            |(shape, unit, b, flags, decor, minor, (mounts, volumes, line_ends), crlf_lines)| Gen {
                shape,
                unit,
                flush_seqs: b[0],
                wide_dash: b[1],
                name_first: b[2],
                flags,
                decor,
                header_comment: b[3],
                final_newline: b[4],
                mounts,
                volumes,
                minor,
                status: b[7],
                line_ends,
                crlf_lines,
                one_line_json: b[5],
                bom: b[6],
                terminator: b[8],
            },
        )
}

impl Gen {
    fn image(&self) -> String {
        format!("registry.k8s.io/kube-apiserver:v1.{}.3", self.minor)
    }

    fn shell_line(&self) -> String {
        format!(
            "exec /usr/local/bin/kube-apiserver {}{} 1>>/var/log/kube-apiserver.log 2>&1",
            self.flags.join(" "),
            if self.terminator { " --" } else { "" }
        )
    }

    /// The flags as list items, with the terminator if any.
    fn flag_items(&self) -> Vec<String> {
        let mut items: Vec<String> = self.flags.iter().map(|f| f.to_string()).collect();
        if self.terminator {
            items.push("--".into());
        }
        items
    }

    fn render(&self) -> String {
        let mut out = if matches!(self.shape, GenShape::JsonList | GenShape::JsonShell) {
            self.render_json()
        } else {
            self.render_yaml()
        };
        if !self.final_newline {
            while out.ends_with('\n') {
                out.pop();
            }
        }
        out = match self.line_ends {
            0 => out,
            1 => out.replace('\n', "\r\n"),
            _ => {
                let mut mixed = String::with_capacity(out.len() * 2);
                let mut ends = self.crlf_lines.iter().cycle();
                for c in out.chars() {
                    if c == '\n' && ends.next().copied().unwrap_or(false) {
                        mixed.push('\r');
                    }
                    mixed.push(c);
                }
                mixed
            }
        };
        if self.bom {
            out.insert(0, '\u{feff}');
        }
        out
    }

    fn render_json(&self) -> String {
        let q = |s: &str| format!("\"{s}\"");
        let command: Vec<String> = if self.shape == GenShape::JsonShell {
            vec![q("/bin/sh"), q("-c"), q(&self.shell_line())]
        } else {
            std::iter::once(q("kube-apiserver"))
                .chain(self.flag_items().iter().map(|f| q(f)))
                .collect()
        };
        let mut s = String::from(
            "{\n\"apiVersion\": \"v1\",\n\"kind\": \"Pod\",\n\"metadata\": {\"name\": \"kube-apiserver\"},\n\"spec\": {\n  \"containers\": [\n    {\n",
        );
        s += &format!(
            "      \"name\": \"kube-apiserver\",\n      \"image\": {},\n",
            q(&self.image())
        );
        s += &format!(
            "      \"command\": [\n        {}\n      ]",
            command.join(",\n        ")
        );
        match self.mounts {
            1 => {
                s += ",\n      \"volumeMounts\": [\n        {\"name\": \"pki\", \"mountPath\": \"/etc/kubernetes/pki\"}\n      ]"
            }
            2 => s += ",\n      \"volumeMounts\": []",
            _ => {}
        }
        s += "\n    }\n  ]";
        match self.volumes {
            1 => {
                s += ",\n  \"volumes\": [\n    {\"name\": \"pki\", \"hostPath\": {\"path\": \"/etc/kubernetes/pki\"}}\n  ]"
            }
            2 => s += ",\n  \"volumes\": []",
            _ => {}
        }
        s += "\n}\n}\n";
        if self.one_line_json {
            // Line breaks and indentation sit only between tokens, never inside strings.
            let mut one = String::new();
            for line in s.lines() {
                one += line.trim_start();
            }
            s = one + "\n";
        }
        s
    }

    fn render_yaml(&self) -> String {
        let u = self.unit;
        let gap = if self.wide_dash { 3 } else { 1 };
        // Columns: a key at `k` has its sequence's dashes at `k + seq`, items' content at `dash + 1 + gap`.
        let seq = if self.flush_seqs { 0 } else { u };
        let pad = |n: usize| " ".repeat(n);
        let mut s = String::new();
        if self.header_comment {
            s += "# generated\n\n";
        }
        s += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n{0}name: kube-apiserver\n{0}namespace: kube-system\nspec:\n",
            pad(u)
        );
        s += &format!("{}containers:\n", pad(u));
        let dash = u + seq;
        let c = dash + 1 + gap;
        let item_dash = |col: usize| format!("{}-{}", pad(col), pad(gap));

        // Lines of the container's mapping entries, each without its indentation.
        let list_lines = |key_col: usize, items: &[String], decorate: bool| -> Vec<String> {
            let d = key_col + seq;
            let mut lines = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let decor = if decorate && i > 0 {
                    self.decor.get(i).copied().unwrap_or(0)
                } else {
                    0
                };
                match decor {
                    1 => lines.push(format!(
                        "{}# about {}",
                        pad(d),
                        item.trim_start_matches('-')
                    )),
                    3 => lines.push(String::new()),
                    4 => lines.push(pad(d + 3)),
                    5 => lines.push(format!("{}# - --old-flag=1", pad(d))),
                    _ => {}
                }
                let trailing = if decor == 2 { "  # why" } else { "" };
                lines.push(format!("{}{item}{trailing}", item_dash(d)));
            }
            lines
        };
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        let flags = self.flag_items();
        let binary = |b: &str| {
            std::iter::once(b.to_string())
                .chain(flags.iter().cloned())
                .collect::<Vec<_>>()
        };
        match self.shape {
            GenShape::Command => entries.push((
                "command".into(),
                list_lines(c, &binary("kube-apiserver"), true),
            )),
            GenShape::ArgsAfterCommand => {
                entries.push((
                    "command".into(),
                    list_lines(c, &["/usr/local/bin/kube-apiserver".into()], false),
                ));
                entries.push(("args".into(), list_lines(c, &flags, true)));
            }
            GenShape::ArgsFirst => {
                entries.push(("args".into(), list_lines(c, &flags, true)));
                entries.push((
                    "command".into(),
                    list_lines(c, &["/usr/local/bin/kube-apiserver".into()], false),
                ));
            }
            GenShape::ArgsNoCommand => entries.push(("args".into(), list_lines(c, &flags, true))),
            GenShape::GoRunner => {
                entries.push((
                    "command".into(),
                    list_lines(c, &["/go-runner".into()], false),
                ));
                let mut args = vec![
                    "--log-file=/var/log/kube-apiserver.log".to_string(),
                    "--also-stdout".into(),
                ];
                args.extend(binary("/usr/local/bin/kube-apiserver"));
                entries.push(("args".into(), list_lines(c, &args, true)));
            }
            GenShape::ShellPositional => {
                let script =
                    "exec /usr/local/bin/kube-apiserver \"$@\" 1>>/var/log/kube-apiserver.log 2>&1";
                entries.push((
                    "command".into(),
                    list_lines(
                        c,
                        &["/bin/sh".into(), "-c".into(), script.into(), "--".into()],
                        false,
                    ),
                ));
                entries.push(("args".into(), list_lines(c, &flags, true)));
            }
            GenShape::ShellPlain | GenShape::ShellDouble | GenShape::ShellFolded => {
                let line = self.shell_line();
                let last = match self.shape {
                    GenShape::ShellDouble => format!("\"{line}\""),
                    GenShape::ShellFolded => {
                        // Break after the binary and then every two words, as kops did.
                        let cont = format!("\n{}", pad(c + seq + 1 + gap + 2));
                        let mut words = line.split(' ');
                        let mut text = format!(
                            "{} {}",
                            words.next().unwrap_or(""),
                            words.next().unwrap_or("")
                        );
                        let rest: Vec<&str> = words.collect();
                        for chunk in rest.chunks(2) {
                            text += &cont;
                            text += &chunk.join(" ");
                        }
                        text
                    }
                    _ => line,
                };
                entries.push((
                    "command".into(),
                    list_lines(c, &["/bin/sh".into(), "-c".into(), last], false),
                ));
            }
            GenShape::JsonList | GenShape::JsonShell => unreachable!("rendered as JSON"),
        }
        entries.push((format!("image: {}", self.image()), Vec::new()));
        if self.mounts == 2 {
            entries.push(("volumeMounts: []".into(), Vec::new()));
        }
        if self.mounts == 1 {
            let d = c + seq;
            let mc = d + 1 + gap;
            let (first, second) = if self.name_first {
                ("name: pki", "mountPath: /etc/kubernetes/pki")
            } else {
                ("mountPath: /etc/kubernetes/pki", "name: pki")
            };
            entries.push((
                "volumeMounts".into(),
                vec![
                    format!("{}{first}", item_dash(d)),
                    format!("{}{second}", pad(mc)),
                ],
            ));
        }
        let name = ("name: kube-apiserver".to_string(), Vec::new());
        if self.name_first {
            entries.insert(0, name);
        } else {
            let at = entries.len() - usize::from(self.mounts > 0);
            entries.insert(at, name);
        }
        for (i, (key, lines)) in entries.iter().enumerate() {
            let head = if lines.is_empty() {
                key.clone()
            } else {
                format!("{key}:")
            };
            if i == 0 {
                s += &format!("{}{head}\n", item_dash(dash));
            } else {
                s += &format!("{}{head}\n", pad(c));
            }
            for l in lines {
                s += l;
                s += "\n";
            }
        }
        s += &format!("{}hostNetwork: true\n", pad(u));
        if self.volumes == 2 {
            s += &format!("{}volumes: []\n", pad(u));
        }
        if self.volumes == 1 {
            let d = u + seq;
            let vc = d + 1 + gap;
            s += &format!("{}volumes:\n", pad(u));
            if self.name_first {
                s += &format!(
                    "{}name: pki\n{}hostPath:\n{}path: /etc/kubernetes/pki\n",
                    item_dash(d),
                    pad(vc),
                    pad(vc + u)
                );
            } else {
                s += &format!(
                    "{}hostPath:\n{}path: /etc/kubernetes/pki\n{}name: pki\n",
                    item_dash(d),
                    pad(vc + u),
                    pad(vc)
                );
            }
        }
        if self.status {
            s += "status: {}\n";
        }
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn properties_hold_on_generated_manifests(g in manifests()) {
        let text = g.render();
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        serde_norway::from_str::<serde_norway::Value>(body).unwrap_or_else(|e| panic!("generator wrote bad YAML: {e}\n{text}"));
        for mode in Mode::ALL {
            match patch(&text, &opts(mode)) {
                Ok(_) => {
                    // No generated manifest has audit settings, so revert must restore it exactly.
                    assert_properties(&text, &opts(mode), true);
                }
                Err(PatchError::ModeRefused { .. }) => prop_assert!(mode != Mode::Static && !(13..19).contains(&g.minor)),
                Err(e) => panic!("{}\n{text}", e.located("generated")),
            }
        }
    }
}
