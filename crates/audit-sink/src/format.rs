//! The two output formats: a compact line per event, or the event's JSON per line.

use std::io::{self, Write};

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `stage verb resource namespace/name user code`: always six fields, `-` for absent ones,
    /// so that `awk '{print $3}'` works on every line. The object is `namespace/name`, `name`
    /// for a cluster-scoped object, `namespace/-` for a request on a whole collection (a list
    /// or a create without a name), and `-` when there is neither.
    #[default]
    Line,
    /// The event's JSON exactly as received, one per line.
    Json,
}

pub fn write_event(out: &mut impl Write, event: &Event, format: Format) -> io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", event.raw_json()),
        Format::Line => {
            let resource = event
                .resource()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| event.request_uri.clone());
            let object = match (present(event.namespace()), present(event.name())) {
                (Some(ns), Some(name)) => format!("{ns}/{name}"),
                (None, Some(name)) => name.to_owned(),
                (Some(ns), None) => format!("{ns}/-"),
                (None, None) => String::new(),
            };
            let code = event
                .response_code
                .map(|c| c.to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{} {} {} {} {} {}",
                event.stage.as_str(),
                field(&event.verb),
                field(&resource),
                field(&object),
                field(&event.user.username),
                field(&code)
            )
        }
    }
}

/// An empty string is as absent as a missing key.
fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// One whitespace-free token: empty becomes `-`, and whitespace or control characters are
/// escaped so that a hostile username cannot forge extra fields or lines.
fn field(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    value
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_escapes_separators() {
        assert_eq!(field(""), "-");
        assert_eq!(field("a b\nc"), "a\\u{20}b\\u{a}c");
        assert_eq!(field("system:admin"), "system:admin");
    }
}
