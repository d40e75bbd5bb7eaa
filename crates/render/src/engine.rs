//! The scanner: GNU envsubst's getc/ungetc state machine, rewritten to jump between `$`s with
//! `memchr` and to stop (rather than guess) when a reference runs past the end of a chunk.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use memchr::memchr;

use crate::Options;
use crate::error::{Missing, Origin, Reason, RenderError};
use crate::position::Tracker;
use crate::vars::{NameHasher, NameMap, Vars, is_name_char, is_name_start};

mod braces;
use braces::Braces;

/// How far a word is scanned for its `}` before the brace index is used.
const SHORT_WORD: usize = 256;

/// A `${NAME<op>word}` whose `}` lies this many bytes or more after its `$` is not interpreted:
/// it stays as written, as an unclosed one does. Without a bound, one unclosed `${A:-` would
/// hold the rest of the input in memory while the scanner waited for its `}`. The stream's
/// buffer is larger, so it always sees far enough to decide.
pub(crate) const MAX_REFERENCE: usize = 64 * 1024;

/// What `${VAR:=word}` may hold in all (names and values): the values live until the end of
/// the render, so without a bound a template of distinct assignments would fill memory.
pub(crate) const MAX_ASSIGNED: usize = 1024 * 1024;

/// A name in a report is cut after this many bytes.
const MAX_REPORTED_NAME: usize = 256;

/// A `${VAR:?message}` message is cut after this many bytes.
const MAX_MESSAGE: usize = 4096;

/// Problems reported one by one; the rest are only counted, so that a template of millions of
/// unset references cannot fill memory with reports.
pub(crate) const MAX_REPORTED: usize = 1000;

/// Words nested deeper than this (`${A:-${B:-${C:-...}}}`) are not interpreted, so that a
/// hostile template cannot exhaust the stack.
const MAX_NESTING: u8 = 32;

/// The shell operators of `--defaults`, after the name and an optional `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `-`: use `word` instead.
    UseDefault,
    /// `=`: use `word` and remember it for later references.
    AssignDefault,
    /// `?`: report `word` as an error.
    Require,
    /// `+`: use `word` only when the variable is there.
    UseAlternative,
}

impl Operator {
    fn from_byte(b: u8) -> Option<Operator> {
        match b {
            b'-' => Some(Operator::UseDefault),
            b'=' => Some(Operator::AssignDefault),
            b'?' => Some(Operator::Require),
            b'+' => Some(Operator::UseAlternative),
            _ => None,
        }
    }
}

