//! A locator for the YAML subset Pod manifests use: block and flow collections and
//! scalars, each node carrying its byte span in the original text.
//!
//! It exists because a YAML serializer cannot write text back without losing comments,
//! quoting and layout: we parse only to find positions, then splice text. Anchors,
//! aliases, tags and complex keys are refused rather than guessed at. serde_norway
//! checks the text first, so this parser only has to be right on valid YAML, and
//! must merely not panic or misplace edits on anything else.

mod block;
mod flow;
mod scalar;

use crate::error::{PatchError, Pos};

/// Byte range `start..end` in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Seq),
    Map(Map),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Single,
    Double,
    Literal,
    Folded,
}

#[derive(Debug)]
pub(crate) struct Scalar {
    pub style: Style,
    pub value: String,
    /// `raw[i]` is the source offset of value byte `i`; one extra entry marks the end,
    /// so an edit at any value position can be mapped back to the source.
    pub raw: Vec<usize>,
}

impl Scalar {
    /// The source offset of value byte `i` (the value's end for `i >= len`).
    pub fn source_offset(&self, i: usize) -> usize {
        self.raw
            .get(i)
            .or(self.raw.last())
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(crate) struct Seq {
    pub flow: bool,
    pub items: Vec<Item>,
}

#[derive(Debug)]
pub(crate) struct Item {
    /// Where the `- ` indicator is (block) or the item starts (flow).
    pub dash: usize,
    pub node: Node,
}

#[derive(Debug)]
pub(crate) struct Map {
    pub flow: bool,
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub key: Node,
    pub value: Node,
}

impl Node {
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        self.as_scalar().map(|s| s.value.as_str())
    }
    pub fn as_seq(&self) -> Option<&Seq> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&Map> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }
    /// An empty plain scalar: `key:` with nothing after it.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.style == Style::Plain && s.value.is_empty())
    }
}

impl Map {
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.as_str() == Some(key))
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }
}

/// Parses one YAML document into a node tree with source spans.
pub(crate) fn parse(text: &str) -> Result<Node, PatchError> {
    let mut p = Parser { src: text };
    p.document()
}

/// Offset of the start of the line that holds `off`.
pub(crate) fn line_start(text: &str, off: usize) -> usize {
    let off = off.min(text.len());
    text.as_bytes()[..off]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

/// Offset of the `\n` ending the line that holds `off`, or the text's length.
pub(crate) fn line_end(text: &str, off: usize) -> usize {
    let off = off.min(text.len());
    text.as_bytes()[off..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| off + i)
}

/// Column in bytes; indentation is spaces only, so this is exact where it matters.
pub(crate) fn col(text: &str, off: usize) -> usize {
    off.min(text.len()) - line_start(text, off)
}

pub(crate) struct Parser<'a> {
    pub src: &'a str,
}

impl Parser<'_> {
    fn bytes(&self) -> &[u8] {
        self.src.as_bytes()
    }

    fn at(&self, off: usize) -> u8 {
        self.bytes().get(off).copied().unwrap_or(0)
    }

    fn pos(&self, off: usize) -> Pos {
        Pos::of(self.src, off)
    }

    fn err_unexpected(&self, off: usize, expected: &'static str) -> PatchError {
        let found = match self.src.get(off..).and_then(|s| s.chars().next()) {
            None => "end of file".to_string(),
            Some('\n') | Some('\r') => "end of line".to_string(),
            Some(c) => format!("{c:?}"),
        };
        PatchError::Unexpected {
            at: self.pos(off),
            expected,
            found,
        }
    }

    fn unsupported(&self, off: usize, what: &'static str) -> PatchError {
        PatchError::Unsupported {
            at: self.pos(off),
            what,
        }
    }

    pub(crate) fn line_end(&self, off: usize) -> usize {
        line_end(self.src, off)
    }

    /// Column in bytes; indentation is spaces only, so this is exact where it matters.
    pub(crate) fn col(&self, off: usize) -> usize {
        col(self.src, off)
    }

    fn is_blank(b: u8) -> bool {
        b == b' ' || b == b'\t'
    }

    fn is_break_or_end(b: u8) -> bool {
        b == b'\n' || b == b'\r' || b == 0
    }

    fn skip_blanks(&self, mut off: usize) -> usize {
        while Self::is_blank(self.at(off)) {
            off += 1;
        }
        off
    }

    /// The next offset at or after `off` holding content: not whitespace, not a line
    /// break, not a comment. `None` at the end of the text.
    fn next_content(&self, mut off: usize) -> Option<usize> {
        let b = self.bytes();
        while off < b.len() {
            match b[off] {
                b' ' | b'\t' | b'\n' | b'\r' => off += 1,
                b'#' if self.after_space(off) => {
                    off = self.line_end(off);
                }
                _ => return Some(off),
            }
        }
        None
    }

    /// After a node, the rest of the line must be blank or a comment.
    fn expect_eol(&self, off: usize) -> Result<(), PatchError> {
        let o = self.skip_blanks(off);
        let b = self.at(o);
        if Self::is_break_or_end(b) || (b == b'#' && (o > off || self.after_space(o))) {
            return Ok(());
        }
        Err(self.err_unexpected(o, "end of line"))
    }

    /// Whether `off` starts a line or follows whitespace, as a comment's `#` must.
    fn after_space(&self, off: usize) -> bool {
        off == 0 || matches!(self.at(off - 1), b' ' | b'\t' | b'\n' | b'\r')
    }

    fn is_dash(&self, off: usize) -> bool {
        self.at(off) == b'-'
            && (Self::is_blank(self.at(off + 1)) || Self::is_break_or_end(self.at(off + 1)))
    }

    /// `---` or `...` at the start of a line, followed by a space or the line's end.
    fn is_doc_marker(&self, off: usize) -> bool {
        self.col(off) == 0
            && (self.src[off..].starts_with("---") || self.src[off..].starts_with("..."))
            && (Self::is_blank(self.at(off + 3)) || Self::is_break_or_end(self.at(off + 3)))
    }

    fn document(&mut self) -> Result<Node, PatchError> {
        let start = usize::from(self.src.starts_with('\u{feff}')) * 3;
        let Some(mut off) = self.next_content(start) else {
            return Err(PatchError::Unexpected {
                at: self.pos(self.src.len()),
                expected: "a Pod manifest",
                found: "an empty file".into(),
            });
        };
        if self.at(off) == b'%' {
            return Err(self.unsupported(off, "a directive"));
        }
        if self.is_doc_marker(off) && self.at(off) == b'-' {
            off = match self.next_content(off + 3) {
                Some(o) => o,
                None => {
                    return Err(PatchError::Unexpected {
                        at: self.pos(self.src.len()),
                        expected: "a Pod manifest",
                        found: "an empty document".into(),
                    });
                }
            };
        }
        let root = self.block_node(off, -1)?;
        self.expect_eol(root.span.end)?;
        if let Some(next) = self.next_content(root.span.end) {
            if self.is_doc_marker(next) && self.at(next) == b'.' {
                if let Some(after) = self.next_content(next + 3) {
                    return Err(PatchError::SeveralDocuments {
                        at: self.pos(after),
                    });
                }
            } else if self.is_doc_marker(next) {
                return Err(PatchError::SeveralDocuments { at: self.pos(next) });
            } else {
                return Err(self.err_unexpected(next, "the end of the document"));
            }
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests;
