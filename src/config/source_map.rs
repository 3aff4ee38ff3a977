//! A map from key paths (`models[2].restart.policy`) to where they are in the YAML text, built
//! from the parser's events in one pass. Typed config structs stay plain; validation asks this
//! map for line and column.
//!
//! The same pass refuses what no configuration needs and an attacker would send: alias bombs
//! (expansion is computed, never performed), deep nesting and multi-document streams.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{self, Event, Parser, ScalarStyle, Span};

use super::error::{ErrorKind, Pos};

/// At most this many `*alias` references in one file.
pub(crate) const MAX_ALIASES: usize = 1_000;
/// At most this many YAML nodes once every alias is expanded.
pub(crate) const MAX_EXPANDED_NODES: usize = 100_000;
/// At most this many bytes of scalar text once every alias is expanded.
pub(crate) const MAX_EXPANDED_BYTES: usize = 8 * 1024 * 1024;
/// At most this many nested sequences/mappings (the schema needs 4).
pub(crate) const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Scalar {
        text: String,
        /// How many characters precede `text` verbatim in the source (0 plain, 1 quoted), when
        /// the text appears there unchanged; lets errors point inside the value.
        verbatim_at: Option<usize>,
    },
    Sequence,
    Mapping,
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Where the key is, for mapping entries.
    pub key: Option<Pos>,
    /// Where the value starts.
    pub value: Pos,
    pub kind: NodeKind,
}

/// A problem found while scanning: not YAML, or over a limit.
pub(crate) type ScanFailure = super::error::LocatedFailure;

#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    nodes: HashMap<String, Node>,
    by_key_pos: HashMap<Pos, String>,
    by_value_pos: HashMap<Pos, String>,
    /// The document has no content, or only `~`/`null`: every section takes its default.
    pub root_is_empty: bool,
}

impl SourceMap {
    pub(crate) fn scan(text: &str) -> Result<SourceMap, ScanFailure> {
        Scanner::new(text).run()
    }

    pub(crate) fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub(crate) fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Where the value at `path` is, else where its nearest written ancestor is (values from
    /// defaults, aliases or merges have no place of their own).
    pub(crate) fn value_pos(&self, path: &str) -> Pos {
        self.nearest(path).map_or(Pos::START, |n| n.value)
    }

    /// Where the key of `path` is, else its value, else its nearest ancestor.
    pub(crate) fn key_pos(&self, path: &str) -> Pos {
        match self.nodes.get(path) {
            Some(node) => node.key.unwrap_or(node.value),
            None => self.value_pos(path),
        }
    }

    /// Where the character at byte `offset` of the scalar at `path` is, when the scalar is
    /// written verbatim on one line; else where the scalar starts.
    pub(crate) fn pos_inside(&self, path: &str, offset: usize) -> Pos {
        let Some(node) = self.nodes.get(path) else {
            return self.value_pos(path);
        };
        match &node.kind {
            NodeKind::Scalar { text, verbatim_at: Some(skip) }
                if text.get(..offset).is_some_and(|s| !s.contains('\n')) =>
            {
                Pos::new(node.value.line, node.value.column + skip + text[..offset].chars().count())
            }
            _ => node.value,
        }
    }

    /// The path of the key written at `pos`.
    pub(crate) fn path_of_key(&self, pos: Pos) -> Option<&str> {
        self.by_key_pos.get(&pos).map(String::as_str)
    }

    /// The path of the value written at `pos`.
    pub(crate) fn path_of_value(&self, pos: Pos) -> Option<&str> {
        self.by_value_pos.get(&pos).map(String::as_str)
    }

    fn nearest(&self, path: &str) -> Option<&Node> {
        let mut p = path;
        loop {
            if let Some(node) = self.nodes.get(p) {
                return Some(node);
            }
            p = parent_path(p)?;
        }
    }

    fn insert(&mut self, path: String, node: Node) {
        if let Some(k) = node.key {
            self.by_key_pos.entry(k).or_insert_with(|| path.clone());
        }
        self.by_value_pos.entry(node.value).or_insert_with(|| path.clone());
        self.nodes.entry(path).or_insert(node);
    }
}

/// `models[2].id` → `models[2]` → `models` → `` → none.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// `parent` + `key` as a path.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

impl Weight {
    fn add(&mut self, other: Weight) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

enum Container {
    Map {
        /// The key just read, waiting for its value.
        key: Option<(String, Pos)>,
    },
    Seq {
        next: usize,
    },
}

struct Frame {
    /// `None` inside a complex (non-scalar) mapping key: nothing there is recorded.
    path: Option<String>,
    container: Container,
    anchor: usize,
    /// The node count and scalar bytes of this collection with aliases expanded.
    weight: Weight,
}

/// Where a new node goes.
enum Slot {
    Key,
    Value { path: Option<String>, key: Option<Pos> },
}

struct Scanner<'a> {
    text: &'a str,
    map: SourceMap,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Weight>,
    aliases: usize,
    expanded: Weight,
    documents: usize,
    root_seen: bool,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            map: SourceMap::default(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            aliases: 0,
            expanded: Weight::default(),
            documents: 0,
            root_seen: false,
        }
    }

