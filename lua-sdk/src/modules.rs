//! Modules: `require("name")` inside the sandbox.
//!
//! ```text
//! deploy / load:  ModuleSet::compile(sources)   every module parsed once, kept as
//!                                               bytecode this crate produced itself
//! per VM:         require (Lua, installed before the prelude)
//!                   loaded[name]?          → cached value (per VM)
//!                   loading[name]?         → error "require cycle: a -> b -> a"
//!                   fetch(name) (Rust)     → the chunk, loaded from the bytecode
//!                   raw pcall(chunk, name) → called from Lua, so the module's top
//!                                            level may yield (kv.* are async)
//! ```
//!
//! `require` is Lua, not a Rust callback: a chunk called from Rust sits
//! behind a C boundary and could not yield. The Rust helper only hands the
//! compiled chunk over. Failures of the chunk are re-raised unchanged (a
//! kill stays a kill, a host error stays a host error); the bookkeeping is
//! undone first so a VM that survives a module error does not believe the
//! module is still loading.
//!
//! Only names in the [`ModuleSet`] load: there is no search path, no file
//! system and no C module. Names are dot-separated segments of letters,
//! digits, `_` and `-`; `@lib.sub` names a module of a shared library the
//! app pinned.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib, Value};

use crate::error::CompileError;
use crate::limits::SYNTAX_CHECK_MEMORY_BYTES_MAX;

/// The longest module name `require` accepts, in bytes.
pub const MODULE_NAME_BYTES_MAX: usize = 128;

/// One module of an app, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    /// The name scripts pass to `require` (`util.strings`, `@mathx.sub`).
    pub name: String,
    /// Where it comes from, as error messages show it (`modules/util/strings.lua`).
    pub file: String,
    pub source: String,
}

/// One compiled module. The bytecode can only come from [`ModuleSet::compile`]
/// (text compiled by this crate), never from outside: loading foreign
/// bytecode could break the VM's memory safety.
#[derive(Debug, Clone)]
struct CompiledModule {
    file: String,
    bytecode: Vec<u8>,
}

/// Every module one app version can `require`, compiled once (per deploy
/// and per node) and shared by all of the app's VMs.
#[derive(Debug, Clone, Default)]
pub struct ModuleSet {
    /// The app's module folder, for error messages (`modules`).
    folder: String,
    /// Pinned libraries: name → version, for error messages.
    libs: BTreeMap<String, u64>,
    modules: HashMap<String, CompiledModule>,
}

