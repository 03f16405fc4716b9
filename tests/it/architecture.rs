//! ARCHITECTURE.md's invariants, checked on the source itself: which module may use which,
//! no import circle among the top-level modules, the pure core free of I/O, `plan` free of the
//! network, and the simulator and the client strangers to each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source lines that are code: comments (doc or not) and unit tests left out.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module of each file under src/ (`src/job/queue.rs` -> `job`) and its code.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .to_string();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        out.entry(module).or_default().push_str(&code_of(&f));
    }
    out
}

/// The crate modules a module's code names (`crate::x`).
fn uses(code: &str, me: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(i, _)| {
            code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty() && m != me)
        .collect()
}

#[test]
fn layering_and_purity() {
    let mods = modules();
    let graph: BTreeMap<&str, BTreeSet<String>> = mods.iter().map(|(m, c)| (m.as_str(), uses(c, m))).collect();
    let allowed = |m: &str, dep: &str| -> bool {
        let below_commands = m != "commands";
        match (m, dep) {
            (_, "commands") if below_commands => false,
            ("sim", "client") | ("client", "sim") => false,
            ("stats" | "planner" | "report", d) => matches!(d, "report" | "stats"),
            ("api" | "secret" | "engine", _) => false,
            _ => true,
        }
    };
    for (m, deps) in &graph {
        for d in deps {
            assert!(allowed(m, d), "`{m}` must not use `crate::{d}` (see ARCHITECTURE.md)");
        }
    }
    // The pure core opens no file, socket or clock.
    for m in ["stats", "planner", "report"] {
        let code = &mods[m];
        for banned in [
            "std::fs",
            "tokio::",
            "reqwest",
            "std::net",
            "Instant::now",
            "SystemTime::now",
            "std::env",
        ] {
            assert!(!code.contains(banned), "`{m}` is pure but uses {banned}");
        }
    }
    // `plan` never touches the network.
    let plan = code_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands/plan.rs"));
    for banned in [
        "crate::client",
        "crate::engine",
        "crate::target",
        "reqwest",
        "tokio::net",
    ] {
        assert!(!plan.contains(banned), "commands/plan.rs uses {banned}");
    }
    // Only `main` picks the exit code; the client never prints.
    for (m, code) in &mods {
        assert!(!code.contains("std::process::exit"), "`{m}` exits the process itself");
    }
    for banned in ["eprintln!", "println!", "crate::ui"] {
        assert!(
            !mods["client"].contains(banned),
            "the client prints or speaks to people ({banned})"
        );
    }
}

#[test]
fn no_import_circle_among_modules() {
    let mods = modules();
    let graph: BTreeMap<String, BTreeSet<String>> = mods
        .iter()
        .map(|(m, c)| {
            (
                m.clone(),
                uses(c, m).into_iter().filter(|d| mods.contains_key(d)).collect(),
            )
        })
        .collect();
    // Depth-first search for a back edge; the path found is printed.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in &graph[m] {
            if let Some(c) = visit(d, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn long_files_say_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests live beside the code; only the code counts.
        let code_lines = text.split("#[cfg(test)]").next().unwrap_or("").lines().count();
        let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
        assert!(
            code_lines <= 600 || head.contains("Long because"),
            "{} has {code_lines} lines of code and no `Long because` reason at its top",
            f.display()
        );
    }
}
