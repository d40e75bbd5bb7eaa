//! Text splices, and how new nodes are laid out to match their neighbours.

use crate::error::{PatchError, Pos};
use crate::yaml::{Node, Style, col, line_end, line_start};

/// Replace `start..end` with `text` (an insertion when `start == end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

impl Edit {
    pub fn insert(at: usize, text: String) -> Self {
        Edit {
            start: at,
            end: at,
            text,
        }
    }
    pub fn delete(start: usize, end: usize) -> Self {
        Edit {
            start,
            end,
            text: String::new(),
        }
    }
}

/// Applies edits; insertions at one offset keep the order they were made in.
pub(crate) fn apply(src: &str, mut edits: Vec<Edit>) -> Result<String, PatchError> {
    edits.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(src.len() + 512);
    let mut at = 0;
    for e in &edits {
        if e.start < at
            || e.end < e.start
            || e.end > src.len()
            || !src.is_char_boundary(e.start)
            || !src.is_char_boundary(e.end)
        {
            return Err(PatchError::Internal(format!(
                "overlapping or misplaced edit at {}",
                Pos::of(src, e.start)
            )));
        }
        out.push_str(&src[at..e.start]);
        out.push_str(&e.text);
        at = e.end;
    }
    out.push_str(&src[at..]);
    Ok(out)
}

