//! Line and column of references, computed only when a render can report problems.

use memchr::{memchr_iter, memrchr};

/// 1-based column of `bytes[index]` within a line, counting characters: UTF-8 continuation
/// bytes do not start a column, every other byte (including invalid UTF-8) does.
pub(crate) fn column_of(line: &[u8], index: usize) -> u64 {
    chars(&line[..index.min(line.len())]) + 1
}

fn chars(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u64
}

/// Follows the input as the scanner moves forward through it, chunk by chunk.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// Completed lines before `upto`.
    lines: u64,
    /// Characters between the last line start and `upto`.
    column: u64,
    /// Offset in the current chunk up to which `lines` and `column` are counted.
    upto: usize,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            lines: 0,
            column: 0,
            upto: 0,
        }
    }

    /// 1-based (line, column) of `chunk[offset]`. Offsets must not go backwards within a chunk;
    /// a smaller one yields the position already reached rather than a wrong count.
    pub(crate) fn position(&mut self, chunk: &[u8], offset: usize) -> (u64, u64) {
        self.advance(chunk, offset);
        (self.lines + 1, self.column + 1)
    }

    fn advance(&mut self, chunk: &[u8], to: usize) {
        let to = to.min(chunk.len());
        if to <= self.upto {
            return;
        }
        let seg = &chunk[self.upto..to];
        match memrchr(b'\n', seg) {
            Some(last) => {
                self.lines += memchr_iter(b'\n', seg).count() as u64;
                self.column = chars(&seg[last + 1..]);
            }
            None => self.column += chars(seg),
        }
        self.upto = to;
    }

    /// The scanner consumed `chunk[..consumed]`; the next chunk starts there.
    pub(crate) fn next_chunk(&mut self, chunk: &[u8], consumed: usize) {
        self.advance(chunk, consumed);
        self.upto = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_across_chunks() {
        let mut t = Tracker::new();
        assert_eq!(t.position(b"ab\ncd", 0), (1, 1));
        assert_eq!(t.position(b"ab\ncd", 4), (2, 2));
        t.next_chunk(b"ab\ncd", 5);
        // "é" is two bytes, one column.
        assert_eq!(t.position("é\u{e9}x\nyz".as_bytes(), 4), (2, 5));
        assert_eq!(t.position("é\u{e9}x\nyz".as_bytes(), 7), (3, 2));
        assert_eq!(t.position("é\u{e9}x\nyz".as_bytes(), 1), (3, 2));
    }

    #[test]
    fn columns_count_invalid_bytes() {
        assert_eq!(column_of(b"\xff\xfeA", 2), 3);
        assert_eq!(column_of(b"ab", 9), 3);
    }
}
