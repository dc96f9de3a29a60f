//! The library's structure, checked: its layers only use the layers below
//! them, no source file is longer than 600 lines, atomics come from
//! `sync/`, and `unsafe` stays in `sync/`, `sys/` and `storage/` (apart
//! from the borrow sites listed below). docs/ARCHITECTURE.md, "Code map".

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom up, and what each may use (besides itself).
const LAYERS: &[(&str, &[&str])] = &[
    ("sync", &[]),
    ("format", &[]),
    ("codec", &[]),
    ("error", &["codec"]),
    ("sys", &["sync", "format", "error"]),
    ("storage", &["sync", "format", "error", "sys"]),
    (
        "protocol",
        &["sync", "format", "codec", "error", "sys", "storage"],
    ),
    (
        "api",
        &[
            "sync", "format", "codec", "error", "sys", "storage", "protocol",
        ],
    ),
];

const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file of the library, by path relative to `src/`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &src(), &mut out);
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

/// The layer a file belongs to (`lib.rs` belongs to none).
fn layer(path: &str) -> Option<&'static str> {
    let top = path.split('/').next().unwrap().trim_end_matches(".rs");
    LAYERS.iter().map(|(l, _)| *l).find(|l| *l == top)
}

/// The code of a file without its comments (line comments only: the
/// library has no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let mut wrong = Vec::new();
    for (path, text) in sources() {
        let Some(me) = layer(&path) else { continue };
        let allowed = LAYERS.iter().find(|(l, _)| *l == me).unwrap().1;
        let code = code(&text);
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{..}` names the crate root's re-exports: the API.
            let used = if used.is_empty() {
                "api".to_string()
            } else {
                used
            };
            if used != me && !allowed.contains(&used.as_str()) {
                wrong.push(format!("{path} uses crate::{used}"));
            }
        }
    }
    wrong.dedup();
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(_, t)| t.lines().count() > MAX_LINES)
        .map(|(p, t)| format!("{p}: {} lines", t.lines().count()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn atomics_come_from_sync() {
    let mut wrong = Vec::new();
    for (path, text) in sources() {
        // Test-only code may count things with std's atomics.
        if path.starts_with("sync/") || path.ends_with("tests.rs") || path == "protocol/loom.rs" {
            continue;
        }
        let code = code(&text);
        for w in [
            "AtomicU8",
            "AtomicU16",
            "AtomicU32",
            "AtomicU64",
            "AtomicUsize",
        ] {
            if code.contains("std::sync::atomic") && code.contains(w) {
                let from_std = code
                    .lines()
                    .any(|l| l.contains("std::sync::atomic") && l.contains(w));
                if from_std {
                    wrong.push(format!("{path}: {w} from std::sync::atomic"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn unsafe_stays_in_sync_sys_and_storage() {
    let mut found = BTreeMap::new();
    for (path, text) in sources() {
        if ["sync/", "sys/", "storage/"]
            .iter()
            .any(|d| path.starts_with(d))
        {
            continue;
        }
        let n = code(&text).matches("unsafe").count();
        if n > 0 {
            found.insert(path, n);
        }
    }
    // Borrowing a frame's bytes is `storage::span`'s (ClaimedBytes,
    // HeldBytes), not the protocol's or the API's.
    assert!(
        found.is_empty(),
        "unsafe outside sync/, sys/ and storage/: {found:?}"
    );
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let mut wrong = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let c = l.split("//").next().unwrap();
            if !c.contains("unsafe {") {
                continue;
            }
            let said = lines[i.saturating_sub(6)..=i]
                .iter()
                .any(|l| l.contains("SAFETY:"));
            if !said {
                wrong.push(format!("{path}:{}", i + 1));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe blocks without a SAFETY comment:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn nothing_public_is_hidden() {
    let hidden: Vec<String> = sources()
        .iter()
        .filter(|(_, t)| code(t).contains("doc(hidden)"))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(hidden.is_empty(), "#[doc(hidden)] in {hidden:?}");
}

/// The files whose `pub fn`s are the crate's entry points (re-exported
/// from the crate root or methods of types that are).
const EXAMPLED: &[&str] = &[
    "api/",
    "codec/",
    "protocol/options.rs",
    "protocol/read.rs",
    "protocol/raw.rs",
    "error.rs",
];

#[test]
fn every_public_function_has_an_example() {
    let mut missing = Vec::new();
    for (path, text) in sources() {
        if !EXAMPLED.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(rest) = l.trim_start().strip_prefix("pub fn ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // The doc comment directly above, past its attributes (and
            // plain comments between them).
            let mut j = i;
            while j > 0 {
                let above = lines[j - 1].trim_start();
                let plain = above.starts_with("//") && !above.starts_with("///");
                if !above.starts_with("#[") && !plain {
                    break;
                }
                j -= 1;
            }
            let mut has_example = false;
            while j > 0 && lines[j - 1].trim_start().starts_with("///") {
                j -= 1;
                has_example |= lines[j].contains("```");
            }
            if !has_example {
                missing.push(format!("{path}:{} fn {name}", i + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "public functions without an example in their doc comment ({}):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