/// A node we add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum New {
    Str(String),
    Map(Vec<(&'static str, New)>),
}

/// Escapes `s` for splicing inside a scalar of `style`.
pub(crate) fn escape(s: &str, style: Style) -> String {
    match style {
        Style::Double => s.replace('\\', "\\\\").replace('"', "\\\""),
        Style::Single => s.replace('\'', "''"),
        Style::Plain | Style::Literal | Style::Folded => s.to_string(),
    }
}

fn scalar(s: &str, style: Style) -> String {
    match style {
        Style::Double => format!("\"{}\"", escape(s, style)),
        Style::Single => format!("'{}'", escape(s, style)),
        _ => s.to_string(),
    }
}

/// JSON-style flow text, which is valid YAML too.
fn flow(node: &New, style: Style) -> String {
    match node {
        New::Str(s) => scalar(s, style),
        New::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("\"{k}\": {}", flow(v, Style::Double)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Block lines relative to the node's own column; nested maps indent by `unit`.
fn block(node: &New, style: Style, unit: usize) -> Vec<String> {
    match node {
        New::Str(s) => vec![scalar(s, style)],
        New::Map(entries) => {
            let mut lines = Vec::new();
            for (k, v) in entries {
                match v {
                    New::Str(s) => lines.push(format!("{k}: {}", scalar(s, Style::Plain))),
                    New::Map(_) => {
                        lines.push(format!("{k}:"));
                        lines.extend(
                            block(v, style, unit)
                                .into_iter()
                                .map(|l| format!("{}{l}", " ".repeat(unit))),
                        );
                    }
                }
            }
            lines
        }
    }
}

/// The line break that ends the line holding `off`: `\r\n` or `\n`. The last line of a
/// file without a final newline takes the break of the line before it.
pub(crate) fn eol_at(text: &str, off: usize) -> &'static str {
    let b = text.as_bytes();
    let le = line_end(text, off);
    let crlf = if le < text.len() {
        le > 0 && b[le - 1] == b'\r'
    } else {
        let ls = line_start(text, off);
        ls >= 2 && b[ls - 2] == b'\r'
    };
    if crlf { "\r\n" } else { "\n" }
}

/// Inserts whole lines after the line holding `off`. The text starts with the line
/// break, so a file without a final newline keeps having none. The new lines copy the
/// break of the line they follow, so no existing line changes its line end.
pub(crate) fn lines_after(text: &str, off: usize, lines: &[String]) -> Edit {
    let mut at = line_end(text, off);
    let eol = eol_at(text, off);
    // A CRLF line gets its new lines inserted before its `\r`.
    if eol == "\r\n" && at > 0 && text.as_bytes()[at - 1] == b'\r' {
        at -= 1;
    }
    let mut s = String::new();
    for l in lines {
        s.push_str(eol);
        s.push_str(l);
    }
    Edit::insert(at, s)
}

/// Inserts whole lines before the line holding `off`, each ending with that line's break.
fn lines_before(text: &str, off: usize, lines: &[String]) -> Edit {
    let eol = eol_at(text, off);
    let s: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
    Edit::insert(line_start(text, off), s)
}

/// Deletes the lines holding `start..end`, with the line break before them (the
/// inverse of `lines_after`).
pub(crate) fn delete_lines(text: &str, start: usize, end: usize) -> Result<Edit, PatchError> {
    let ls = line_start(text, start);
    if !text[ls..start].bytes().all(|b| b == b' ') {
        return Err(PatchError::Unexpected {
            at: Pos::of(text, start),
            expected: "an item that starts its own line",
            found: "text before it".into(),
        });
    }
    let le = line_end(text, end);
    let b = text.as_bytes();
    // The last line of a CRLF file without a final newline came with a whole `\r\n`.
    if le == text.len() && ls >= 2 && b[ls - 2] == b'\r' && b[le - 1] != b'\r' {
        return Ok(Edit::delete(ls - 2, le));
    }
    Ok(if ls > 0 {
        Edit::delete(ls - 1, le)
    } else {
        Edit::delete(0, (le + 1).min(text.len()))
    })
}

/// The leading spaces of the line holding `off`.
fn indent_of(text: &str, off: usize) -> &str {
    let ls = line_start(text, off);
    let n = text[ls..].bytes().take_while(|&b| b == b' ').count();
    &text[ls..ls + n]
}

fn same_line(text: &str, a: usize, b: usize) -> bool {
    line_start(text, a) == line_start(text, b)
}

/// Appends items to a sequence, in its style.
pub(crate) fn append_items(
    text: &str,
    seq: &Node,
    items: &[New],
    style: Style,
    unit: usize,
) -> Result<Edit, PatchError> {
    let len = seq.as_seq().map_or(0, |s| s.items.len());
    insert_items(text, seq, len, items, style, unit)
}

/// Inserts items into a sequence before its item `before` (at the end when that is its
/// length), laid out like the item they follow (or, at the front, the one they precede).
pub(crate) fn insert_items(
    text: &str,
    seq: &Node,
    before: usize,
    items: &[New],
    style: Style,
    unit: usize,
) -> Result<Edit, PatchError> {
    let Some(s) = seq.as_seq() else {
        return Err(PatchError::Internal("insert into a non-sequence".into()));
    };
    let anchor = before.checked_sub(1).and_then(|i| s.items.get(i));
    if s.flow {
        let rendered: Vec<String> = items.iter().map(|i| flow(i, style)).collect();
        return Ok(match (anchor, s.items.get(before)) {
            (None, None) => Edit::insert(seq.span.start + 1, rendered.join(", ")),
            (Some(last), _) if same_line(text, last.node.span.start, seq.span.start) => {
                Edit::insert(last.node.span.end, format!(", {}", rendered.join(", ")))
            }
            (Some(last), _) => {
                let indent = indent_of(text, last.node.span.start);
                let sep = format!(",{}{indent}", eol_at(text, last.node.span.end));
                Edit::insert(last.node.span.end, format!("{sep}{}", rendered.join(&sep)))
            }
            // At the front: each item followed by the separator the first one had.
            (None, Some(first)) => {
                let sep = if same_line(text, first.dash, seq.span.start) {
                    ", ".to_string()
                } else {
                    format!(
                        ",{}{}",
                        eol_at(text, first.dash),
                        indent_of(text, first.dash)
                    )
                };
                let joined: String = rendered.iter().map(|r| format!("{r}{sep}")).collect();
                Edit::insert(first.dash, joined)
            }
        });
    }
    let Some(model) = anchor.or(s.items.get(before)) else {
        return Err(PatchError::Internal("empty block sequence".into()));
    };
    // Items written as `- {a: b}` get company in the same style.
    let flow_items = model.node.as_map().is_some_and(|m| m.flow);
    let dash = col(text, model.dash);
    let content = if !model.node.is_null() && same_line(text, model.dash, model.node.span.start) {
        col(text, model.node.span.start)
    } else {
        dash + 2
    };
    let mut lines = Vec::new();
    for item in items {
        let rendered = if flow_items {
            vec![flow(item, style)]
        } else {
            block(item, style, unit)
        };
        for (i, l) in rendered.into_iter().enumerate() {
            lines.push(if i == 0 {
                format!("{}-{}{l}", " ".repeat(dash), " ".repeat(content - dash - 1))
            } else {
                format!("{}{l}", " ".repeat(content))
            });
        }
    }
    match anchor {
        Some(last) => Ok(lines_after(text, last.node.span.end.max(last.dash), &lines)),
        None => {
            let ls = line_start(text, model.dash);
            if !text[ls..model.dash].bytes().all(|b| b == b' ') {
                return Err(PatchError::Unexpected {
                    at: Pos::of(text, model.dash),
                    expected: "a sequence item that starts its own line",
                    found: "text before it".into(),
                });
            }
            Ok(lines_before(text, model.dash, &lines))
        }
    }
}

/// Adds `key: [items]` to a mapping, in its style; `seq_indent` is how far a block
/// sequence's dashes sit right of their key.
pub(crate) fn add_key(
    text: &str,
    map: &Node,
    key: &'static str,
    items: &[New],
    json: bool,
    seq_indent: usize,
    unit: usize,
) -> Result<Edit, PatchError> {
    let Some(m) = map.as_map() else {
        return Err(PatchError::Internal("add a key to a non-mapping".into()));
    };
    let style = if json { Style::Double } else { Style::Plain };
    if m.flow {
        let k = scalar(key, style);
        let value = format!(
            "{k}: [{}]",
            items
                .iter()
                .map(|i| flow(i, Style::Double))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(match m.entries.last() {
            None => Edit::insert(map.span.start + 1, value),
            Some(last) if same_line(text, last.key.span.start, map.span.start) => Edit::insert(
                last.value.span.end.max(last.key.span.end),
                format!(", {value}"),
            ),
            Some(last) => {
                let indent = indent_of(text, last.key.span.start);
                let end = last.value.span.end.max(last.key.span.end);
                Edit::insert(end, format!(",{}{indent}{value}", eol_at(text, end)))
            }
        });
    }
    let (Some(first), Some(last)) = (m.entries.first(), m.entries.last()) else {
        return Err(PatchError::Internal("empty block mapping".into()));
    };
    let c = col(text, first.key.span.start);
    let dash = c + seq_indent;
    let mut lines = vec![format!("{}{key}:", " ".repeat(c))];
    for item in items {
        for (i, l) in block(item, Style::Plain, unit).into_iter().enumerate() {
            let lead = if i == 0 { "- " } else { "  " };
            lines.push(format!("{}{lead}{l}", " ".repeat(dash)));
        }
    }
    Ok(lines_after(
        text,
        last.value.span.end.max(last.key.span.end),
        &lines,
    ))
}

/// Deletes items `remove` (ascending indexes) of a sequence, with their separators.
pub(crate) fn delete_items(
    text: &str,
    seq: &Node,
    remove: &[usize],
) -> Result<Vec<Edit>, PatchError> {
    let Some(s) = seq.as_seq() else {
        return Err(PatchError::Internal("delete from a non-sequence".into()));
    };
    let spans: Vec<(usize, usize)> = s
        .items
        .iter()
        .map(|i| (i.dash, i.node.span.end.max(i.dash + 1)))
        .collect();
    delete_spans(text, s.flow, &spans, remove)
}

/// Deletes entries `remove` of a mapping.
pub(crate) fn delete_entries(
    text: &str,
    map: &Node,
    remove: &[usize],
) -> Result<Vec<Edit>, PatchError> {
    let Some(m) = map.as_map() else {
        return Err(PatchError::Internal("delete from a non-mapping".into()));
    };
    let spans: Vec<(usize, usize)> = m
        .entries
        .iter()
        .map(|e| (e.key.span.start, e.value.span.end.max(e.key.span.end)))
        .collect();
    delete_spans(text, m.flow, &spans, remove)
}

fn delete_spans(
    text: &str,
    flow: bool,
    spans: &[(usize, usize)],
    remove: &[usize],
) -> Result<Vec<Edit>, PatchError> {
    let mut edits = Vec::new();
    if !flow {
        // Neighbours go as one block of lines: at the end of a CRLF file without a final
        // line break, the last one takes the `\r\n` before it, which the one before it
        // would already have taken.
        let mut sorted: Vec<usize> = remove
            .iter()
            .copied()
            .filter(|&i| i < spans.len())
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut k = 0;
        while k < sorted.len() {
            let mut last = k;
            while last + 1 < sorted.len() && sorted[last + 1] == sorted[last] + 1 {
                last += 1;
            }
            edits.push(delete_lines(
                text,
                spans[sorted[k]].0,
                spans[sorted[last]].1,
            )?);
            k = last + 1;
        }
        return Ok(edits);
    }
    for &i in remove {
        let Some(&(start, end)) = spans.get(i) else {
            continue;
        };
        // Take the separator before the item, unless every item before it goes too.
        let kept_before = (0..i).any(|j| !remove.contains(&j));
        if kept_before {
            edits.push(Edit::delete(spans[i - 1].1, end));
        } else if let Some(&(next, _)) = spans.get(i + 1) {
            edits.push(Edit::delete(start, next));
        } else {
            edits.push(Edit::delete(start, end));
        }
    }
    Ok(edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn seq_at<'a>(root: &'a Node, key: &str) -> &'a Node {
        root.as_map().unwrap().get(key).unwrap()
    }

    #[test]
    fn appends_in_the_neighbours_style() {
        for (text, want) in [
            ("a:\n- x\n-   y\nb: 1\n", "a:\n- x\n-   y\n-   n\nb: 1\n"),
            ("a:\n  - 'x' # c\n", "a:\n  - 'x' # c\n  - 'n'\n"),
            ("a:\n  - x", "a:\n  - x\n  - n"),
            ("a: [x, y]\n", "a: [x, y, n]\n"),
            ("a: []\n", "a: [n]\n"),
            ("{\"a\": [\n  \"x\"\n]}", "{\"a\": [\n  \"x\",\n  \"n\"\n]}"),
        ] {
            let root = parse(text).unwrap();
            let seq = seq_at(&root, "a");
            let style = match seq
                .as_seq()
                .unwrap()
                .items
                .last()
                .and_then(|i| i.node.as_scalar())
            {
                Some(s) => s.style,
                None => Style::Plain,
            };
            let e = append_items(text, seq, &[New::Str("n".into())], style, 2).unwrap();
            assert_eq!(apply(text, vec![e]).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn deletes_are_inverse_of_appends() {
        for (text, remove, want) in [
            ("a:\n- x\n- n\nb: 1\n", vec![1], "a:\n- x\nb: 1\n"),
            ("a:\n- x\n- n\n- m", vec![1, 2], "a:\n- x"),
            ("a:\r\n- x\r\n- n\r\n- m", vec![1, 2], "a:\r\n- x"),
            ("a:\r\n- x\r\n- n\r\n- m", vec![0, 2], "a:\r\n- n"),
            ("a: [x, n, m]\n", vec![1, 2], "a: [x]\n"),
            ("a: [n, m, x]\n", vec![0, 1], "a: [x]\n"),
            ("a: [n]\n", vec![0], "a: []\n"),
        ] {
            let root = parse(text).unwrap();
            let edits = delete_items(text, seq_at(&root, "a"), &remove).unwrap();
            assert_eq!(apply(text, edits).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn overlapping_edits_are_an_error_not_a_panic() {
        let edits = vec![Edit::delete(0, 3), Edit::delete(2, 4)];
        assert!(matches!(
            apply("abcdef", edits),
            Err(PatchError::Internal(_))
        ));
        assert!(apply("ab", vec![Edit::delete(1, 9)]).is_err());
    }
}