    fn run(mut self) -> Result<SourceMap, ScanFailure> {
        let mut options = granit_parser::Options::default();
        options.set_emit_comments(false);
        options.block_nesting_limit = MAX_DEPTH + 1;
        options.flow_nesting_limit = MAX_DEPTH + 1;
        let parser = Parser::new_from_str_with_options(self.text, options);
        for item in parser {
            let (event, span) = item.map_err(|e| {
                let m = e.marker();
                ScanFailure {
                    pos: Pos::new(m.line(), m.col() + 1),
                    kind: ErrorKind::Syntax,
                    message: format!("not valid YAML: {}", e.kind()),
                    hint: syntax_hint(&e.kind().to_string()),
                }
            })?;
            self.event(event, span)?;
        }
        if !self.root_seen {
            self.map.root_is_empty = true;
        }
        Ok(self.map)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ScanFailure> {
        let pos = Pos::new(span.start.line(), span.start.col() + 1);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ScanFailure {
                        pos,
                        kind: ErrorKind::Limit,
                        message: "a second YAML document starts here; a configuration is one \
                                  document"
                            .into(),
                        hint: Some(
                            "remove this `---` (and merge what follows into the first \
                                    document)"
                                .into(),
                        ),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _) => {
                let weight = Weight { nodes: 1, bytes: text.len() };
                self.count(pos, weight, false)?;
                let verbatim_at = self.verbatim_at(&span, &text, style);
                let empty_root = self.stack.is_empty()
                    && style == ScalarStyle::Plain
                    && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                match self.slot() {
                    Slot::Key => {
                        if let Some(Frame { container: Container::Map { key }, .. }) = self.stack.last_mut() {
                            *key = Some((text.into_owned(), pos));
                        }
                    }
                    Slot::Value { path, key } => {
                        if self.stack.is_empty() {
                            self.root_seen = !empty_root;
                        }
                        let kind = NodeKind::Scalar { text: text.into_owned(), verbatim_at };
                        self.record(path, key, pos, kind);
                    }
                }
                self.finish_node(anchor, weight);
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                let is_map = matches!(event, Event::MappingStart(..));
                self.count(pos, Weight { nodes: 1, bytes: 0 }, false)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(ScanFailure {
                        pos,
                        kind: ErrorKind::Limit,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        hint: Some("a configuration needs a few levels; check the indentation".into()),
                    });
                }
                let path = match self.slot() {
                    Slot::Key => None,
                    Slot::Value { path, key } => {
                        if self.stack.is_empty() {
                            self.root_seen = true;
                        }
                        let kind = if is_map { NodeKind::Mapping } else { NodeKind::Sequence };
                        self.record(path.clone(), key, pos, kind);
                        path
                    }
                };
                let container = if is_map { Container::Map { key: None } } else { Container::Seq { next: 0 } };
                self.stack.push(Frame { path, container, anchor, weight: Weight { nodes: 1, bytes: 0 } });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let was_key = frame.path.is_none() && self.parent_expects_key_marker();
                    if was_key && let Some(Frame { container: Container::Map { key }, .. }) = self.stack.last_mut() {
                        // A complex key: its value is recorded nowhere.
                        *key = Some((String::new(), pos));
                    }
                    self.finish_node(frame.anchor, frame.weight);
                }
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > MAX_ALIASES {
                    return Err(ScanFailure {
                        pos,
                        kind: ErrorKind::Limit,
                        message: format!(
                            "more than {MAX_ALIASES} aliases (`*name`): refusing what looks like \
                             an alias bomb"
                        ),
                        hint: Some(
                            "a configuration needs only a few anchors and aliases; write \
                                    the values out"
                                .into(),
                        ),
                    });
                }
                let weight = self.anchors.get(&id).copied().unwrap_or(Weight { nodes: 1, bytes: 0 });
                self.count(pos, weight, true)?;
                match self.slot() {
                    Slot::Key => {
                        if let Some(Frame { container: Container::Map { key }, .. }) = self.stack.last_mut() {
                            *key = Some((String::new(), pos));
                        }
                    }
                    Slot::Value { path, key } => {
                        if self.stack.is_empty() {
                            self.root_seen = true;
                        }
                        self.record(path, key, pos, NodeKind::Alias);
                    }
                }
                self.add_to_parent(weight);
            }
            _ => {}
        }
        Ok(())
    }

    /// True when the frame on top is a map whose pending key is unset, i.e. the collection just
    /// popped was in key position. (Keys are recorded as `None` paths; values get `Some`.)
    fn parent_expects_key_marker(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { container: Container::Map { key: None }, path: Some(_), .. }))
    }

    /// Decides where the next node goes and advances the enclosing container.
    fn slot(&mut self) -> Slot {
        let Some(frame) = self.stack.last_mut() else {
            return Slot::Value { path: Some(String::new()), key: None };
        };
        match &mut frame.container {
            Container::Map { key } => match key.take() {
                None => Slot::Key,
                Some((name, key_pos)) => {
                    Slot::Value { path: frame.path.as_deref().map(|p| join_key(p, &name)), key: Some(key_pos) }
                }
            },
            Container::Seq { next } => {
                let index = *next;
                *next += 1;
                Slot::Value { path: frame.path.as_deref().map(|p| format!("{p}[{index}]")), key: None }
            }
        }
    }

    fn record(&mut self, path: Option<String>, key: Option<Pos>, value: Pos, kind: NodeKind) {
        if let Some(path) = path {
            self.map.insert(path, Node { key, value, kind });
        }
    }

    /// Counts a node (or an alias's whole expansion) against the limits.
    fn count(&mut self, pos: Pos, weight: Weight, is_alias: bool) -> Result<(), ScanFailure> {
        self.expanded.add(weight);
        let too_many_nodes = self.expanded.nodes > MAX_EXPANDED_NODES;
        let too_many_bytes = self.expanded.bytes > MAX_EXPANDED_BYTES;
        if !too_many_nodes && !too_many_bytes {
            return Ok(());
        }
        let what = if too_many_nodes {
            format!("{MAX_EXPANDED_NODES} nodes")
        } else {
            format!("{} MiB of text", MAX_EXPANDED_BYTES / (1024 * 1024))
        };
        let (message, hint) = if is_alias {
            (
                format!(
                    "this alias takes the document past {what} once aliases are expanded \
                     (an alias bomb?); refusing it"
                ),
                "a configuration needs only a few anchors and aliases; write the values out",
            )
        } else {
            (
                format!("the document has more than {what}"),
                "a configuration is a few hundred lines; check that this is the right file",
            )
        };
        Err(ScanFailure { pos, kind: ErrorKind::Limit, message, hint: Some(hint.into()) })
    }

    /// Closes a node: remembers an anchor's weight and adds it to the enclosing collection.
    fn finish_node(&mut self, anchor: usize, weight: Weight) {
        if anchor != 0 {
            self.anchors.insert(anchor, weight);
        }
        self.add_to_parent(weight);
    }

    fn add_to_parent(&mut self, weight: Weight) {
        if let Some(parent) = self.stack.last_mut() {
            parent.weight.add(weight);
        }
    }

    fn verbatim_at(&self, span: &Span, text: &str, style: ScalarStyle) -> Option<usize> {
        let start = span.start.byte_offset()?;
        let source = self.text.get(start..)?;
        match style {
            ScalarStyle::Plain => source.starts_with(text).then_some(0),
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                let quote = if style == ScalarStyle::SingleQuoted { '\'' } else { '"' };
                let inner = source.strip_prefix(quote)?;
                inner.starts_with(text).then_some(1)
            }
            ScalarStyle::Literal | ScalarStyle::Folded => None,
        }
    }
}

