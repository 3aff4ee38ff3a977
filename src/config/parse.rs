//! Typed parsing with serde-saphyr, and its errors turned into messages that name the key path
//! and say how to fix the problem.

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use super::error::{ErrorKind, Pos, shown};
use super::schema::Config;
use super::source_map::{
    MAX_ALIASES, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_EXPANDED_NODES, NodeKind, SourceMap, parent_path,
};
use super::suggest::closest;

/// A parse failure with its position.
pub(crate) type ParseFailure = super::error::LocatedFailure;

/// Deserializes `text` (already scanned into `map`) into a [`Config`].
pub(crate) fn parse(text: &str, map: &SourceMap) -> Result<Config, ParseFailure> {
    if map.root_is_empty {
        return Ok(Config::default());
    }
    serde_saphyr::from_str_with_options::<Config>(text, options()).map_err(|e| explain(&e, map))
}

/// The same limits as the scan, enforced again while deserializing (defence in depth).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_depth: MAX_DEPTH,
            max_documents: 1,
            max_nodes: MAX_EXPANDED_NODES,
            max_total_scalar_bytes: MAX_EXPANDED_BYTES,
            max_reader_input_bytes: Some(super::MAX_FILE_BYTES),
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_EXPANDED_NODES,
        },
        with_snippet: false,
        emit_comments: false,
    }
}

fn explain(err: &serde_saphyr::Error, map: &SourceMap) -> ParseFailure {
    use serde_saphyr::Error as E;
    let mut err = err.without_snippet();
    while let E::AliasError { error, .. } = err {
        err = error.without_snippet();
    }
    let pos = err
        .location()
        .filter(|l| l.line() > 0)
        .map_or(Pos::START, |l| Pos::new(to_usize(l.line()), to_usize(l.column().max(1))));
    let mut pos = pos;
    let value_path = map.path_of_value(pos).map(str::to_owned);
    let (kind, message, hint) = match err {
        E::SerdeUnknownField { field, expected, .. } => unknown_key(field, expected, map.path_of_key(pos)),
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let what = describe_path(value_path.as_deref());
            let hint = match closest(variant, expected.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? (one of: {})", expected.join(", ")),
                None => format!("one of: {}", expected.join(", ")),
            };
            (ErrorKind::Type, format!("{what} is `{}`, which is not a valid choice", shown(variant)), Some(hint))
        }
        E::SerdeMissingField { field, .. } => {
            // The parser points at the mapping's last entry; point at the mapping instead.
            let mapping = map.path_of_key(pos).and_then(parent_path).or(value_path.as_deref()).map(str::to_owned);
            if let Some(path) = &mapping {
                pos = map.value_pos(path);
            }
            (
                ErrorKind::MissingKey,
                format!("{} has no `{field}`, which is required", describe_path(mapping.as_deref())),
                Some(format!("add `{field}: ...` to it")),
            )
        }
        E::DuplicateMappingKey { key, .. } => (
            ErrorKind::DuplicateKey,
            match key {
                Some(k) => format!("key `{}` appears twice in this mapping", shown(k)),
                None => "a key appears twice in this mapping".into(),
            },
            Some("keep one of them".into()),
        ),
        E::InvalidScalar { ty, .. } => wrong_type(map, value_path.as_deref(), scalar_type(ty)),
        E::SerdeInvalidType { expected, .. } | E::SerdeInvalidValue { expected, .. } => {
            wrong_type(map, value_path.as_deref(), expected)
        }
        E::Unexpected { expected, .. } => wrong_type(map, value_path.as_deref(), structure_name(expected)),
        E::NullIntoString { .. } => (
            ErrorKind::Type,
            format!("{} is empty", describe_path(value_path.as_deref())),
            Some("give it a value (an empty string is written `\"\"`)".into()),
        ),
        E::Budget { breach, .. } => (
            ErrorKind::Limit,
            describe_breach(breach),
            Some(
                "a configuration needs only a few anchors and aliases and little nesting; write \
                 the values out"
                    .into(),
            ),
        ),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => (
            ErrorKind::Limit,
            format!("aliases expand too far ({}); refusing it", plain_message(err)),
            Some(
                "a configuration needs only a few anchors and aliases and little nesting; write \
                 the values out"
                    .into(),
            ),
        ),
        E::MultipleDocuments { .. } => (
            ErrorKind::Limit,
            "a second YAML document starts here; a configuration is one document".into(),
            Some("remove this `---` (and merge what follows into the first document)".into()),
        ),
        E::UnknownAnchor { .. } => (
            ErrorKind::Syntax,
            "this alias names an anchor that is not defined above it".into(),
            Some("define `&name` before using `*name`".into()),
        ),
        E::Message { msg, .. } => (
            ErrorKind::Type,
            match value_path.as_deref() {
                Some(path) if !path.is_empty() => format!("`{path}`: {}", shown_long(msg)),
                _ => shown_long(msg),
            },
            None,
        ),
        other => (ErrorKind::Syntax, plain_message(other), None),
    };
    ParseFailure { pos, kind, message, hint }
}

