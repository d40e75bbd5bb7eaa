//! Block collections: indentation decides where each node ends.

use super::{Entry, Item, Kind, Map, Node, Parser, Seq, Span};
use crate::error::PatchError;

impl Parser<'_> {
    /// Parses the block node starting at `off`; `parent` is the indentation of the
    /// enclosing collection (-1 at the root), which continuation lines must exceed.
    pub(super) fn block_node(&self, off: usize, parent: isize) -> Result<Node, PatchError> {
        match self.at(off) {
            b'-' if self.is_dash(off) => self.block_seq(off),
            b'[' | b'{' => {
                let node = self.flow_node(off)?;
                if self.at(self.skip_blanks(node.span.end)) == b':' {
                    return Err(self.unsupported(off, "a collection as a mapping key"));
                }
                Ok(node)
            }
            b'|' | b'>' => self.block_scalar(off, parent),
            _ => match self.key_end(off)? {
                Some(_) => self.block_map(off),
                None => self.block_scalar_value(off, parent),
            },
        }
    }

    fn refuse_indicator(&self, off: usize) -> Result<(), PatchError> {
        match self.at(off) {
            b'&' => Err(self.unsupported(off, "an anchor")),
            b'*' => Err(self.unsupported(off, "an alias")),
            b'!' => Err(self.unsupported(off, "a tag")),
            b'?' => Err(self.unsupported(off, "a complex mapping key")),
            b'%' | b'@' | b'`' | b']' | b'}' | b',' => Err(self.err_unexpected(off, "a YAML node")),
            _ => Ok(()),
        }
    }

    /// If a mapping key starts at `off`, returns it and the offset after its `:`.
    fn key_end(&self, off: usize) -> Result<Option<(Node, usize)>, PatchError> {
        self.refuse_indicator(off)?;
        let (key, after) = match self.at(off) {
            b'"' | b'\'' => {
                let key = self.quoted(off)?;
                let end = key.span.end;
                (key, end)
            }
            _ => {
                let line_end = self.line_end(off);
                let mut p = off;
                loop {
                    if p >= line_end {
                        return Ok(None);
                    }
                    let b = self.at(p);
                    if b == b'#' && p > off && Self::is_blank(self.at(p - 1)) {
                        return Ok(None);
                    }
                    if b == b':'
                        && (Self::is_blank(self.at(p + 1)) || Self::is_break_or_end(self.at(p + 1)))
                    {
                        break;
                    }
                    p += 1;
                }
                let mut end = p;
                while end > off && Self::is_blank(self.at(end - 1)) {
                    end -= 1;
                }
                (self.plain_span(off, end), p)
            }
        };
        let colon = self.skip_blanks(after);
        let b = self.at(colon);
        if b == b':'
            && (Self::is_blank(self.at(colon + 1)) || Self::is_break_or_end(self.at(colon + 1)))
        {
            Ok(Some((key, colon + 1)))
        } else {
            Ok(None)
        }
    }

    fn block_map(&self, off: usize) -> Result<Node, PatchError> {
        let c = self.col(off);
        let mut entries = Vec::new();
        let mut p = off;
        let mut end;
        loop {
            let Some((key, after)) = self.key_end(p)? else {
                return Err(self.err_unexpected(p, "a mapping key (`key: value`)"));
            };
            let value = self.map_value(after, c)?;
            end = value.span.end.max(after);
            self.expect_eol(end)?;
            entries.push(Entry { key, value });
            match self.next_content(end) {
                Some(q) if self.col(q) == c && !self.is_doc_marker(q) && !self.is_dash(q) => p = q,
                Some(q) if self.col(q) > c => {
                    return Err(self.err_unexpected(q, "a key at the mapping's indentation"));
                }
                _ => break,
            }
        }
        Ok(Node {
            span: Span { start: off, end },
            kind: Kind::Map(Map {
                flow: false,
                entries,
            }),
        })
    }

    /// The value after `key:`, on the same line or the following ones.
    fn map_value(&self, after: usize, c: usize) -> Result<Node, PatchError> {
        let q = self.skip_blanks(after);
        let b = self.at(q);
        if Self::is_break_or_end(b) || (b == b'#' && q > after) {
            return match self.next_content(q) {
                Some(n)
                    if !self.is_doc_marker(n)
                        && (self.col(n) > c || (self.col(n) == c && self.is_dash(n))) =>
                {
                    self.block_node(n, c as isize)
                }
                _ => Ok(self.null_at(after)),
            };
        }
        if self.is_dash(q) {
            return Err(self.err_unexpected(q, "a value (a block sequence starts on its own line)"));
        }
        match b {
            b'|' | b'>' => self.block_scalar(q, c as isize),
            b'[' | b'{' => self.flow_node(q),
            _ => {
                if self.key_end(q)?.is_some() {
                    return Err(
                        self.err_unexpected(q, "a value (a nested mapping starts on its own line)")
                    );
                }
                self.block_scalar_value(q, c as isize)
            }
        }
    }

    fn block_seq(&self, off: usize) -> Result<Node, PatchError> {
        let c = self.col(off);
        let mut items = Vec::new();
        let mut p = off;
        let mut end;
        loop {
            let q = self.skip_blanks(p + 1);
            let b = self.at(q);
            let node = if Self::is_break_or_end(b) || b == b'#' {
                match self.next_content(q) {
                    Some(n) if self.col(n) > c && !self.is_doc_marker(n) => {
                        self.block_node(n, c as isize)?
                    }
                    _ => self.null_at(p + 1),
                }
            } else {
                self.block_node(q, c as isize)?
            };
            end = node.span.end.max(p + 1);
            self.expect_eol(end)?;
            items.push(Item { dash: p, node });
            match self.next_content(end) {
                Some(q) if self.col(q) == c && self.is_dash(q) => p = q,
                Some(q) if self.col(q) > c => {
                    return Err(self.err_unexpected(
                        q,
                        "a sequence item (`- `) at the sequence's indentation",
                    ));
                }
                _ => break,
            }
        }
        Ok(Node {
            span: Span { start: off, end },
            kind: Kind::Seq(Seq { flow: false, items }),
        })
    }

    pub(super) fn null_at(&self, off: usize) -> Node {
        Node {
            span: Span {
                start: off,
                end: off,
            },
            kind: Kind::Scalar(super::Scalar {
                style: super::Style::Plain,
                value: String::new(),
                raw: vec![off],
            }),
        }
    }
}
