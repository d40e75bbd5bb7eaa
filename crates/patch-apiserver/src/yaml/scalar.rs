//! Scalars, decoded with a map from each value byte back to the source.

use super::{Kind, Node, Parser, Scalar, Span, Style};
use crate::error::PatchError;

/// Collects a decoded value and, per value byte, its source offset.
struct Builder {
    value: String,
    raw: Vec<usize>,
    /// Value length up to which trailing blanks may not be trimmed (escaped ones).
    keep: usize,
}

impl Builder {
    fn new() -> Self {
        Builder {
            value: String::new(),
            raw: Vec::new(),
            keep: 0,
        }
    }

    /// A character copied from source offset `at`.
    fn copy(&mut self, c: char, at: usize) {
        for i in 0..c.len_utf8() {
            self.raw.push(at + i);
        }
        self.value.push(c);
    }

    /// A character produced by an escape or a line fold at source offset `at`.
    fn produce(&mut self, c: char, at: usize) {
        for _ in 0..c.len_utf8() {
            self.raw.push(at);
        }
        self.value.push(c);
        self.keep = self.value.len();
    }

    fn trim_blanks(&mut self) {
        while self.value.len() > self.keep
            && (self.value.ends_with(' ') || self.value.ends_with('\t'))
        {
            self.value.pop();
            self.raw.pop();
        }
    }

    fn finish(mut self, style: Style, span: Span) -> Node {
        self.raw
            .push(span.end - usize::from(matches!(style, Style::Single | Style::Double)));
        Node {
            span,
            kind: Kind::Scalar(Scalar {
                style,
                value: self.value,
                raw: self.raw,
            }),
        }
    }
}

