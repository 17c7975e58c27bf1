//! Where each YAML node starts, by its path (`resources[3].file.owner`).
//!
//! serde reports a location for the errors it finds, but validation runs on typed values that no
//! longer know where they came from. This index, built from the same text by the YAML parser's
//! event stream, gives every semantic error its file:line:column without wrapping every field of
//! the model in a span type.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Start positions of every node, keyed by YAML path, and of every mapping key.
#[derive(Debug, Default)]
pub struct LocationIndex {
    values: HashMap<String, Position>,
    /// Where each mapping key was written → that key. A key and its value start at different
    /// places; serde reports some errors at a key (unknown fields, values its visitors refuse, a
    /// mapping's missing field at its last key), and those still deserve the right place and path.
    keys: HashMap<Position, Key>,
    /// The first of provision's input limits the text broke while it was indexed (where, the
    /// path of the value there, and the message); indexing stopped there.
    breach: Option<(Position, String, String)>,
}

/// A mapping key as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The path of the mapping the key is in.
    pub mapping: String,
    /// The key itself.
    pub name: String,
}

impl Key {
    /// The path of the value the key introduces.
    pub fn path(&self) -> String {
        join_key(&self.mapping, &self.name)
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

impl Frame {
    /// The path of the child that the next value event belongs to.
    fn child_path(&self) -> Option<String> {
        match self {
            Frame::Map { key: None, .. } => None,
            Frame::Map { path, key: Some(k) } => Some(join_key(path, k)),
            Frame::Seq { path, next } => Some(format!("{path}[{next}]")),
        }
    }

    /// A value has been consumed: a map expects its next key, a sequence its next item.
    fn advance(&mut self) {
        match self {
            Frame::Map { key, .. } => *key = None,
            Frame::Seq { next, .. } => *next += 1,
        }
    }
}

/// `a` + `b` → `a.b`, the root being the empty path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl LocationIndex {
    /// Indexes `text`. Text that does not parse gives a partial index: serde reports the syntax
    /// error itself, with its own location. Text over a limit of [`super::limits`] (a string
    /// too long, nesting too deep, paths too many bytes in all) gives a partial index and its
    /// [`breach`](Self::breach).
    pub fn build(text: &str) -> LocationIndex {
        use super::limits;
        let mut index = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Bytes of paths kept so far: each value's path, and each key's mapping path.
        let mut kept = 0usize;
        let mut values = 0usize;
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let here = Position {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let breach = match &event {
                Event::Scalar(value, ..) if value.len() > limits::STRING_BYTES => Some(format!(
                    "a string of {} bytes: longer than the limit of {}",
                    value.len(),
                    limits::bytes(limits::STRING_BYTES)
                )),
                Event::MappingStart(..) | Event::SequenceStart(..)
                    if stack.len() >= limits::DEPTH =>
                {
                    Some(limits::depth_message())
                }
                Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..)
                    if values >= limits::YAML_VALUES =>
                {
                    Some(limits::values_message())
                }
                _ => {
                    // An upper bound of what this event adds: its path (the parent's, a key or an
                    // index, a separator) and, for a key, the key with its mapping's path again.
                    let parent = match stack.last() {
                        Some(Frame::Map { path, key }) => {
                            path.len() + key.as_ref().map_or(0, String::len)
                        }
                        Some(Frame::Seq { path, .. }) => path.len(),
                        None => 0,
                    };
                    let own = match &event {
                        Event::Scalar(value, ..) => value.len(),
                        _ => 0,
                    };
                    kept = kept.saturating_add(2 * (parent + own) + 24);
                    (kept > limits::INDEX_BYTES).then(|| {
                        format!(
                            "nesting under long keys makes the YAML paths of this file more than {}: over the limit",
                            limits::bytes(limits::INDEX_BYTES)
                        )
                    })
                }
            };
            if matches!(
                event,
                Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..)
            ) {
                values += 1;
            }
            if let Some(message) = breach {
                let path = stack.last().and_then(Frame::child_path).unwrap_or_default();
                index.breach = Some((here, path, message));
                break;
            }
            match event {
                Event::Scalar(value, ..) => match stack.last_mut() {
                    Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) => {
                        index.values.entry(join_key(path, &value)).or_insert(here);
                        index.keys.insert(
                            here,
                            Key {
                                mapping: path.clone(),
                                name: value.to_string(),
                            },
                        );
                        *key = Some(value.into_owned());
                    }
                    Some(frame) => {
                        if let Some(path) = frame.child_path() {
                            index.values.insert(path, here);
                        }
                        frame.advance();
                    }
                    None => {}
                },
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = match stack.last() {
                        Some(frame) => frame.child_path().unwrap_or_default(),
                        None => String::new(),
                    };
                    index.values.insert(path.clone(), here);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    if let Some(parent) = stack.last_mut() {
                        parent.advance();
                    }
                }
                Event::Alias(..) => {
                    if let Some(frame) = stack.last_mut() {
                        if let Some(path) = frame.child_path() {
                            index.values.insert(path, here);
                        }
                        frame.advance();
                    }
                }
                _ => {}
            }
        }
        index
    }

    /// Where and how the text broke an input limit, if it did.
    pub fn breach(&self) -> Option<&(Position, String, String)> {
        self.breach.as_ref()
    }

    /// The deepest path that starts exactly at `pos`, if any.
    pub fn path_at(&self, pos: Position) -> Option<String> {
        self.values
            .iter()
            .filter(|(_, p)| **p == pos)
            .map(|(path, _)| path)
            .max_by_key(|path| path.len())
            .cloned()
    }

    /// The mapping key written at `pos`, if one starts there.
    pub fn key_at(&self, pos: Position) -> Option<&Key> {
        self.keys.get(&pos)
    }

    /// Where the value at `path` itself was written, if it was (not falling back to an ancestor).
    pub fn value_of(&self, path: &str) -> Option<Position> {
        self.values.get(path).copied()
    }

    /// The position of `path`, or of its nearest ancestor that was written (a missing field is
    /// reported where its parent starts).
    pub fn locate(&self, path: &str) -> Position {
        self.resolve(path).1
    }

    /// `path`, or its nearest ancestor that was written (the empty path for the whole document),
    /// and where that starts.
    pub fn resolve<'p>(&self, path: &'p str) -> (&'p str, Position) {
        let mut path = path;
        loop {
            if let Some(pos) = self.values.get(path) {
                return (path, *pos);
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => {
                    let start = self.values.get("").copied();
                    return ("", start.unwrap_or(Position { line: 1, column: 1 }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
nodes:
  - name: master
    address: 10.0.0.1
resources:
  - file:
      path: /etc/x
      mode: \"0644\"
  - user: {name: pyme, groups: [video, render]}
";

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn block_values_are_found_where_they_start() {
        let index = LocationIndex::build(DOC);
        assert_eq!(index.locate("nodes[0].name"), at(2, 11));
        assert_eq!(index.locate("nodes[0].address"), at(3, 14));
        assert_eq!(index.locate("resources[0].file.mode"), at(7, 13));
    }

    #[test]
    fn flow_values_are_found() {
        let index = LocationIndex::build(DOC);
        assert_eq!(index.locate("resources[1].user.name"), at(8, 18));
        assert_eq!(index.locate("resources[1].user.groups[1]"), at(8, 40));
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_ancestor() {
        let index = LocationIndex::build(DOC);
        assert_eq!(
            index.locate("resources[0].file.owner"),
            index.locate("resources[0].file")
        );
        assert_eq!(index.locate("nowhere.at.all"), at(1, 1));
    }

    #[test]
    fn keys_are_indexed_apart_from_their_values() {
        let index = LocationIndex::build(DOC);
        let key_path = |pos| index.key_at(pos).map(Key::path);
        assert_eq!(
            key_path(at(7, 7)).as_deref(),
            Some("resources[0].file.mode")
        );
        assert_eq!(index.value_of("resources[0].file.mode"), Some(at(7, 13)));
        assert_eq!(
            key_path(at(8, 12)).as_deref(),
            Some("resources[1].user.name")
        );
        assert_eq!(key_path(at(7, 13)), None);
        // A key that is also where its mapping starts: the value path wins in `path_at`.
        assert_eq!(
            index.key_at(at(2, 5)),
            Some(&Key {
                mapping: "nodes[0]".into(),
                name: "name".into()
            })
        );
        assert_eq!(index.path_at(at(2, 5)).as_deref(), Some("nodes[0]"));
    }

    #[test]
    fn resolve_names_the_ancestor_it_fell_back_to() {
        let index = LocationIndex::build(DOC);
        assert_eq!(
            index.resolve("resources[0].file.owner"),
            ("resources[0].file", at(6, 7))
        );
        assert_eq!(index.resolve("nodes[0].name"), ("nodes[0].name", at(2, 11)));
        assert_eq!(index.resolve("nowhere"), ("", at(1, 1)));
    }

    #[test]
    fn broken_text_gives_a_partial_index() {
        let index = LocationIndex::build("nodes:\n  - name: a\n  bad: [\n");
        assert_eq!(index.locate("nodes[0].name"), at(2, 11));
    }
}