fn describe_breach(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Aliases { .. } => format!("more than {MAX_ALIASES} aliases (`*name`); refusing it"),
        B::Anchors { .. } => format!("more than {MAX_ALIASES} anchors (`&name`); refusing it"),
        B::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases for {anchors} anchors looks like an alias bomb; refusing it")
        }
        B::Depth { .. } => format!("nesting deeper than {MAX_DEPTH} levels"),
        B::Nodes { .. } => format!("more than {MAX_EXPANDED_NODES} YAML nodes"),
        B::ScalarBytes { .. } => {
            format!("more than {} MiB of text", MAX_EXPANDED_BYTES / (1024 * 1024))
        }
        B::Documents { .. } => "more than one YAML document".into(),
        other => format!("over a parsing limit ({other:?})"),
    }
}

fn unknown_key(field: &str, expected: &[&'static str], key_path: Option<&str>) -> (ErrorKind, String, Option<String>) {
    let place = match key_path.and_then(parent_path) {
        Some("") | None => "at the top level".to_owned(),
        Some(parent) => format!("in `{parent}`"),
    };
    let keys = expected.join(", ");
    let hint = match closest(field, expected.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (keys here: {keys})"),
        None => format!("keys here: {keys}"),
    };
    (ErrorKind::UnknownKey, format!("unknown key `{}` {place}", shown(field)), Some(hint))
}

fn wrong_type(map: &SourceMap, path: Option<&str>, expected: &str) -> (ErrorKind, String, Option<String>) {
    let found = path.and_then(|p| map.node(p)).map(|n| &n.kind);
    let found_text = match found {
        Some(NodeKind::Scalar { text, .. }) => format!("`{}`", shown(text)),
        Some(NodeKind::Sequence) => "a list".into(),
        Some(NodeKind::Mapping) => "a mapping".into(),
        Some(NodeKind::Alias) => "an alias".into(),
        None => "something else".into(),
    };
    let hint = match found {
        _ if path == Some("") => Some(
            "the file holds sections (`ui:`, `gpu:`, `logs:`, `models:`, `shopper:`, `tests:`, \
             `daemon:`), each a mapping or list"
                .into(),
        ),
        Some(NodeKind::Scalar { text, .. }) if text.contains("${") => {
            Some("`${...}` is expanded only in string values; write the value itself here".into())
        }
        _ => type_hint(expected),
    };
    (ErrorKind::Type, format!("{} must be {expected}, found {found_text}", describe_path(path)), hint)
}

fn type_hint(expected: &str) -> Option<String> {
    if expected.starts_with("a list") {
        Some("write `[a, b]`, or one `- item` per line".into())
    } else if expected.starts_with("a mapping") {
        Some("write `key: value` lines indented under this key, or `{ key: value }`".into())
    } else if expected.contains("true or false") {
        Some("write `true` or `false`".into())
    } else {
        None
    }
}

/// `` `models[0].port` `` or, for the root, "the file".
fn describe_path(path: Option<&str>) -> String {
    match path {
        Some("") => "the file".into(),
        Some(p) => format!("`{p}`"),
        None => "this value".into(),
    }
}

fn scalar_type(ty: &str) -> &'static str {
    match ty {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" | "u128" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "a whole number",
        "f32" | "f64" | "floating point" => "a number",
        "boolean" | "bool" => "true or false",
        _ => "a value of another type",
    }
}