impl Parser<'_> {
    fn char_at(&self, off: usize) -> Option<char> {
        self.src.get(off..).and_then(|s| s.chars().next())
    }

    /// Steps from the `\r` of a `\r\n` onto its `\n`.
    fn crlf(&self, off: usize) -> usize {
        if self.at(off) == b'\r' && self.at(off + 1) == b'\n' {
            off + 1
        } else {
            off
        }
    }

    /// A single-line plain scalar covering exactly `off..end`.
    pub(super) fn plain_span(&self, off: usize, end: usize) -> Node {
        let mut b = Builder::new();
        for (i, c) in self.src[off..end].char_indices() {
            b.copy(c, off + i);
        }
        b.finish(Style::Plain, Span { start: off, end })
    }

    pub(super) fn block_scalar_value(&self, off: usize, parent: isize) -> Result<Node, PatchError> {
        self.refuse_indicator_scalar(off)?;
        match self.at(off) {
            b'"' | b'\'' => self.quoted(off),
            _ => Ok(self.plain_block(off, parent)),
        }
    }

    fn refuse_indicator_scalar(&self, off: usize) -> Result<(), PatchError> {
        match self.at(off) {
            b'&' => Err(self.unsupported(off, "an anchor")),
            b'*' => Err(self.unsupported(off, "an alias")),
            b'!' => Err(self.unsupported(off, "a tag")),
            b'?' => Err(self.unsupported(off, "a complex mapping key")),
            b'%' | b'@' | b'`' | b']' | b'}' | b',' | b'#' => {
                Err(self.err_unexpected(off, "a YAML node"))
            }
            _ => Ok(()),
        }
    }

    /// Reads plain content on one line from `off`: up to a comment, a `: ` or the
    /// line's end, without trailing blanks. Returns the content's end.
    fn plain_line(&self, b: &mut Builder, off: usize, flow: bool) -> usize {
        let line_end = self.line_end(off);
        let mut p = off;
        let mut end = off;
        while p < line_end {
            let c = self.at(p);
            if c == b'#' && p > off && Self::is_blank(self.at(p - 1)) {
                break;
            }
            let next = self.at(p + 1);
            if c == b':'
                && (Self::is_blank(next)
                    || Self::is_break_or_end(next)
                    || (flow && b",[]{}".contains(&next)))
            {
                break;
            }
            if flow && b",[]{}".contains(&c) {
                break;
            }
            if c == b'\r' {
                break;
            }
            let Some(ch) = self.char_at(p) else { break };
            b.copy(ch, p);
            p += ch.len_utf8();
            if !Self::is_blank(c) {
                end = p;
            }
        }
        b.trim_blanks();
        end
    }

    /// A plain scalar in block context; lines indented deeper than `parent` continue it.
    fn plain_block(&self, off: usize, parent: isize) -> Node {
        let mut b = Builder::new();
        let mut end = self.plain_line(&mut b, off, false);
        loop {
            // A comment or anything but the line's end stops the scalar here.
            let after = self.crlf(self.skip_blanks(end));
            if self.at(after) != b'\n' {
                break;
            }
            let mut breaks = 0;
            let mut next = after + 1;
            let content = loop {
                let content = self.crlf(self.skip_blanks(next));
                if self.at(content) == b'\n' {
                    breaks += 1;
                    next = content + 1;
                    continue;
                }
                break content;
            };
            let indent = self.src[next..content]
                .bytes()
                .take_while(|&c| c == b' ')
                .count();
            let c = self.at(content);
            if c == 0
                || c == b'\r'
                || c == b'#'
                || indent as isize <= parent
                || self.is_doc_marker(next)
            {
                break;
            }
            if breaks == 0 {
                b.produce(' ', end);
            } else {
                for _ in 0..breaks {
                    b.produce('\n', end);
                }
            }
            let e = self.plain_line(&mut b, content, false);
            if e == content {
                break;
            }
            end = e;
        }
        b.finish(Style::Plain, Span { start: off, end })
    }

    /// A plain scalar inside `[...]` or `{...}`.
    pub(super) fn plain_flow(&self, off: usize) -> Node {
        let mut b = Builder::new();
        let mut end = self.plain_line(&mut b, off, true);
        loop {
            let after = self.crlf(self.skip_blanks(end));
            if self.at(after) != b'\n' {
                break;
            }
            let mut breaks = 0;
            let mut next = after + 1;
            let content = loop {
                let content = self.crlf(self.skip_blanks(next));
                if self.at(content) == b'\n' {
                    breaks += 1;
                    next = content + 1;
                    continue;
                }
                break content;
            };
            let c = self.at(content);
            if c == 0 || c == b'#' || b",[]{}:".contains(&c) || c == b'\r' {
                break;
            }
            if breaks == 0 {
                b.produce(' ', end);
            } else {
                for _ in 0..breaks {
                    b.produce('\n', end);
                }
            }
            let e = self.plain_line(&mut b, content, true);
            if e == content {
                break;
            }
            end = e;
        }
        b.finish(Style::Plain, Span { start: off, end })
    }

    /// Folds the line break at `nl` inside a quoted scalar; returns where content resumes.
    fn fold_quoted(&self, b: &mut Builder, nl: usize, escaped: bool) -> usize {
        if !escaped {
            b.trim_blanks();
        }
        let mut p = nl;
        let mut breaks = 0;
        loop {
            // `p` is at a line break: step over it and the next line's indentation.
            if self.at(p) == b'\r' {
                p += 1;
            }
            if self.at(p) == b'\n' {
                p += 1;
            }
            p = self.skip_blanks(p);
            if self.at(p) == b'\n' || self.at(p) == b'\r' {
                breaks += 1;
                continue;
            }
            break;
        }
        if breaks == 0 {
            if !escaped {
                b.produce(' ', nl);
            }
        } else {
            for _ in 0..breaks {
                b.produce('\n', nl);
            }
        }
        p
    }

    /// A single- or double-quoted scalar starting at its opening quote.
    pub(super) fn quoted(&self, off: usize) -> Result<Node, PatchError> {
        let double = self.at(off) == b'"';
        let mut b = Builder::new();
        let mut p = off + 1;
        loop {
            let Some(c) = self.char_at(p) else {
                return Err(self.err_unexpected(
                    p,
                    if double {
                        "a closing `\"`"
                    } else {
                        "a closing `'`"
                    },
                ));
            };
            match c {
                '\'' if !double => {
                    if self.at(p + 1) == b'\'' {
                        b.produce('\'', p);
                        p += 2;
                    } else {
                        p += 1;
                        break;
                    }
                }
                '"' if double => {
                    p += 1;
                    break;
                }
                '\n' | '\r' => p = self.fold_quoted(&mut b, p, false),
                '\\' if double => p = self.escape(&mut b, p)?,
                _ => {
                    b.copy(c, p);
                    p += c.len_utf8();
                }
            }
        }
        let style = if double { Style::Double } else { Style::Single };
        Ok(b.finish(style, Span { start: off, end: p }))
    }

    /// Decodes the escape at `p` (a backslash); returns the offset after it.
    fn escape(&self, b: &mut Builder, p: usize) -> Result<usize, PatchError> {
        let simple = |c: u8| -> Option<char> {
            Some(match c {
                b'0' => '\0',
                b'a' => '\u{7}',
                b'b' => '\u{8}',
                b't' | b'\t' => '\t',
                b'n' => '\n',
                b'v' => '\u{b}',
                b'f' => '\u{c}',
                b'r' => '\r',
                b'e' => '\u{1b}',
                b' ' => ' ',
                b'"' => '"',
                b'/' => '/',
                b'\\' => '\\',
                b'N' => '\u{85}',
                b'_' => '\u{a0}',
                b'L' => '\u{2028}',
                b'P' => '\u{2029}',
                _ => return None,
            })
        };
        let e = self.at(p + 1);
        if let Some(c) = simple(e) {
            b.produce(c, p);
            return Ok(p + 2);
        }
        if e == b'\n' || e == b'\r' {
            return Ok(self.fold_quoted(b, p + 1, true));
        }
        let digits = match e {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => return Err(self.err_unexpected(p + 1, "a valid escape after `\\`")),
        };
        let hex = self.src.get(p + 2..p + 2 + digits).unwrap_or("");
        let c = u32::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.len() == digits && hex.bytes().all(|h| h.is_ascii_hexdigit()))
            .and_then(char::from_u32)
            .ok_or_else(|| self.err_unexpected(p + 2, "hexadecimal digits of a character"))?;
        b.produce(c, p);
        Ok(p + 2 + digits)
    }

    /// A `|` or `>` block scalar; its content is indented deeper than `parent`.
    pub(super) fn block_scalar(&self, off: usize, parent: isize) -> Result<Node, PatchError> {
        let folded = self.at(off) == b'>';
        let mut chomp = b' ';
        let mut p = off + 1;
        loop {
            match self.at(p) {
                c @ (b'+' | b'-') if chomp == b' ' => chomp = c,
                b'1'..=b'9' => {
                    return Err(self.unsupported(p, "a block scalar indentation indicator"));
                }
                _ => break,
            }
            p += 1;
        }
        self.expect_eol(p)?;
        let header_end = p;
        // Content lines: blank ones, and those indented at least as deep as the first.
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut indent = None;
        let mut next = self.line_end(p) + 1;
        while next <= self.src.len() && self.at(next - 1) == b'\n' {
            let end = self.line_end(next);
            let text = &self.src[next..end];
            let spaces = text.bytes().take_while(|&c| c == b' ').count();
            if text.trim_end_matches([' ', '\r']).is_empty() {
                lines.push((next, end));
            } else {
                let want = *indent.get_or_insert(spaces);
                if spaces < want || (spaces as isize) <= parent || self.is_doc_marker(next) {
                    break;
                }
                lines.push((next, end));
            }
            next = end + 1;
        }
        let indent = indent
            .filter(|&i| i as isize > parent)
            .unwrap_or(usize::MAX);
        let mut trailing = 0;
        while lines
            .last()
            .is_some_and(|&(s, e)| self.src[s..e].trim_end_matches([' ', '\r']).is_empty())
        {
            lines.pop();
            trailing += 1;
        }
        let mut b = Builder::new();
        let mut last_end = header_end;
        let mut prev_normal: Option<bool> = None;
        let mut breaks = 0;
        for &(s, e) in &lines {
            let text = self.src[s..e].trim_end_matches('\r');
            if text.len() <= indent || text.trim_end().is_empty() && text.len() < indent {
                breaks += 1;
                continue;
            }
            let content = s + indent;
            let normal = !matches!(self.at(content), b' ' | b'\t');
            match prev_normal {
                Some(true) if folded && normal && breaks == 0 => b.produce(' ', last_end),
                Some(prev) if folded && prev && normal => {
                    for _ in 0..breaks {
                        b.produce('\n', last_end);
                    }
                }
                Some(_) => {
                    for _ in 0..=breaks {
                        b.produce('\n', last_end);
                    }
                }
                None => {
                    for _ in 0..breaks {
                        b.produce('\n', last_end);
                    }
                }
            }
            for (i, c) in self.src[content..s + text.len()].char_indices() {
                b.copy(c, content + i);
            }
            b.keep = b.value.len();
            prev_normal = Some(normal);
            breaks = 0;
            last_end = s + text.len();
        }
        if prev_normal.is_some() && chomp != b'-' {
            b.produce('\n', last_end);
        }
        if chomp == b'+' {
            for _ in 0..breaks + trailing {
                b.produce('\n', last_end);
            }
        }
        let style = if folded {
            Style::Folded
        } else {
            Style::Literal
        };
        let end = lines.last().map_or(header_end, |&(s, e)| e.max(s));
        Ok(b.finish(style, Span { start: off, end }))
    }
}
