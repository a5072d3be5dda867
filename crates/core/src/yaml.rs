//! YAML (and JSON, its subset) into serde types, with errors that name the field path and
//! the line: `tenants[3].colour (line 17, column 9): unknown field ...`.
//!
//! serde-saphyr reports where a document went wrong but not which field that is; this
//! module walks the document's events up to that position to name the path.

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};
use std::fmt;

/// Input larger than this is refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// A document that did not deserialize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// Dotted path of the offending field (`tenants[3].tier`), empty for the document root.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{path} (line {l}, column {c}): {}", self.message),
            (Some(l), None) => write!(f, "{path} (line {l}): {}", self.message),
            _ => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Parses `text` as YAML (JSON included) into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(YamlError {
            path: String::new(),
            line: None,
            column: None,
            message: format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
        });
    }
    serde_saphyr::from_str(text).map_err(|e| {
        let location = e.location();
        let (line, column) = match location {
            Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column())),
            _ => (None, None),
        };
        let path = line
            .map(|l| path_at(text, l, column.unwrap_or(1)))
            .unwrap_or_default();
        YamlError {
            path,
            line,
            column,
            message: strip_location(&e.without_snippet().to_string()),
        }
    })
}

/// serde-saphyr appends " at line L, column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[derive(Debug)]
enum Frame {
    Map {
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        index: Option<usize>,
    },
}

fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Map { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Seq { index: Some(i) } => path.push_str(&format!("[{i}]")),
            _ => {}
        }
    }
    path
}

/// The path of the deepest node that starts at or before (`line`, `column`), 1-based.
pub fn path_at(text: &str, line: u64, column: u64) -> String {
    let target = (line as usize, column as usize);
    let mut best = String::new();
    walk(text, |path, at| {
        if at > target {
            return false;
        }
        best = path.to_string();
        true
    });
    best
}

/// The 1-based line where the node at `path` (`tenants[3].tier`) starts: for a map entry,
/// the line of its key.
pub fn line_of(text: &str, path: &str) -> Option<u64> {
    let mut found = None;
    walk(text, |p, (line, _)| {
        if p == path {
            found = Some(line as u64);
            return false;
        }
        true
    });
    found
}

/// The line of `path`, or of its nearest ancestor that the document has (a missing field
/// has no line of its own).
pub fn line_of_nearest(text: &str, path: &str) -> Option<u64> {
    let mut p = path;
    loop {
        if let Some(line) = line_of(text, p) {
            return Some(line);
        }
        p = &p[..p.rfind(['.', '['])?];
    }
}

/// Calls `visit(path, (line, column))` for every key and value node in document order,
/// until it returns false.
fn walk(text: &str, mut visit: impl FnMut(&str, (usize, usize)) -> bool) {
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line(), span.start.col() + 1);
        let begins_node = matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(..)
        );
        let mut is_key = false;
        if begins_node {
            match stack.last_mut() {
                Some(Frame::Map {
                    expecting_key: true,
                    key,
                    ..
                }) => {
                    *key = Some(match &event {
                        Event::Scalar(v, ..) => v.to_string(),
                        _ => "?".to_string(),
                    });
                    is_key = true;
                }
                Some(Frame::Seq { index }) => *index = Some(index.map_or(0, |i| i + 1)),
                _ => {}
            }
            if !visit(&render(&stack), at) {
                return;
            }
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map {
                key: None,
                expecting_key: true,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: None }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                flip(&mut stack);
            }
            _ if is_key => {
                if let Some(Frame::Map { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            _ if begins_node => flip(&mut stack),
            _ => {}
        }
    }
}

/// After a value completes, the enclosing map expects a key again.
fn flip(stack: &mut [Frame]) {
    if let Some(Frame::Map { expecting_key, .. }) = stack.last_mut() {
        *expecting_key = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        tiers: std::collections::BTreeMap<String, Tier>,
        tenants: Vec<Tenant>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tier {
        weight: u32,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tenant {
        id: String,
        tier: String,
    }

    #[test]
    fn names_path_and_line() {
        let text = "tiers:\n  gold: {weight: 3}\n  silver:\n    weight: -2\ntenants: []\n";
        let e = from_str::<Doc>(text).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.line),
            ("tiers.silver.weight", Some(4)),
            "{e}"
        );

        let text = "tiers: {}\ntenants:\n  - {id: a, tier: gold}\n  - id: b\n    tier: gold\n    colour: red\n";
        let e = from_str::<Doc>(text).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.line),
            ("tenants[1].colour", Some(6)),
            "{e}"
        );
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("tenants[1].colour (line 6, column 5): unknown field"),
            "{e}"
        );
        assert_eq!(line_of(text, "tenants[1].tier"), Some(5));
        assert_eq!(line_of(text, "tenants[0].tier"), Some(3));
        assert_eq!(line_of(text, "tenants[1]"), Some(4));
        assert_eq!(line_of(text, "nope"), None);
    }

    #[test]
    fn json_is_accepted_and_located() {
        let text = "{\"tiers\": {\"gold\": {\"weight\": \"heavy\"}}, \"tenants\": []}";
        let e = from_str::<Doc>(text).unwrap_err();
        assert_eq!(e.path, "tiers.gold.weight", "{e}");
    }

    #[test]
    fn refuses_huge_documents() {
        let text = " ".repeat(MAX_DOCUMENT_BYTES + 1);
        assert!(
            from_str::<Doc>(&text)
                .unwrap_err()
                .message
                .contains("limit")
        );
    }
}