fn structure_name(expected: &str) -> &'static str {
    if expected.contains("sequence") || expected == "seq" {
        "a list"
    } else if expected.contains("mapping") || expected == "map" {
        "a mapping of `key: value` entries"
    } else if expected.contains("string") || expected == "scalar" {
        "a string"
    } else {
        "a different kind of value"
    }
}

fn plain_message(err: &serde_saphyr::Error) -> String {
    shown_long(&DefaultMessageFormatter.format_message(err))
}

/// Like [`shown`], for library messages that may be long.
fn shown_long(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect()
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(text: &str) -> ParseFailure {
        let map = SourceMap::scan(text).expect("scans");
        parse(text, &map).expect_err("should fail")
    }

    const MODEL: &str = "models:\n  - id: a\n    command: vllm\n    port: 8001\n";

    #[test]
    fn unknown_key_names_it_and_suggests() {
        let f = fail(&format!("{MODEL}    restrat: {{policy: always}}\n"));
        assert_eq!(f.pos, Pos::new(5, 5));
        assert_eq!(f.kind, ErrorKind::UnknownKey);
        assert_eq!(f.message, "unknown key `restrat` in `models[0]`");
        assert!(f.hint.unwrap().starts_with("did you mean `restart`?"));
    }

    #[test]
    fn unknown_top_level_key() {
        let f = fail("modles: []\n");
        assert_eq!(f.message, "unknown key `modles` at the top level");
        assert!(f.hint.unwrap().starts_with("did you mean `models`?"));
    }

    #[test]
    fn bad_choice_lists_the_choices() {
        let f = fail(&format!("{MODEL}    restart: {{policy: sometimes}}\n"));
        assert_eq!(f.pos, Pos::new(5, 23));
        assert_eq!(f.message, "`models[0].restart.policy` is `sometimes`, which is not a valid choice");
        assert_eq!(f.hint.unwrap(), "one of: no, on-failure, always");
    }

    #[test]
    fn wrong_type_says_what_was_expected_and_found() {
        let f = fail("models:\n  - id: a\n    command: vllm\n    port: eighty\n");
        assert_eq!(f.pos, Pos::new(4, 11));
        assert_eq!(f.message, "`models[0].port` must be a whole number from 0 to 65535, found `eighty`");
        let f = fail(&format!("{MODEL}    args: serve\n"));
        assert_eq!(f.message, "`models[0].args` must be a list, found `serve`");
        let f = fail("models:\n  - id: a\n    command: vllm\n    port: ${PORT}\n");
        assert!(f.hint.unwrap().contains("only in string values"));
    }

    #[test]
    fn missing_key_and_duplicate_key() {
        let f = fail("models:\n  - id: a\n    command: vllm\n");
        assert_eq!(f.kind, ErrorKind::MissingKey);
        assert_eq!(f.message, "`models[0]` has no `port`, which is required");
        assert_eq!(f.pos, Pos::new(2, 5));
        let f = fail(&format!("{MODEL}    port: 8002\n"));
        assert_eq!(f.kind, ErrorKind::DuplicateKey);
        assert_eq!(f.pos.line, 5);
    }

    #[test]
    fn custom_errors_get_the_path() {
        let f = fail(&format!("{MODEL}    stop_timeout_s: 0\n"));
        assert_eq!(f.pos, Pos::new(5, 21));
        assert!(
            f.message
                .starts_with("`models[0].stop_timeout_s`: a duration must be a number of seconds from 0.01 to 604800")
        );
    }

    #[test]
    fn the_budget_refuses_alias_floods_even_without_the_scan() {
        let refs = vec!["*s"; MAX_ALIASES + 1].join(", ");
        let text = format!("models:\n  - {{ id: a, command: x, port: 1, args: [&s x, {refs}] }}\n");
        let map = SourceMap::default();
        let f = parse(&text, &map).expect_err("over budget");
        assert_eq!(f.kind, ErrorKind::Limit, "{f:?}");
        assert_eq!(f.message, "more than 1000 aliases (`*name`); refusing it");
        assert_eq!(f.pos.line, 2, "{f:?}");
    }

    #[test]
    fn the_root_must_be_a_mapping() {
        let f = fail("hello\n");
        assert_eq!(f.message, "the file must be a mapping of `key: value` entries, found `hello`");
    }
}
