//! ARCHITECTURE.md's invariants, checked on the source itself with a real parser (`syn`):
//! which module may use which (grouped imports, qualified paths and test modules included),
//! no import circle between files (in the library's code: a unit test may drive its file
//! through the layer above), nothing below `commands` sees clap, no command calls
//! another, the pure core free of I/O, `plan` free of the network, the simulator and the
//! client strangers to each other, and no file or function too long to read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

const MAX_FILE_LINES: usize = 900;
const MAX_FN_LINES: usize = 120;

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

/// One source file: its module path (`job::queue`), text and syntax tree.
struct File {
    rel: String,
    module: Vec<String>,
    text: String,
    ast: syn::File,
}

fn files() -> Vec<File> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    // main.rs is the binary's own crate (it names the library as `sizeup::`): 18 lines.
    paths.retain(|p| !p.ends_with("main.rs"));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            File { rel, module, text, ast }
        })
        .collect()
}

/// What a module holds: the items it defines, its inline modules, and its `use` aliases
/// (re-exports included), by name.
#[derive(Default)]
struct Scope {
    file: usize,
    defined: BTreeSet<String>,
    aliases: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
}

/// Every `use` tree flattened to (alias, absolute-or-relative path); `*` gives alias "*".
fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            let mut path = prefix.clone();
            if name != "self" {
                path.push(name.clone());
            }
            let alias = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                name
            };
            out.push((alias, path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => out.push(("*".into(), prefix.clone())),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten(t, prefix, out)),
    }
}

/// A path as written in module `at`, made absolute (`crate::` dropped); `None` for paths
/// outside the crate (std, dependencies, local names).
fn absolute(path: &[String], at: &[String], scopes: &BTreeMap<Vec<String>, Scope>) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some([at, &path[1..]].concat()),
        "super" => {
            let mut base = at.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some([base.as_slice(), rest].concat())
        }
        name => {
            // A child module of this one, or a name this module imported.
            let child = [at, std::slice::from_ref(first)].concat();
            if scopes.contains_key(&child) {
                return Some([at, path].concat());
            }
            let target = scopes.get(at)?.aliases.get(name)?;
            let target = absolute(target, at, scopes)?;
            Some([target.as_slice(), &path[1..]].concat())
        }
    }
}

/// The file that defines what `path` (absolute) names, following re-exports.
fn resolve(path: &[String], scopes: &BTreeMap<Vec<String>, Scope>, depth: usize) -> Option<usize> {
    if depth > 16 {
        return None;
    }
    // The longest prefix that is a module.
    let mut n = path.len();
    while n > 0 && !scopes.contains_key(&path[..n]) {
        n -= 1;
    }
    let module = &path[..n];
    let scope = scopes.get(module)?;
    let Some(item) = path.get(n) else {
        return Some(scope.file);
    };
    if scope.defined.contains(item) {
        return Some(scope.file);
    }
    if let Some(target) = scope.aliases.get(item) {
        let target = absolute(target, module, scopes)?;
        return resolve(&[target.as_slice(), &path[n + 1..]].concat(), scopes, depth + 1).or(Some(scope.file));
    }
    for g in &scope.globs {
        if let Some(g) = absolute(g, module, scopes) {
            let found = resolve(&[g.as_slice(), &path[n..]].concat(), scopes, depth + 1);
            if found.is_some() {
                return found;
            }
        }
    }
    Some(scope.file)
}

/// Scopes of every module, inline ones too (they belong to their file).
fn scopes(files: &[File]) -> BTreeMap<Vec<String>, Scope> {
    fn walk(items: &[syn::Item], module: Vec<String>, file: usize, out: &mut BTreeMap<Vec<String>, Scope>) {
        let mut scope = Scope {
            file,
            ..Scope::default()
        };
        for item in items {
            let name = match item {
                syn::Item::Struct(i) => Some(i.ident.to_string()),
                syn::Item::Enum(i) => Some(i.ident.to_string()),
                syn::Item::Fn(i) => Some(i.sig.ident.to_string()),
                syn::Item::Trait(i) => Some(i.ident.to_string()),
                syn::Item::Type(i) => Some(i.ident.to_string()),
                syn::Item::Const(i) => Some(i.ident.to_string()),
                syn::Item::Static(i) => Some(i.ident.to_string()),
                syn::Item::Union(i) => Some(i.ident.to_string()),
                syn::Item::Macro(i) => i.ident.as_ref().map(|i| i.to_string()),
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        walk(inner, [module.clone(), vec![m.ident.to_string()]].concat(), file, out);
                    }
                    None
                }
                syn::Item::Use(u) => {
                    let mut flat = Vec::new();
                    flatten(&u.tree, &mut Vec::new(), &mut flat);
                    for (alias, path) in flat {
                        if alias == "*" {
                            scope.globs.push(path);
                        } else {
                            scope.aliases.insert(alias, path);
                        }
                    }
                    None
                }
                _ => None,
            };
            if let Some(n) = name {
                scope.defined.insert(n);
            }
        }
        out.insert(module, scope);
    }
    let mut out = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        walk(&f.ast.items, f.module.clone(), i, &mut out);
    }
    out
}

