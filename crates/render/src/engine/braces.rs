//! Where the word of `${NAME:-word}` ends, for every reference of a window in O(log n) each.
//!
//! Scanning forward from each word for its `}` is quadratic on a hostile template such as
//! `${A:-${A:-${A:-...` with no closing brace: every reference scans to the end. Instead, the
//! `${` and `}` tokens of a window of the chunk are indexed once. With `level` the count of `${` minus `}` seen
//! so far, the `}` closing a word that starts at `w` is the first token after `w` that brings
//! the level below its value at `w` (levels move by one, so that token is a `}`). A tree of
//! minimum levels finds it without walking the tokens in between.

use memchr::memchr2;

/// Offset of the `}` that closes a word at the start of `s`, skipping nested `${...}`: the
/// plain forward scan, right for short words (and the index's reference in its tests).
pub(super) fn scan(s: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(k) = memchr2(b'$', b'}', &s[i..]) {
        let p = i + k;
        if s[p] == b'}' {
            if depth == 0 {
                return Some(p);
            }
            depth -= 1;
            i = p + 1;
        } else if s.get(p + 1) == Some(&b'{') {
            depth += 1;
            i = p + 2;
        } else {
            i = p + 1;
        }
    }
    None
}

pub(super) struct Braces {
    /// The indexed bytes are `chunk[from..to]`.
    from: usize,
    to: usize,
    /// Byte position of each token, ascending.
    positions: Vec<usize>,
    /// The level after each token.
    levels: Vec<i64>,
    /// `min_tree[leaves + i]` is `levels[i]`; inner nodes hold the minimum of their children.
    min_tree: Vec<i64>,
    leaves: usize,
}

impl Braces {
    /// Indexes `chunk[from..to]`; `from` must not be inside a `${` token (a word's start
    /// never is), so that the tokens are the ones a forward scan from there sees.
    pub(super) fn new(chunk: &[u8], from: usize, to: usize) -> Braces {
        let (mut positions, mut levels) = (Vec::new(), Vec::new());
        let mut level = 0i64;
        let mut i = from;
        let chunk = &chunk[..to];
        // The same tokens as a forward scan sees: `$` then `{` is one token, `}` another.
        while let Some(k) = memchr2(b'$', b'}', &chunk[i..]) {
            let p = i + k;
            if chunk[p] == b'}' {
                level -= 1;
                positions.push(p);
                levels.push(level);
                i = p + 1;
            } else if chunk.get(p + 1) == Some(&b'{') {
                level += 1;
                positions.push(p);
                levels.push(level);
                i = p + 2;
            } else {
                i = p + 1;
            }
        }
        let leaves = levels.len().next_power_of_two().max(1);
        let mut min_tree = vec![i64::MAX; 2 * leaves];
        min_tree[leaves..leaves + levels.len()].copy_from_slice(&levels);
        for node in (1..leaves).rev() {
            min_tree[node] = min_tree[2 * node].min(min_tree[2 * node + 1]);
        }
        Braces {
            from,
            to,
            positions,
            levels,
            min_tree,
            leaves,
        }
    }

    /// Whether the index answers for a word at `start` whose `}` may lie up to `span` bytes on,
    /// in a chunk of `len` bytes.
    pub(super) fn covers(&self, start: usize, span: usize, len: usize) -> bool {
        self.from <= start && (start + span <= self.to || self.to == len)
    }

    /// The `}` closing a word that starts at byte `start` (not inside a `${` token, and
    /// inside the window), if the window has one.
    pub(super) fn closing(&self, start: usize) -> Option<usize> {
        let first = self.positions.partition_point(|&p| p < start);
        let level_at_start = first.checked_sub(1).map_or(0, |t| self.levels[t]);
        self.first_below(first, level_at_start)
            .map(|t| self.positions[t])
    }

    /// The first token index `>= from` whose level is below `bound`.
    fn first_below(&self, from: usize, bound: i64) -> Option<usize> {
        if from >= self.levels.len() {
            return None;
        }
        // Walk up from the leaf, looking at right siblings only, until a subtree holds a level
        // below `bound`; then walk down into its leftmost such leaf.
        let mut node = self.leaves + from;
        if self.min_tree[node] < bound {
            return Some(from);
        }
        loop {
            if node == 1 {
                return None;
            }
            if node.is_multiple_of(2) && self.min_tree[node + 1] < bound {
                node += 1;
                break;
            }
            node /= 2;
        }
        while node < self.leaves {
            node = if self.min_tree[2 * node] < bound {
                2 * node
            } else {
                2 * node + 1
            };
        }
        Some(node - self.leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Word starts as the engine has them: right after an operator byte.
    fn word_starts(s: &[u8]) -> impl Iterator<Item = usize> + '_ {
        (1..=s.len()).filter(|&w| b"-=?+".contains(&s[w - 1]))
    }

    #[test]
    fn finds_the_closing_brace_of_nested_and_unclosed_words() {
        let s = b"${A:-x${B:-y}z} ${C:-${D:-} $}";
        let b = Braces::new(s, 0, s.len());
        for w in word_starts(s) {
            assert_eq!(b.closing(w), scan(&s[w..]).map(|p| p + w), "word at {w}");
        }
        assert_eq!(b.closing(5), Some(14));
        assert_eq!(b.closing(11), Some(12));
        let unclosed = b"${A:-${A:-${A:-";
        let b = Braces::new(unclosed, 0, unclosed.len());
        assert!(word_starts(unclosed).all(|w| b.closing(w).is_none()));
        assert_eq!(Braces::new(b"", 0, 0).closing(0), None);
    }

    proptest! {
        #[test]
        fn agrees_with_a_forward_scan(s in proptest::collection::vec(
            prop_oneof![Just(b'$'), Just(b'{'), Just(b'}'), Just(b'-'), Just(b'a'), Just(b'=')],
            0..200,
        )) {
            let b = Braces::new(&s, 0, s.len());
            for w in word_starts(&s) {
                prop_assert_eq!(b.closing(w), scan(&s[w..]).map(|p| p + w), "word at {}", w);
            }
        }

        /// A window starting at some word sees what a forward scan limited to it sees.
        #[test]
        fn windows_agree_with_a_bounded_forward_scan(
            s in proptest::collection::vec(
                prop_oneof![Just(b'$'), Just(b'{'), Just(b'}'), Just(b'-'), Just(b'a')],
                1..200,
            ),
            pick in 0usize..200,
            len in 0usize..200,
        ) {
            let starts: Vec<_> = word_starts(&s).collect();
            prop_assume!(!starts.is_empty());
            let from = starts[pick % starts.len()];
            let to = s.len().min(from + len);
            let b = Braces::new(&s, from, to);
            for w in starts.into_iter().filter(|&w| w >= from && w <= to) {
                prop_assert_eq!(b.closing(w), scan(&s[w..to]).map(|p| p + w), "word at {}", w);
            }
        }
    }
}