/// Where rendered bytes go. The stream's output passes them on as they grow, so that one chunk
/// of references to a large value cannot pile up gigabytes before the chunk ends.
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Keeps the first `limit` bytes put, and whether more came: an assigned value or a message,
/// whose expansion (a word of references to large values) could otherwise be gigabytes.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Capped {
    fn new(limit: usize) -> Capped {
        Capped {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl Out for Capped {
    fn put(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if bytes.len() > room {
            self.overflowed = true;
        }
        self.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

enum State {
    Unset,
    Empty,
    NonEmpty,
}

pub(crate) struct Engine<'a> {
    vars: &'a Vars,
    only: Option<HashSet<Box<[u8]>, BuildHasherDefault<NameHasher>>>,
    strict: bool,
    no_empty: bool,
    defaults: bool,
    /// Values given by `${VAR:=word}`; they shadow `vars` for the rest of the render.
    assigned: NameMap<Vec<u8>>,
    /// Bytes of names and values in `assigned`, at most [`MAX_ASSIGNED`].
    assigned_bytes: usize,
    missing: Vec<Missing>,
    /// Problems beyond the first [`MAX_REPORTED`].
    unreported: u64,
    /// Present only when a problem can be reported: counting lines costs time otherwise.
    tracker: Option<Tracker>,
    /// Where `--defaults` words end, indexed for a window of the chunk (built on first use).
    braces: Option<Braces>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(vars: &'a Vars, opts: &Options) -> Self {
        Engine {
            vars,
            only: opts.only.as_ref().map(|names| {
                names
                    .iter()
                    .map(|n| n.as_bytes().to_vec().into_boxed_slice())
                    .collect()
            }),
            strict: opts.strict || opts.no_empty,
            no_empty: opts.no_empty,
            defaults: opts.defaults,
            assigned: NameMap::default(),
            assigned_bytes: 0,
            missing: Vec::new(),
            unreported: 0,
            tracker: opts.can_fail().then(Tracker::new),
            braces: None,
        }
    }

    /// Renders as much of `chunk` as can be decided and returns how many bytes that was. The
    /// rest (an unfinished reference) must be passed again at the start of the next chunk.
    /// With `eof`, everything is decided and the whole chunk is consumed.
    pub(crate) fn feed<O: Out>(&mut self, chunk: &[u8], eof: bool, out: &mut O) -> usize {
        // A new chunk may sit in the same buffer as the last one: index it afresh.
        self.braces = None;
        let consumed = self.expand(chunk, 0, chunk.len(), eof, 0, out);
        if let Some(tracker) = &mut self.tracker {
            tracker.next_chunk(chunk, consumed);
        }
        consumed
    }

    /// The problems found, if any, as the error of the whole render.
    pub(crate) fn finish(self, origin: &Origin) -> Result<(), RenderError> {
        if self.missing.is_empty() {
            Ok(())
        } else {
            Err(RenderError::Missing {
                origin: origin.clone(),
                missing: self.missing,
                unreported: self.unreported,
            })
        }
    }

    /// Renders `input[from..to]`; `to` acts as end of input when `eof` is set.
    fn expand<O: Out>(
        &mut self,
        input: &[u8],
        from: usize,
        to: usize,
        eof: bool,
        depth: u8,
        out: &mut O,
    ) -> usize {
        let mut i = from;
        while let Some(k) = memchr(b'$', &input[i..to]) {
            let dollar = i + k;
            out.put(&input[i..dollar]);
            match self.reference(input, dollar, to, eof, depth, out) {
                Some(next) => i = next,
                None => return dollar,
            }
        }
        out.put(&input[i..to]);
        to
    }

    /// Handles the `$` at `input[dollar]`: returns where scanning resumes, or `None` if the
    /// reference is not finished before `to` and more input may follow.
    fn reference<O: Out>(
        &mut self,
        input: &[u8],
        dollar: usize,
        to: usize,
        eof: bool,
        depth: u8,
        out: &mut O,
    ) -> Option<usize> {
        let s = &input[dollar..to];
        let braced = s.get(1) == Some(&b'{');
        let name_start = if braced { 2 } else { 1 };
        let Some(&first) = s.get(name_start) else {
            if !eof {
                return None;
            }
            out.put(s);
            return Some(to);
        };
        if !is_name_start(first) {
            // GNU emits `$` (or `${`) and rescans the next byte, which may be another `$`.
            out.put(&s[..name_start]);
            return Some(dollar + name_start);
        }
        let name_end = s[name_start + 1..]
            .iter()
            .position(|&b| !is_name_char(b))
            .map_or(s.len(), |p| name_start + 1 + p);
        if name_end == s.len() && !eof {
            return None;
        }
        let name = &s[name_start..name_end];
        if !braced {
            self.substitute(input, dollar, name, &s[..name_end], out);
            return Some(dollar + name_end);
        }
        match s.get(name_end) {
            Some(b'}') => {
                self.substitute(input, dollar, name, &s[..=name_end], out);
                Some(dollar + name_end + 1)
            }
            Some(b':' | b'-' | b'=' | b'?' | b'+') if self.defaults && depth < MAX_NESTING => {
                self.operator(input, dollar, to, eof, depth, name_start..name_end, out)
            }
            _ => {
                // Unclosed, or `${NAME` followed by anything else: as written, then rescan.
                out.put(&s[..name_end]);
                Some(dollar + name_end)
            }
        }
    }

    #[inline]
    fn substitute<O: Out>(
        &mut self,
        input: &[u8],
        dollar: usize,
        name: &[u8],
        as_written: &[u8],
        out: &mut O,
    ) {
        if self.only.as_ref().is_some_and(|only| !only.contains(name)) {
            out.put(as_written);
            return;
        }
        let reason = match self.lookup(name) {
            Some([]) => Reason::Empty,
            Some(value) => {
                out.put(value);
                return;
            }
            None => Reason::Unset,
        };
        let fails = match reason {
            Reason::Empty => self.no_empty,
            _ => self.strict,
        };
        if fails {
            self.report(input, dollar, name, reason);
        }
    }

    /// `${NAME<op>word}` under `--defaults`; `name` indexes `input[dollar..]`.
    #[allow(clippy::too_many_arguments)]
    fn operator<O: Out>(
        &mut self,
        input: &[u8],
        dollar: usize,
        to: usize,
        eof: bool,
        depth: u8,
        name: std::ops::Range<usize>,
        out: &mut O,
    ) -> Option<usize> {
        let s = &input[dollar..to];
        let as_written = |out: &mut O| {
            out.put(&s[..name.end]);
            Some(dollar + name.end)
        };
        let colon = s[name.end] == b':';
        let op_at = name.end + usize::from(colon);
        let Some(&op) = s.get(op_at) else {
            return if eof { as_written(out) } else { None };
        };
        let Some(op) = Operator::from_byte(op) else {
            return as_written(out);
        };
        let word_start = op_at + 1;
        let Some(close) = self
            .closing_brace(input, dollar + word_start)
            .filter(|&p| p < to && p - dollar < MAX_REFERENCE)
            .map(|p| p - dollar)
        else {
            // Decided once the input reaches MAX_REFERENCE past the `$`, whatever the chunks.
            return if eof || to - dollar >= MAX_REFERENCE {
                as_written(out)
            } else {
                None
            };
        };
        let end = dollar + close + 1;
        let name_bytes = &s[name.clone()];
        if self
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(name_bytes))
        {
            out.put(&s[..=close]);
            return Some(end);
        }
        let word = (dollar + word_start, dollar + close);
        let state = match self.lookup(name_bytes) {
            None => State::Unset,
            Some([]) => State::Empty,
            Some(_) => State::NonEmpty,
        };
        // The shell's rule: without `:` only "unset" counts as absent; with it, "empty" too.
        let absent = match state {
            State::Unset => true,
            State::Empty => colon,
            State::NonEmpty => false,
        };
        let depth = depth + 1;
        match op {
            Operator::UseDefault | Operator::AssignDefault | Operator::Require if !absent => {
                if let Some(value) = self.lookup(name_bytes) {
                    out.put(value);
                }
            }
            Operator::UseDefault => {
                self.expand(input, word.0, word.1, true, depth, out);
            }
            Operator::AssignDefault => {
                let position = self.position(input, dollar);
                let mut value = Capped::new(MAX_ASSIGNED);
                self.expand(input, word.0, word.1, true, depth, &mut value);
                out.put(&value.bytes);
                let old = self
                    .assigned
                    .get(name_bytes)
                    .map_or(0, |v| name_bytes.len() + v.len());
                let total = self.assigned_bytes - old + name_bytes.len() + value.bytes.len();
                if value.overflowed || total > MAX_ASSIGNED {
                    self.push(position, name_bytes, Reason::TooMuchAssigned);
                } else {
                    self.assigned_bytes = total;
                    self.assigned.insert(name_bytes.into(), value.bytes);
                }
            }
            Operator::Require => {
                // Position first: expanding the message moves the tracker past the `$`.
                let position = self.position(input, dollar);
                // Expanded even when it will not be reported: `${B:=x}` in it still assigns.
                let mut message = Capped::new(MAX_MESSAGE);
                self.expand(input, word.0, word.1, true, depth, &mut message);
                let message = if message.overflowed {
                    String::from_utf8_lossy(&message.bytes).into_owned() + "..."
                } else if !message.bytes.is_empty() {
                    String::from_utf8_lossy(&message.bytes).into_owned()
                } else if colon {
                    "parameter null or not set".to_owned()
                } else {
                    "parameter not set".to_owned()
                };
                self.push(position, name_bytes, Reason::Required(message));
            }
            Operator::UseAlternative => {
                if !absent {
                    self.expand(input, word.0, word.1, true, depth, out);
                }
            }
        }
        Some(end)
    }

    /// The `}` that ends a word starting at `input[start]`, skipping nested `${...}`, if it
    /// lies within [`MAX_REFERENCE`] of `start` (a later one is never used).
    fn closing_brace(&mut self, input: &[u8], start: usize) -> Option<usize> {
        // Real words are short: a bounded scan finds their brace. Only a long or unclosed one
        // goes to the index, which keeps hostile templates linear.
        let window = &input[start..input.len().min(start + SHORT_WORD)];
        if let Some(p) = braces::scan(window) {
            return Some(start + p);
        }
        // The index covers twice the longest word, so that each byte is indexed at most about
        // twice however large the chunk (the whole template, for `render`), and its size is
        // bounded. `feed` drops it with each chunk; nested words share their chunk's.
        let covers = |b: &Braces| b.covers(start, MAX_REFERENCE, input.len());
        if !self.braces.as_ref().is_some_and(covers) {
            let end = input.len().min(start + 2 * MAX_REFERENCE);
            self.braces = Some(Braces::new(input, start, end));
        }
        self.braces.as_ref()?.closing(start)
    }

    #[inline]
    fn lookup(&self, name: &[u8]) -> Option<&[u8]> {
        if !self.assigned.is_empty()
            && let Some(value) = self.assigned.get(name)
        {
            return Some(value);
        }
        self.vars.get_bytes(name)
    }

    fn position(&mut self, input: &[u8], offset: usize) -> (u64, u64) {
        self.tracker
            .as_mut()
            .map_or((0, 0), |t| t.position(input, offset))
    }

    fn report(&mut self, input: &[u8], dollar: usize, name: &[u8], reason: Reason) {
        if self.missing.len() >= MAX_REPORTED {
            self.unreported += 1;
            return;
        }
        let position = self.position(input, dollar);
        self.push(position, name, reason);
    }

    fn push(&mut self, (line, column): (u64, u64), name: &[u8], reason: Reason) {
        if self.missing.len() >= MAX_REPORTED {
            self.unreported += 1;
            return;
        }
        // A thousand reports of names as long as the buffer would be hundreds of MB.
        let name = match name.get(..MAX_REPORTED_NAME) {
            Some(head) if name.len() > MAX_REPORTED_NAME => {
                String::from_utf8_lossy(head).into_owned() + "..."
            }
            _ => String::from_utf8_lossy(name).into_owned(),
        };
        self.missing.push(Missing {
            name,
            line,
            column,
            reason,
        });
    }
}

#[cfg(test)]
mod tests;