fn syntax_hint(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("tab") {
        Some("YAML indents with spaces only; replace the tabs".into())
    } else if m.contains("mapping values are not allowed") {
        Some(
            "a `: ` inside a value needs quotes: `key: \"a: b\"`; else check the indentation of \
              this line"
                .into(),
        )
    } else if m.contains("placement of ':'") {
        Some(
            "look for an unclosed `[`, `{` or quote above this line; a value containing `: ` \
              needs quotes"
                .into(),
        )
    } else if m.contains("flow") {
        Some(
            "inside `[...]` or `{...}`, quote values containing `{`, `}`, `[`, `]` or `,` \
              (e.g. \"${VAR}\"); else close the bracket"
                .into(),
        )
    } else if m.contains("unclosed") || m.contains("did not find expected") {
        Some("close the bracket or quote opened here".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_keys_and_values() {
        let text = "models:\n  - id: a\n    port: 8001\n    args: [serve, \"x y\"]\n";
        let map = SourceMap::scan(text).unwrap();
        let id = map.node("models[0].id").unwrap();
        assert_eq!(id.key, Some(Pos::new(2, 5)));
        assert_eq!(id.value, Pos::new(2, 9));
        assert_eq!(map.value_pos("models[0].port"), Pos::new(3, 11));
        assert_eq!(map.key_pos("models[0].port"), Pos::new(3, 5));
        assert_eq!(map.value_pos("models[0].args[1]"), Pos::new(4, 19));
        assert_eq!(map.path_of_key(Pos::new(3, 5)), Some("models[0].port"));
        assert_eq!(map.path_of_value(Pos::new(2, 5)), Some("models[0]"));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let map = SourceMap::scan("models:\n  - id: a\n").unwrap();
        assert_eq!(map.value_pos("models[0].restart.policy"), Pos::new(2, 5));
        assert_eq!(map.value_pos("daemon.listen"), Pos::new(1, 1));
    }

    #[test]
    fn points_inside_verbatim_scalars() {
        let map = SourceMap::scan("a: \"x-${Y}\"\nb: x-${Y}\nc: |\n  x-${Y}\n").unwrap();
        assert_eq!(map.pos_inside("a", 2), Pos::new(1, 7));
        assert_eq!(map.pos_inside("b", 2), Pos::new(2, 6));
        // Block scalars point at their first line of content.
        assert_eq!(map.pos_inside("c", 2), Pos::new(4, 3));
    }

    #[test]
    fn empty_documents_are_empty() {
        for text in ["", "# nothing\n", "---\n...\n", "~\n"] {
            assert!(SourceMap::scan(text).unwrap().root_is_empty, "{text:?}");
        }
        assert!(!SourceMap::scan("ui: {}\n").unwrap().root_is_empty);
    }

    #[test]
    fn refuses_a_billion_laughs_quickly() {
        let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (prev, name) in ('a'..='h').zip('b'..='i') {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let failure = SourceMap::scan(&text).unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Limit);
        assert!(failure.message.contains("alias bomb"), "{}", failure.message);
        assert_eq!(failure.pos.line, 6, "{failure:?}");
    }

    #[test]
    fn refuses_a_second_document() {
        let failure = SourceMap::scan("ui: {}\n---\ngpu: {}\n").unwrap_err();
        assert_eq!(failure.pos, Pos::new(2, 1));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let failure = SourceMap::scan("models: [a, b\n").unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Syntax);
        assert_eq!(failure.pos.line, 1);
    }

    #[test]
    fn complex_keys_do_not_confuse_paths() {
        let map = SourceMap::scan("? [a, b]\n: 1\nz: 2\n").unwrap();
        assert_eq!(map.value_pos("z"), Pos::new(3, 4));
    }
}
