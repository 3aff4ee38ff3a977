//! The module map of `docs/ARCHITECTURE.md`, enforced: every `crate::<module>` path in `src/`
//! (in `use` items, grouped or not, and inline) must follow an allowed arrow. A failure names
//! the file, the line and the arrow.
//!
//! `super::` chains are checked for climbing out of a top-level module (`super::super::` past
//! the module root). Limitation: an inline module (`mod tests {`) is taken to last to the end
//! of its file, which is how this code base writes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which modules each module may use (besides itself). `exit` and the `say!`/`out!` macros are
/// crate-level helpers anyone may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("logs", &["util"]),
    ("config", &["util"]),
    ("protocol", &["config", "logs", "util"]),
    ("supervisor", &["protocol", "config", "logs", "util"]),
    ("gpu", &["protocol", "config", "logs", "util"]),
    ("probe", &["protocol", "config", "logs", "util"]),
    ("shopper", &["protocol", "config", "logs", "util"]),
    ("deploy", &["shopper", "probe", "protocol", "config", "logs", "util"]),
    ("engine", &["supervisor", "gpu", "probe", "shopper", "deploy", "protocol", "config", "logs", "util"]),
    ("remote", &["protocol", "config", "logs", "util"]),
    ("tui", &["protocol", "config", "logs", "util"]),
    ("fakes", &["probe", "protocol", "config", "logs", "util"]),
    (
        "cmd",
        &[
            "engine",
            "tui",
            "remote",
            "fakes",
            "supervisor",
            "gpu",
            "probe",
            "shopper",
            "deploy",
            "protocol",
            "config",
            "logs",
            "util",
        ],
    ),
];

/// Usable from anywhere.
const SHARED: &[&str] = &["exit"];

/// The top-level module a file under `src/` belongs to; `None` for the crate root files.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "macros")).then(|| name.to_owned())
}

/// Whether `from` may use `to`.
fn allowed(from: &str, to: &str) -> bool {
    if from == to || SHARED.contains(&to) {
        return true;
    }
    ALLOWED.iter().find(|(m, _)| *m == from).is_some_and(|(_, targets)| targets.contains(&to))
}

/// Every module a line names through `crate::`: `crate::x::…`, `use crate::{x, y::z}`, and
/// nested groups.
fn referenced_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of a group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_head(&item, &mut found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            push_head(&item, &mut found);
        } else {
            push_head(after, &mut found);
        }
        rest = after;
    }
    found
}

fn push_head(path: &str, found: &mut Vec<String>) {
    let head: String = path.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if !head.is_empty() && head != "self" {
        found.push(head);
    }
}

/// How many directories deep under its module a file is (`src/a/b/c.rs` → 1 beneath `a`).
fn depth_in_module(relative: &Path) -> usize {
    let components = relative.components().count();
    let is_mod = relative.file_name().is_some_and(|f| f == "mod.rs");
    components.saturating_sub(if is_mod { 2 } else { 1 })
}

/// Whether a run of `super::` hops in the line climbs past the top-level module.
fn climbs_out(line: &str, depth: usize) -> bool {
    let mut rest = line;
    while let Some(at) = rest.find("super::") {
        let mut hops = 0;
        let mut chain = &rest[at..];
        while let Some(next) = chain.strip_prefix("super::") {
            hops += 1;
            chain = next;
        }
        if hops > depth {
            return true;
        }
        rest = chain;
    }
    false
}

/// Violations in one file's text: `(line number, message)`.
fn check(relative: &Path, text: &str) -> Vec<(usize, String)> {
    let Some(from) = module_of(relative) else { return Vec::new() };
    let mut depth = depth_in_module(relative);
    let mut violations = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        // An inline module (`mod tests {`) adds a level for the `super::` chains in it
        // (they usually close at the end of the file).
        let trimmed = code.trim_start();
        if (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) && trimmed.trim_end().ends_with('{') {
            depth += 1;
        }
        for to in referenced_modules(code) {
            if !allowed(&from, &to) {
                violations.push((n + 1, format!("{from} → {to} is not an allowed arrow")));
            }
        }
        if climbs_out(code, depth) {
            violations.push((n + 1, format!("`super::` climbs out of {from}: name the module with `crate::`")));
        }
    }
    violations
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_path_in_src_follows_an_allowed_arrow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut report = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        if let Some(m) = module_of(relative) {
            modules.insert(m);
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (line, message) in check(relative, &text) {
            report.push(format!("src/{}:{line}: {message}", relative.display()));
        }
    }
    for m in &modules {
        assert!(
            ALLOWED.iter().any(|(name, _)| name == m) || SHARED.contains(&m.as_str()),
            "src/{m} is in no row of the arrow table (docs/ARCHITECTURE.md and tests/architecture.rs)"
        );
    }
    assert!(report.is_empty(), "forbidden arrows (docs/ARCHITECTURE.md):\n{}", report.join("\n"));
}

#[test]
fn the_checker_rejects_forbidden_arrows_and_accepts_allowed_ones() {
    let supervisor = Path::new("supervisor/model.rs");
    assert_eq!(check(supervisor, "use crate::engine::Event;").len(), 1);
    assert!(check(supervisor, "use crate::protocol::{Event, ModelChange};").is_empty());
    let tui = Path::new("tui/app.rs");
    let grouped = check(tui, "use crate::{cmd, protocol::State, logs::{Level, LogSource}};");
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    assert!(grouped[0].1.contains("tui → cmd"), "{grouped:?}");
    let inline = check(Path::new("engine/mod.rs"), "    let x = crate::tui::view::draw(frame);");
    assert!(inline.iter().any(|(_, m)| m.contains("engine → tui")), "{inline:?}");
    assert!(check(Path::new("engine/mod.rs"), "// crate::tui in a comment is fine").is_empty());
    assert!(check(Path::new("lib.rs"), "pub mod tui; use crate::cmd;").is_empty(), "the crate root wires everything");
    assert!(check(Path::new("cmd/mod.rs"), "use crate::{engine, tui, remote, fakes};").is_empty());
    assert!(check(Path::new("fakes/x.rs"), "crate::exit::code(2)").is_empty(), "exit is shared");
    // A relative path out of the module is caught too.
    assert_eq!(check(Path::new("gpu/sampler.rs"), "use super::super::engine::X;").len(), 1);
    assert!(check(Path::new("gpu/sampler.rs"), "use super::source::Call;").is_empty());
    assert_eq!(check(Path::new("probe/runner.rs"), "use super::super::ApiKey;").len(), 1);
    assert!(check(Path::new("probe/runner.rs"), "mod tests {\n    use super::super::ApiKey;").is_empty());
}