impl ModuleSet {
    /// Compiles every module. The first syntax error fails the whole set
    /// (`modules/x.lua:3: ...`).
    pub fn compile(
        folder: &str,
        libs: BTreeMap<String, u64>,
        sources: &[ModuleSource],
    ) -> Result<ModuleSet, CompileError> {
        let mut modules = HashMap::with_capacity(sources.len());
        for module in sources {
            // A fresh small state per module: the parse's memory is capped
            // and freed at once.
            let lua = Lua::new_with(StdLib::NONE, LuaOptions::new()).map_err(|e| {
                CompileError::new(
                    &module.file,
                    None,
                    format!("cannot create a Lua state: {e}"),
                )
            })?;
            lua.set_memory_limit(SYNTAX_CHECK_MEMORY_BYTES_MAX)
                .map_err(|e| CompileError::new(&module.file, None, e.to_string()))?;
            let function = crate::compile::compile(&lua, &module.file, &module.source)?;
            // Not stripped: runtime errors keep `file:line`.
            let bytecode = function.dump(false);
            modules.insert(
                module.name.clone(),
                CompiledModule {
                    file: module.file.clone(),
                    bytecode,
                },
            );
        }
        Ok(ModuleSet {
            folder: folder.to_string(),
            libs,
            modules,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Why `require(name)` cannot succeed, or `None` when it can load.
    pub fn problem(&self, name: &str) -> Option<String> {
        if let Err(message) = validate_module_name(name) {
            return Some(message);
        }
        if self.contains(name) {
            return None;
        }
        let path = |segments: &[&str]| segments.join("/");
        Some(match name.strip_prefix('@') {
            Some(lib_name) => {
                let mut segments = lib_name.split('.');
                let lib = segments.next().unwrap_or_default();
                let rest: Vec<&str> = segments.collect();
                match self.libs.get(lib) {
                    None => format!(
                        "module {name:?} not found: library {lib} is not pinned in picloud.toml [libs]"
                    ),
                    Some(version) if rest.is_empty() => format!(
                        "module {name:?} not found: library {lib} v{version} has no init.lua"
                    ),
                    Some(version) => {
                        let rest = path(&rest);
                        format!(
                            "module {name:?} not found: library {lib} v{version} has no {rest}.lua or {rest}/init.lua"
                        )
                    }
                }
            }
            None => {
                let file = format!(
                    "{}/{}",
                    self.folder,
                    path(&name.split('.').collect::<Vec<_>>())
                );
                format!("module {name:?} not found: no {file}.lua or {file}/init.lua in this app")
            }
        })
    }

    /// Loads module `name` into `lua` as a function (not run).
    fn load(&self, lua: &Lua, name: &str) -> Result<Function, String> {
        if let Some(problem) = self.problem(name) {
            return Err(problem);
        }
        let module = self
            .modules
            .get(name)
            .ok_or_else(|| format!("module {name:?} not found"))?;
        lua.load(&module.bytecode[..])
            .set_name(format!("@{}", module.file))
            .set_mode(ChunkMode::Binary)
            .into_function()
            .map_err(|e| format!("module {name:?} ({}) does not load: {e}", module.file))
    }
}

/// Checks a `require` name: segments of ASCII letters, digits, `_` and `-`
/// separated by single dots, optionally after one leading `@` (a shared
/// library). No `/`, no `..`, no empty segment.
pub fn validate_module_name(name: &str) -> Result<(), String> {
    let body = name.strip_prefix('@').unwrap_or(name);
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if name.len() > MODULE_NAME_BYTES_MAX || !body.split('.').all(segment_ok) {
        return Err(format!(
            "invalid module name {name:?}: use dot-separated names of letters, digits, '_' and '-' \
             (\"util.strings\" loads modules/util/strings.lua, \"@lib.sub\" a shared library's sub.lua), \
             at most {MODULE_NAME_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

/// The `require` global. Runs once per VM, before the prelude, so it holds
/// the raw `pcall` (it re-raises every error it catches, kills included).
const REQUIRE: &str = r##"
local fetch = ...
local raw_pcall, raw_error, raw_type, concat = pcall, error, type, table.concat
local loaded, loading, chain = {}, {}, {}

local function finish(name, ok, ...)
  loading[name] = nil
  chain[#chain] = nil
  if not ok then raw_error((...), 0) end
  local value = ...
  if value == nil then value = true end
  loaded[name] = value
  return value
end

require = function(name)
  if raw_type(name) ~= "string" then
    raw_error("bad argument #1 to 'require' (string expected, got " .. raw_type(name) .. ")", 2)
  end
  local value = loaded[name]
  if value ~= nil then return value end
  if loading[name] then
    local names, from = {}, #chain
    while chain[from] ~= name do from = from - 1 end
    for i = from, #chain do names[#names + 1] = chain[i] end
    names[#names + 1] = name
    raw_error("require cycle: " .. concat(names, " -> "), 2)
  end
  local chunk, problem = fetch(name)
  if not chunk then raw_error("require: " .. problem, 2) end
  loading[name] = true
  chain[#chain + 1] = name
  return finish(name, raw_pcall(chunk, name))
end
"##;

/// Installs `require` over `modules`. Call before the prelude replaces `pcall`.
pub(crate) fn install_require(lua: &Lua, modules: Arc<ModuleSet>) -> mlua::Result<()> {
    let fetch = lua.create_function(move |lua, name: mlua::LuaString| {
        let name = name.to_string_lossy();
        Ok(match modules.load(lua, &name) {
            Ok(function) => (Value::Function(function), None),
            Err(problem) => (Value::Nil, Some(problem)),
        })
    })?;
    lua.load(REQUIRE)
        .set_name("=require")
        .set_mode(ChunkMode::Text)
        .call::<()>(fetch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str, &str)]) -> Result<ModuleSet, CompileError> {
        let sources: Vec<ModuleSource> = entries
            .iter()
            .map(|(name, file, source)| ModuleSource {
                name: name.to_string(),
                file: file.to_string(),
                source: source.to_string(),
            })
            .collect();
        ModuleSet::compile("modules", BTreeMap::from([("mathx".into(), 2)]), &sources)
    }

    #[test]
    fn names_are_validated() {
        for good in ["a", "util.strings", "a-b_c.d9", "@mathx", "@mathx.sub"] {
            assert!(validate_module_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "../x", "a/b", "a..b", ".a", "a.", "@", "@.x", "@@x", "a b", "os.lua/x",
        ] {
            assert!(validate_module_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_module_name(&"a".repeat(MODULE_NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let error = set(&[("a", "modules/a.lua", "return {\n  x = = 1\n}")]).expect_err("bad");
        assert_eq!(
            (error.file.as_str(), error.line),
            ("modules/a.lua", Some(2))
        );
    }

    #[test]
    fn problems_name_what_is_missing() {
        let modules = set(&[("a", "modules/a.lua", "return 1")]).expect("compiles");
        assert_eq!(modules.problem("a"), None);
        let cases = [
            ("util.x", "no modules/util/x.lua or modules/util/x/init.lua"),
            ("@other", "library other is not pinned"),
            ("@mathx", "library mathx v2 has no init.lua"),
            (
                "@mathx.s.t",
                "library mathx v2 has no s/t.lua or s/t/init.lua",
            ),
            ("../x", "invalid module name"),
        ];
        for (name, expected) in cases {
            let problem = modules.problem(name).expect("a problem");
            assert!(problem.contains(expected), "{name}: {problem}");
        }
    }
}
