//! Flow collections (`[...]`, `{...}`), which is also how JSON manifests look.

use super::{Entry, Item, Kind, Map, Node, Parser, Seq, Span};
use crate::error::PatchError;

impl Parser<'_> {
    /// Skips whitespace, line breaks and comments between flow tokens.
    fn skip_flow_space(&self, mut off: usize) -> usize {
        loop {
            match self.at(off) {
                b' ' | b'\t' | b'\n' | b'\r' => off += 1,
                b'#' if self.after_space(off) => off = self.line_end(off),
                _ => return off,
            }
        }
    }

    pub(super) fn flow_node(&self, off: usize) -> Result<Node, PatchError> {
        match self.at(off) {
            b'[' => self.flow_seq(off),
            b'{' => self.flow_map(off),
            b'"' | b'\'' => self.quoted(off),
            b'&' => Err(self.unsupported(off, "an anchor")),
            b'*' => Err(self.unsupported(off, "an alias")),
            b'!' => Err(self.unsupported(off, "a tag")),
            b'?' => Err(self.unsupported(off, "a complex mapping key")),
            b']' | b'}' | b',' | b':' | b'#' | b'%' | b'@' | b'`' | b'|' | b'>' | 0 => {
                Err(self.err_unexpected(off, "a value"))
            }
            b'-' if self.is_dash(off) => Err(self.err_unexpected(off, "a value")),
            _ => Ok(self.plain_flow(off)),
        }
    }

    fn flow_seq(&self, off: usize) -> Result<Node, PatchError> {
        let mut items = Vec::new();
        let mut p = off + 1;
        loop {
            p = self.skip_flow_space(p);
            if self.at(p) == b']' {
                break;
            }
            let node = self.flow_node(p)?;
            let q = self.skip_flow_space(node.span.end);
            if self.at(q) == b':' {
                return Err(self.unsupported(q, "a mapping inside a flow sequence"));
            }
            items.push(Item { dash: p, node });
            match self.at(q) {
                b',' => p = q + 1,
                b']' => {
                    p = q;
                    break;
                }
                _ => return Err(self.err_unexpected(q, "`,` or `]`")),
            }
        }
        Ok(Node {
            span: Span {
                start: off,
                end: p + 1,
            },
            kind: Kind::Seq(Seq { flow: true, items }),
        })
    }

    fn flow_map(&self, off: usize) -> Result<Node, PatchError> {
        let mut entries = Vec::new();
        let mut p = off + 1;
        loop {
            p = self.skip_flow_space(p);
            if self.at(p) == b'}' {
                break;
            }
            let key = match self.at(p) {
                b'[' | b'{' => return Err(self.unsupported(p, "a collection as a mapping key")),
                _ => self.flow_node(p)?,
            };
            let colon = self.skip_flow_space(key.span.end);
            if self.at(colon) != b':' {
                return Err(self.err_unexpected(colon, "`:` after the key"));
            }
            let v = self.skip_flow_space(colon + 1);
            let value = match self.at(v) {
                b',' | b'}' => self.null_at(colon + 1),
                _ => self.flow_node(v)?,
            };
            let q = self.skip_flow_space(value.span.end);
            entries.push(Entry { key, value });
            match self.at(q) {
                b',' => p = q + 1,
                b'}' => {
                    p = q;
                    break;
                }
                _ => return Err(self.err_unexpected(q, "`,` or `}`")),
            }
        }
        Ok(Node {
            span: Span {
                start: off,
                end: p + 1,
            },
            kind: Kind::Map(Map {
                flow: true,
                entries,
            }),
        })
    }
}
