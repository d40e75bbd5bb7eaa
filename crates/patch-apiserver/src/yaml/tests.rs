use super::{Kind, Node, parse};
use serde_norway::Value;

/// Our tree as a serde value, to compare with what serde_norway reads.
fn to_value(node: &Node) -> Value {
    match &node.kind {
        Kind::Scalar(s) => {
            if s.style == super::Style::Plain {
                // Plain scalars resolve to numbers, booleans or null as serde does.
                match serde_norway::from_str::<Value>(&s.value) {
                    Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_)))
                        if !s.value.contains('\n') =>
                    {
                        v
                    }
                    _ => Value::String(s.value.clone()),
                }
            } else {
                Value::String(s.value.clone())
            }
        }
        Kind::Seq(seq) => Value::Sequence(seq.items.iter().map(|i| to_value(&i.node)).collect()),
        Kind::Map(map) => Value::Mapping(
            map.entries
                .iter()
                .map(|e| (to_value(&e.key), to_value(&e.value)))
                .collect(),
        ),
    }
}

#[track_caller]
fn agrees(text: &str) {
    let ours = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let theirs: Value = serde_norway::from_str(text).unwrap();
    assert_eq!(to_value(&ours), theirs, "\n{text}");
}

#[test]
fn reads_what_serde_reads() {
    for text in [
        "a: 1\nb: two\n",
        "# c\na:\n  - x\n  - y # t\nb: [p, 'q''s', \"r\\\"s\"]\n",
        "a:\n- x\n-   y\nb: {c: d, \"e\": [1, 2]}\n",
        "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --a=b\n    name: x\n  volumes: []\n",
        "c:\n- /bin/sh\n- -c\n- mkfifo /tmp/pipe; (tee -a x < /tmp/pipe & ) ; exec\n  /usr/local/bin/kube-apiserver --a=b\n\n  --c=d 1>/tmp/pipe 2>&1\nd: e\n",
        "a: \"one\n  two\n\n  three \\\n  four\"\nb: 'x\n\n  y'\n",
        "a: |\n  line 1\n    more\n\n  line 3\nb: >-\n  folded\n  text\n\n  para\n   indented\n  back\nc: |+\n  keep\n\nd: x\n",
        "{\"apiVersion\": \"v1\", \"spec\": {\"containers\": [\n  {\"name\": \"a\", \"command\": [\"/bin/sh\", \"-c\", \"exec x\"]}\n]}}",
        "a:\n  b:\n    c: 1\n  d: ~\ne:\nf: x:y\ng: http://h:80/p\n",
        "- a\n- - b\n  - c\n- d: 1\n  e: 2\n",
        "a: x # comment\n# between\nb: y\n",
        "a: 'quoted # not a comment'\nb: plain#not\n",
        "k: \"\\u00e9\\x41\\t\\/\"\n",
    ] {
        agrees(text);
    }
}

#[test]
fn spans_cover_the_source() {
    let text = "a:\n  - one\n  - \"two\"\nb: [x, y]\n";
    let root = parse(text).unwrap();
    let map = root.as_map().unwrap();
    let seq = map.get("a").unwrap().as_seq().unwrap();
    assert_eq!(
        &text[seq.items[1].node.span.start..seq.items[1].node.span.end],
        "\"two\""
    );
    assert_eq!(seq.items[1].dash, text.find("- \"two").unwrap());
    let flow = map.get("b").unwrap();
    assert_eq!(&text[flow.span.start..flow.span.end], "[x, y]");
    let s = seq.items[0].node.as_scalar().unwrap();
    assert_eq!(s.source_offset(3), text.find("one").unwrap() + 3);
}

#[test]
fn refuses_what_it_does_not_model() {
    for (text, want) in [
        ("a: &x 1\nb: *x\n", "1:4: unsupported YAML (an anchor)"),
        ("a: !!str 1\n", "1:4: unsupported YAML (a tag)"),
        (
            "? a\n: b\n",
            "1:1: unsupported YAML (a complex mapping key)",
        ),
        ("a: 1\n---\nb: 2\n", "2:1: a second YAML document"),
        ("a: [1, 2\n", "2:1: expected `,` or `]`, found end of file"),
        (
            "a: \"open\n",
            "2:1: expected a closing `\"`, found end of file",
        ),
        ("", "1:1: expected a Pod manifest, found an empty file"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{text:?}: {err}");
    }
}
