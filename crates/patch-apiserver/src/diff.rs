/// A unified diff (3 lines of context) from `old` to `new`; empty when they are equal.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .missing_newline_hint(true)
        .header(old_label, new_label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_additions_with_headers() {
        let d = unified_diff("a\nb\n", "a\nx\nb\n", "old", "new");
        assert_eq!(d, "--- old\n+++ new\n@@ -1,2 +1,3 @@\n a\n+x\n b\n");
        assert_eq!(unified_diff("a", "a", "o", "n"), "");
    }
}
