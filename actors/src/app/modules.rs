//! Modules of a deploy: which files are modules, the names `require` knows
//! them by, the import graph and static cycles.
//!
//! ```text
//! modules/util/strings.lua      → require("util.strings")
//! modules/util/init.lua         → require("util")
//! [libs] mathx = 2, its sub.lua → require("@mathx.sub"); its init.lua → require("@mathx")
//! ```
//!
//! Every `.lua` file under the app's modules folder is a module, never a
//! handler. The deploy finds literal `require("name")` calls in every script
//! and module (`picloud_lua_sdk::find_requires`): a name that does not exist
//! rejects the deploy with `file:line`, and so does a cycle among requires
//! that run while a module loads (top level, outside any function body). A
//! mutual require inside function bodies is legal Lua and is allowed; if it
//! does form a cycle at run time, `require` names it then.

use std::collections::{BTreeMap, HashMap};

use picloud_lua_sdk::{ModuleSet, ModuleSource, find_requires, validate_module_name};

use super::error::DeployError;

/// The longest modules folder name, in bytes.
pub const MODULES_FOLDER_BYTES_MAX: usize = 64;

/// Checks the manifest's `modules` folder: one path segment of letters,
/// digits, `_` and `-`.
pub fn validate_folder(folder: &str) -> Result<(), String> {
    if folder.is_empty()
        || folder.len() > MODULES_FOLDER_BYTES_MAX
        || !folder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "modules = {folder:?}: must be one folder name of 1-{MODULES_FOLDER_BYTES_MAX} letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// The `require` name of the module at `path` (relative to its root, ending
/// in `.lua`) under `prefix` (`""` for the app, `"@mathx"` for a library).
fn module_name(prefix: &str, path: &str) -> Result<String, String> {
    let stem = path
        .strip_suffix(".lua")
        .ok_or_else(|| "a module must be a .lua file".to_string())?;
    let mut segments: Vec<&str> = stem.split('/').collect();
    // A dot inside a file name would read as a folder boundary.
    let invalid = || {
        "module file and folder names may hold only letters, digits, '_' and '-' (the name `require` uses must be valid)".to_string()
    };
    if segments.iter().any(|segment| segment.contains('.')) {
        return Err(invalid());
    }
    if segments.len() > 1 && segments.last() == Some(&"init") {
        segments.pop();
    }
    let name = match (prefix, segments.as_slice()) {
        ("", _) => segments.join("."),
        (_, ["init"]) => prefix.to_string(),
        _ => format!("{prefix}.{}", segments.join(".")),
    };
    validate_module_name(&name).map_err(|_| invalid())?;
    Ok(name)
}

/// The modules among `files` (paths relative to their root), labelled
/// `<label_root>/<path>` in messages. Two files that would be the same
/// module (`a.lua` and `a/init.lua`) reject the deploy.
pub(crate) fn module_sources<'a>(
    prefix: &str,
    label_root: &str,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<ModuleSource>, DeployError> {
    let mut sources: Vec<ModuleSource> = Vec::new();
    let mut by_name: HashMap<String, String> = HashMap::new();
    for (path, source) in files {
        let file = format!("{label_root}/{path}");
        let name = module_name(prefix, path).map_err(|e| DeployError {
            message: format!("{file}: {e}"),
        })?;
        if let Some(other) = by_name.insert(name.clone(), file.clone()) {
            return Err(DeployError {
                message: format!("{other} and {file} are both module {name:?}; keep one"),
            });
        }
        sources.push(ModuleSource {
            name,
            file,
            source: source.to_string(),
        });
    }
    Ok(sources)
}

/// One file whose requires are checked: its label, its source, and its
/// module name when it is a module.
pub(crate) struct Importer<'a> {
    pub file: &'a str,
    pub source: &'a str,
    pub module: Option<&'a str>,
}