/// Every crate path a file names, with the module it is named in: `use` trees (grouped ones
/// flattened) and paths in code, test modules included.
struct Paths {
    module: Vec<String>,
    found: Vec<(Vec<String>, Vec<String>)>,
    /// Leave `#[cfg(test)]` modules out (the circle check: a unit test may drive its file
    /// through the layer above it, which the library itself never does).
    skip_tests: bool,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"))
}

impl<'a> Visit<'a> for Paths {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if self.skip_tests && is_test_only(&m.attrs) {
            return;
        }
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        let mut flat = Vec::new();
        flatten(&u.tree, &mut Vec::new(), &mut flat);
        for (_, path) in flat {
            self.found.push((self.module.clone(), path));
        }
    }
    /// `pub(crate)` and `pub(super)` name modules, but use nothing.
    fn visit_visibility(&mut self, _: &'a syn::Visibility) {}
    fn visit_path(&mut self, p: &'a syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.found.push((self.module.clone(), segs));
        syn::visit::visit_path(self, p);
    }
}

/// Files that are test code as a whole (`#[cfg(test)] mod testkit;`).
fn test_files(files: &[File]) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for f in files {
        for item in &f.ast.items {
            if let syn::Item::Mod(m) = item {
                if m.content.is_none() && is_test_only(&m.attrs) {
                    out.insert([f.module.clone(), vec![m.ident.to_string()]].concat());
                }
            }
        }
    }
    out
}

/// Which file each file uses (itself left out); `skip_tests` leaves test code out.
fn graph(files: &[File], skip_tests: bool) -> Vec<BTreeSet<usize>> {
    let scopes = scopes(files);
    let test_only = test_files(files);
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if skip_tests && test_only.contains(&f.module) {
                return BTreeSet::new();
            }
            let mut v = Paths {
                module: f.module.clone(),
                found: Vec::new(),
                skip_tests,
            };
            v.visit_file(&f.ast);
            v.found
                .iter()
                .filter_map(|(at, p)| absolute(p, at, &scopes))
                .filter(|p| !p.is_empty())
                .filter_map(|p| resolve(&p, &scopes, 0))
                .filter(|&j| j != i)
                .collect()
        })
        .collect()
}

fn top(f: &File) -> &str {
    f.module.first().map_or("crate", String::as_str)
}

#[test]
fn layering_and_purity() {
    let files = files();
    let g = graph(&files, false);
    let allowed = |m: &str, dep: &str| -> bool {
        match (m, dep) {
            (_, "commands") => m == "crate",
            // Flags stop at the commands: nothing below them sees clap's structs.
            (_, "cli") => matches!(m, "commands" | "crate"),
            ("sim", "client") | ("client", "sim") => false,
            // The sweep and the run share their outcome policy below both (`outcome`).
            ("measure", "job") | ("job", "measure") => false,
            ("stats" | "planner" | "report" | "model", d) => matches!(d, "model" | "stats" | "report" | "fmt" | "api"),
            ("api" | "secret" | "engine" | "fmt" | "hash", _) => false,
            _ => true,
        }
    };
    for (i, f) in files.iter().enumerate() {
        for &j in &g[i] {
            let (m, d) = (top(f), top(&files[j]));
            if m != d {
                assert!(
                    allowed(m, d),
                    "{} must not use {} (see ARCHITECTURE.md)",
                    f.rel,
                    files[j].rel
                );
            }
        }
    }
    // No command calls another: commands share only settings.rs and mod.rs.
    let is_command = |f: &File| {
        f.module.first().is_some_and(|m| m == "commands") && f.module.len() == 2 && f.module[1] != "settings"
    };
    for (i, f) in files.iter().enumerate().filter(|(_, f)| is_command(f)) {
        for &j in &g[i] {
            assert!(
                !is_command(&files[j]),
                "command {} uses command {}",
                f.rel,
                files[j].rel
            );
        }
    }
    // The pure core opens no file, socket or clock.
    for f in files
        .iter()
        .filter(|f| matches!(top(f), "stats" | "planner" | "report" | "model"))
    {
        for banned in [
            "std::fs",
            "tokio::",
            "reqwest",
            "std::net",
            "Instant::now",
            "SystemTime::now",
            "std::env",
        ] {
            assert!(!f.text.contains(banned), "{} is pure but uses {banned}", f.rel);
        }
    }
    // `plan` never touches the network.
    let plan = files
        .iter()
        .find(|f| f.rel == "commands/plan.rs")
        .expect("commands/plan.rs");
    let plan_deps: Vec<&str> = g[files.iter().position(|f| f.rel == plan.rel).unwrap()]
        .iter()
        .map(|&j| top(&files[j]))
        .collect();
    for banned in ["client", "engine", "target", "job", "measure", "auto"] {
        assert!(!plan_deps.contains(&banned), "commands/plan.rs uses crate::{banned}");
    }
    for banned in ["reqwest", "tokio::net"] {
        assert!(!plan.text.contains(banned), "commands/plan.rs uses {banned}");
    }
    // Only `main` picks the exit code; the client never prints.
    for f in &files {
        assert!(!f.text.contains("process::exit"), "{} exits the process itself", f.rel);
    }
    for f in files.iter().filter(|f| top(f) == "client") {
        for banned in ["eprintln!", "println!", "eprint!", "print!("] {
            assert!(!f.text.contains(banned), "the client prints ({banned}) in {}", f.rel);
        }
    }
}

