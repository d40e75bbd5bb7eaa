//! A small cache in front of [`Vars`]: templates reference a handful of names over and over,
//! and skipping the hash table probe for them was worth about a fifth of render time.

use std::hash::Hasher;

use crate::vars::{NameHasher, Vars};

const SLOTS: usize = 64;

/// Longer names go straight to the table, so that the cache stays small.
const MAX_NAME: usize = 64;

struct Slot<'a> {
    name: Vec<u8>,
    value: Option<&'a [u8]>,
}

/// Direct-mapped: a name has one slot, and a miss replaces what was there.
pub(crate) struct Memo<'a> {
    vars: &'a Vars,
    slots: Vec<Option<Slot<'a>>>,
}

impl<'a> Memo<'a> {
    pub(crate) fn new(vars: &'a Vars) -> Self {
        Memo {
            vars,
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    #[inline]
    pub(crate) fn get(&mut self, name: &[u8]) -> Option<&'a [u8]> {
        if name.len() > MAX_NAME {
            return self.vars.get_bytes(name);
        }
        let mut hasher = NameHasher::default();
        hasher.write(name);
        // The top bits are the best mixed; SLOTS is 2^6.
        let index = (hasher.finish().rotate_right(26) >> 58) as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return self.vars.get_bytes(name);
        };
        match slot {
            Some(slot) if same_name(&slot.name, name) => slot.value,
            Some(slot) => {
                slot.name.clear();
                slot.name.extend_from_slice(name);
                slot.value = self.vars.get_bytes(name);
                slot.value
            }
            None => {
                let value = self.vars.get_bytes(name);
                *slot = Some(Slot {
                    name: name.to_vec(),
                    value,
                });
                value
            }
        }
    }
}

/// Slice equality without a call to libc's memcmp, which dominated for names this short.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let (mut x, mut y) = (a, b);
    while let (Some((p, xs)), Some((q, ys))) =
        (x.split_first_chunk::<8>(), y.split_first_chunk::<8>())
    {
        if p != q {
            return false;
        }
        (x, y) = (xs, ys);
    }
    a.last_chunk::<8>() == b.last_chunk::<8>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_agrees_with_the_table_through_collisions() {
        let mut vars = Vars::new();
        let names: Vec<String> = (0..300)
            .map(|i| format!("NAME_{i}_{}", "x".repeat(i % 20)))
            .collect();
        for (i, name) in names.iter().enumerate() {
            if i % 3 != 0 {
                vars.set(name.clone(), format!("v{i}"));
            }
        }
        let long = "L".repeat(MAX_NAME + 1);
        vars.set(long.clone(), "long");
        let mut memo = Memo::new(&vars);
        // 300 names in 64 slots: plenty of evictions; every answer must still be the table's.
        for round in 0..3 {
            for name in names.iter().chain([&long, &"UNSET".to_string()]) {
                assert_eq!(
                    memo.get(name.as_bytes()),
                    vars.get(name),
                    "round {round}, {name}"
                );
            }
        }
    }

    #[test]
    fn names_compare_exactly() {
        assert!(same_name(b"", b""));
        assert!(same_name(b"ABC", b"ABC"));
        assert!(!same_name(b"ABC", b"ABD"));
        assert!(same_name(b"ABCDEFGHIJ", b"ABCDEFGHIJ"));
        assert!(!same_name(b"ABCDEFGHIJ", b"ABCDEFGHIK"));
        assert!(!same_name(b"XBCDEFGHIJ", b"ABCDEFGHIJ"));
        assert!(!same_name(b"ABCDEFGH", b"ABCDEFGHI"));
    }
}