/// The import graph (file → the distinct module names it requires
/// literally, for every file with any). Rejects a literal name `modules`
/// cannot load, and a cycle among load-time requires.
pub(crate) fn import_graph(
    importers: &[Importer<'_>],
    modules: &ModuleSet,
) -> Result<BTreeMap<String, Vec<String>>, DeployError> {
    let mut graph = BTreeMap::new();
    // Module → the modules its top level requires, with where.
    let mut load_edges: BTreeMap<&str, Vec<(String, &str, u32)>> = BTreeMap::new();
    for importer in importers {
        let mut names: Vec<String> = Vec::new();
        for call in find_requires(importer.source) {
            if let Some(problem) = modules.problem(&call.name) {
                return Err(DeployError {
                    message: format!("{}:{}: require: {problem}", importer.file, call.line),
                });
            }
            if let (Some(module), true) = (importer.module, call.top_level) {
                load_edges.entry(module).or_default().push((
                    call.name.clone(),
                    importer.file,
                    call.line,
                ));
            }
            if !names.contains(&call.name) {
                names.push(call.name);
            }
        }
        if !names.is_empty() {
            graph.insert(importer.file.to_string(), names);
        }
    }
    if let Some((cycle, file, line)) = find_cycle(&load_edges) {
        return Err(DeployError {
            message: format!(
                "{file}:{line}: require cycle: {} (these modules require each other while loading)",
                cycle.join(" -> ")
            ),
        });
    }
    Ok(graph)
}

type LoadEdges<'a> = BTreeMap<&'a str, Vec<(String, &'a str, u32)>>;

/// The first cycle in `edges` (in name order), as the names along it with
/// the first one repeated at the end, and the file and line of the require
/// that closes it.
fn find_cycle<'a>(edges: &LoadEdges<'a>) -> Option<(Vec<String>, &'a str, u32)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &str,
        edges: &LoadEdges<'a>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<(Vec<String>, &'a str, u32)> {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for (target, file, line) in edges.get(node).into_iter().flatten() {
            match marks.get(target.as_str()) {
                Some(Mark::OnPath) => {
                    let start = path.iter().position(|name| name == target).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(target.clone());
                    return Some((cycle, file, *line));
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(found) = visit(target, edges, marks, path) {
                        return Some(found);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for node in edges.keys() {
        if !marks.contains_key(*node) {
            let mut path = Vec::new();
            if let Some(found) = visit(node, edges, &mut marks, &mut path) {
                return Some(found);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_map_to_require_names() {
        let cases = [
            ("", "util/strings.lua", Ok("util.strings")),
            ("", "util/init.lua", Ok("util")),
            ("", "init.lua", Ok("init")),
            ("@mathx", "init.lua", Ok("@mathx")),
            ("@mathx", "sub.lua", Ok("@mathx.sub")),
            ("@mathx", "a/b/init.lua", Ok("@mathx.a.b")),
            ("", "my file.lua", Err(())),
            ("", "a.b.lua", Err(())),
            ("", "notes.txt", Err(())),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(
                module_name(prefix, path).map_err(|_| ()),
                expected.map(str::to_string),
                "{prefix} {path}"
            );
        }
    }

    #[test]
    fn one_name_two_files_is_rejected() {
        let error = module_sources("", "modules", [("a.lua", "return 1"), ("a/init.lua", "")])
            .expect_err("ambiguous");
        assert!(
            error
                .message
                .contains("modules/a.lua and modules/a/init.lua are both module \"a\"")
        );
    }

    fn graph(files: &[(&str, &str)]) -> Result<BTreeMap<String, Vec<String>>, DeployError> {
        let sources = module_sources(
            "",
            "modules",
            files
                .iter()
                .filter_map(|(path, text)| Some((path.strip_prefix("modules/")?, *text))),
        )?;
        let modules =
            ModuleSet::compile("modules", BTreeMap::new(), &sources).map_err(DeployError::from)?;
        let importers: Vec<Importer<'_>> = files
            .iter()
            .map(|(path, source)| Importer {
                file: path,
                source,
                module: sources
                    .iter()
                    .find(|module| module.file == *path)
                    .map(|module| module.name.as_str()),
            })
            .collect();
        import_graph(&importers, &modules)
    }

    #[test]
    fn the_graph_lists_literal_imports_per_file() {
        let found = graph(&[
            (
                "main.lua",
                "local s = require('util.strings')\nlocal again = require 'util.strings'",
            ),
            ("modules/util/strings.lua", "return require('util')"),
            ("modules/util/init.lua", "return {}"),
        ])
        .expect("valid");
        assert_eq!(
            found,
            BTreeMap::from([
                ("main.lua".to_string(), vec!["util.strings".to_string()]),
                (
                    "modules/util/strings.lua".to_string(),
                    vec!["util".to_string()]
                ),
            ])
        );
    }

    #[test]
    fn missing_names_and_load_cycles_are_rejected() {
        let missing = graph(&[("main.lua", "\nlocal x = require('nope')")]).expect_err("missing");
        assert!(
            missing
                .message
                .starts_with("main.lua:2: require: module \"nope\" not found"),
            "{}",
            missing.message
        );
        let cycle = graph(&[
            ("modules/a.lua", "return require('b')"),
            ("modules/b.lua", "local c = require('c')\nreturn c"),
            ("modules/c.lua", "\nreturn require('a')"),
        ])
        .expect_err("cycle");
        assert!(
            cycle
                .message
                .starts_with("modules/c.lua:2: require cycle: a -> b -> c -> a"),
            "{}",
            cycle.message
        );
        // Requires inside function bodies run later: a mutual pair is fine.
        graph(&[
            ("modules/a.lua", "local b = require('b')\nreturn {}"),
            (
                "modules/b.lua",
                "return {f = function() return require('a') end}",
            ),
        ])
        .expect("lazy mutual requires are allowed");
    }
}