#[test]
fn no_import_circle_between_files() {
    let files = files();
    let g = graph(&files, true);
    // Files that reach each other are in one circle; every circle is named.
    let reach = |from: usize| -> BTreeSet<usize> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(i) = todo.pop() {
            for &j in &g[i] {
                if seen.insert(j) {
                    todo.push(j);
                }
            }
        }
        seen
    };
    let reaches: Vec<BTreeSet<usize>> = (0..files.len()).map(reach).collect();
    let mut circles = BTreeSet::new();
    for i in 0..files.len() {
        let circle: BTreeSet<usize> = reaches[i]
            .iter()
            .copied()
            .filter(|&j| reaches[j].contains(&i))
            .collect();
        if !circle.is_empty() {
            let names: Vec<&str> = circle.iter().map(|&k| files[k].rel.as_str()).collect();
            circles.insert(names.join(", "));
        }
    }
    assert!(
        circles.is_empty(),
        "files that import each other:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Every function (free, in an impl or a trait, in test modules too) and its length in lines.
struct Fns(Vec<(String, usize)>);

impl<'a> Visit<'a> for Fns {
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        self.0.push((f.sig.ident.to_string(), span_lines(f)));
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        self.0.push((f.sig.ident.to_string(), span_lines(f)));
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        self.0.push((f.sig.ident.to_string(), span_lines(f)));
        syn::visit::visit_trait_item_fn(self, f);
    }
}

fn span_lines(item: &impl syn::spanned::Spanned) -> usize {
    let span = item.span();
    span.end().line - span.start().line + 1
}

#[test]
fn no_file_or_function_too_long_to_read() {
    let mut long = Vec::new();
    for f in files() {
        let lines = f.text.lines().count();
        if lines > MAX_FILE_LINES {
            long.push(format!(
                "src/{} has {lines} lines (at most {MAX_FILE_LINES}): split it along a seam",
                f.rel
            ));
        }
        let mut fns = Fns(Vec::new());
        fns.visit_file(&f.ast);
        for (name, n) in fns.0.into_iter().filter(|(_, n)| *n > MAX_FN_LINES) {
            long.push(format!(
                "src/{}: fn {name} has {n} lines (at most {MAX_FN_LINES})",
                f.rel
            ));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The parser sees what the old text search missed: a grouped import, and one in a test
/// module.
#[test]
fn the_checker_sees_grouped_imports_and_test_modules() {
    let text =
        "use crate::{a::X, b::{self, Y}};\n#[cfg(test)]\nmod tests { use crate::c::Z; fn f() { crate::d::g(); } }\n";
    let ast = syn::parse_file(text).unwrap();
    let mut v = Paths {
        module: vec!["m".into()],
        found: Vec::new(),
        skip_tests: false,
    };
    v.visit_file(&ast);
    let named: BTreeSet<String> = v
        .found
        .iter()
        .filter(|(_, p)| p[0] == "crate")
        .map(|(_, p)| p[1].clone())
        .collect();
    assert_eq!(named, ["a", "b", "c", "d"].map(String::from).into_iter().collect());
}

/// Every file ARCHITECTURE.md names (`level.rs`, `sizing/{sweep,plan}.rs`) exists under `src/`
/// or `tests/it/`, so the map cannot keep rooms that were moved or removed.
#[test]
fn the_code_map_names_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut present = Vec::new();
    rust_files(&root.join("src"), &mut present);
    rust_files(&root.join("tests/it"), &mut present);
    let present: Vec<String> = present.iter().map(|p| p.to_string_lossy().replace('\\', "/")).collect();
    let mut named = 0;
    for quoted in doc.split('`').skip(1).step_by(2) {
        let Some(stem) = quoted.strip_suffix(".rs") else {
            continue;
        };
        // `dir/{a,b}.rs` names dir/a.rs and dir/b.rs.
        let names: Vec<String> = match (stem.find('{'), stem.strip_suffix('}')) {
            (Some(i), Some(inner)) => inner[i + 1..]
                .split(',')
                .map(|n| format!("{}{n}.rs", &stem[..i]))
                .collect(),
            _ => vec![format!("{stem}.rs")],
        };
        for name in names {
            named += 1;
            assert!(
                present.iter().any(|p| p.ends_with(&format!("/{name}"))),
                "ARCHITECTURE.md names `{name}`, which is no file in src/ or tests/it/"
            );
        }
    }
    assert!(named > 40, "the map should name the files it describes; found {named}");
}
