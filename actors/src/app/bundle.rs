//! Deploy bundles: the files of one app version, and the checks a deploy must pass.
//!
//! A bundle travels from the CLI to the gateway as JSON (`{"files": {"path": "text"},
//! "public": {"path below public/": "base64"}}`) and is stored in the log as the same JSON bytes, so storage never needs to
//! understand it. The gateway adds to what the CLI sent: the files of every
//! pinned shared library (`libs`) and the import graph (`imports`), so a
//! stored version is self-contained (see `libs.rs`, `modules.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use picloud_lua_sdk::{Host, ModuleSet, SandboxLimits, ScriptSource, Vm};
use serde::{Deserialize, Serialize};

use super::error::DeployError;
use super::manifest::{MANIFEST_FILE, Manifest};
use super::public::PublicFiles;
use super::routes::RouteTable;

/// The most files one bundle may hold.
pub const BUNDLE_FILES_MAX: usize = 512;

/// The files of one app version: relative path → UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Bundle {
    pub files: BTreeMap<String, String>,
    /// The pinned shared libraries' files, filled in by the gateway at
    /// deploy (whatever a client sends here is replaced).
    #[serde(default)]
    pub libs: BTreeMap<String, PinnedLib>,
    /// The import graph found at deploy: file → modules it requires by a
    /// literal name (recorded for `picloud deploys`; replaced like `libs`).
    #[serde(default)]
    pub imports: BTreeMap<String, Vec<String>>,
    /// The static files under `public/`, by path below it, as base64 (the
    /// one binary-safe part of a bundle; see `public.rs`). Left out of the
    /// JSON when empty, so bundles without static files encode as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public: BTreeMap<String, String>,
}

/// One pinned library version inside a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PinnedLib {
    pub version: u64,
    pub files: BTreeMap<String, String>,
}

fn deploy_error(message: impl Into<String>) -> DeployError {
    DeployError {
        message: message.into(),
    }
}

/// A bundle that passed every check, ready to serve.
#[derive(Debug, Clone)]
pub struct CheckedBundle {
    pub manifest: Manifest,
    pub routes: RouteTable,
    /// Handler scripts (every `.lua` file outside the modules folder).
    pub scripts: Vec<ScriptSource>,
    /// Every module the app can `require`, compiled.
    pub modules: Arc<ModuleSet>,
    /// File → modules it requires by a literal name.
    pub imports: ImportGraph,
    /// The static files of `public/`, decoded.
    pub public: Arc<PublicFiles>,
}

/// File → the modules it requires by a literal name, in first-use order.
pub type ImportGraph = BTreeMap<String, Vec<String>>;

impl Bundle {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a map of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Bundle, DeployError> {
        serde_json::from_slice(bytes).map_err(|e| deploy_error(format!("bundle: {e}")))
    }

    /// Parses the manifest, compiles the routes and checks every script's syntax.
    /// Does not run any script (see [`Bundle::check_loads`]).
    pub fn check(&self) -> Result<CheckedBundle, DeployError> {
        if self.files.len() > BUNDLE_FILES_MAX {
            return Err(deploy_error(format!(
                "bundle holds {} files; at most {BUNDLE_FILES_MAX} are allowed",
                self.files.len()
            )));
        }
        for path in self.files.keys() {
            if path.starts_with('/') || path.split('/').any(|part| part == ".." || part.is_empty())
            {
                return Err(deploy_error(format!("{path}: file paths must be relative")));
            }
        }
        let manifest_text = self
            .files
            .get(MANIFEST_FILE)
            .ok_or_else(|| deploy_error(format!("{MANIFEST_FILE}: missing")))?;
        let manifest = Manifest::parse(manifest_text).map_err(|e| deploy_error(e.to_string()))?;
        let routes = RouteTable::compile(&manifest.routes)
            .map_err(|e| deploy_error(format!("{MANIFEST_FILE}: {e}")))?;
        for route in &manifest.routes {
            if !self.files.contains_key(&route.script) {
                return Err(deploy_error(format!(
                    "{}: script not found (named by route {} {})",
                    route.script, route.method, route.path
                )));
            }
        }
        for trigger in &manifest.triggers {
            if !self.files.contains_key(&trigger.script) {
                return Err(deploy_error(format!(
                    "{}: script not found (named by trigger {:?})",
                    trigger.script, trigger.name
                )));
            }
        }
        let folder = format!("{}/", manifest.modules_folder);
        let handlers = manifest.routes.iter().map(|route| &route.script);
        if let Some(script) = handlers
            .chain(manifest.triggers.iter().map(|trigger| &trigger.script))
            .find(|script| script.starts_with(&folder))
        {
            return Err(deploy_error(format!(
                "{script}: is a module (under {folder}), not a handler script"
            )));
        }
        let mut scripts = Vec::new();
        let mut module_files = Vec::new();
        for (path, source) in &self.files {
            match path.strip_prefix(&folder) {
                Some(relative) if path.ends_with(".lua") => {
                    module_files.push((relative, source.as_str()));
                }
                None if path.ends_with(".lua") => {
                    picloud_lua_sdk::check_syntax(path, source)?;
                    scripts.push(ScriptSource {
                        name: path.clone(),
                        source: source.clone(),
                    });
                }
                _ => {}
            }
        }
        let (modules, imports) = self.check_modules(&manifest, module_files, &scripts)?;
        let public = PublicFiles::decode(&self.public).map_err(deploy_error)?;
        Ok(CheckedBundle {
            manifest,
            routes,
            scripts,
            modules,
            imports,
            public: Arc::new(public),
        })
    }

    /// Compiles the app's modules and its pinned libraries' modules, and
    /// builds the import graph (see `modules.rs`).
    fn check_modules(
        &self,
        manifest: &Manifest,
        module_files: Vec<(&str, &str)>,
        scripts: &[ScriptSource],
    ) -> Result<(Arc<ModuleSet>, ImportGraph), DeployError> {
        for (name, version) in &manifest.libs {
            if self.libs.get(name).map(|lib| lib.version) != Some(*version) {
                return Err(deploy_error(format!(
                    "{MANIFEST_FILE}: library {name} v{version} is not in the bundle"
                )));
            }
        }
        if let Some(extra) = self
            .libs
            .keys()
            .find(|name| !manifest.libs.contains_key(*name))
        {
            return Err(deploy_error(format!(
                "bundle: library {extra} is not pinned in {MANIFEST_FILE}"
            )));
        }
        let mut sources =
            super::modules::module_sources("", &manifest.modules_folder, module_files)?;
        for (name, lib) in &self.libs {
            let prefix = format!("@{name}");
            sources.extend(super::modules::module_sources(
                &prefix,
                &prefix,
                lib.files
                    .iter()
                    .map(|(path, text)| (path.as_str(), text.as_str())),
            )?);
        }
        let modules =
            ModuleSet::compile(&manifest.modules_folder, manifest.libs.clone(), &sources)?;
        let importers: Vec<super::modules::Importer<'_>> = scripts
            .iter()
            .map(|script| super::modules::Importer {
                file: &script.name,
                source: &script.source,
                module: None,
            })
            .chain(sources.iter().map(|module| super::modules::Importer {
                file: &module.file,
                source: &module.source,
                module: Some(&module.name),
            }))
            .collect();
        let imports = super::modules::import_graph(&importers, &modules)?;
        Ok((Arc::new(modules), imports))
    }
}

impl CheckedBundle {
    /// Runs every script's top level once in a throwaway sandbox, so a script
    /// that fails at load or does not return a handler is rejected at deploy
    /// time rather than on the first request.
    pub fn check_loads(
        &self,
        app: &str,
        host: Arc<dyn Host>,
        limits: SandboxLimits,
    ) -> Result<(), DeployError> {
        Vm::with_modules(app, &self.scripts, self.modules.clone(), host, limits)
            .map(|_| ())
            .map_err(DeployError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle {
            files: files
                .iter()
                .map(|(path, text)| (path.to_string(), text.to_string()))
                .collect(),
            ..Bundle::default()
        }
    }

    const MANIFEST: &str = "name = \"hello\"\n[[route]]\nmethod = \"GET\"\npath = \"/greet/:name\"\nscript = \"greet.lua\"\n";

    #[test]
    fn a_good_bundle_passes_and_round_trips() {
        let good = bundle(&[
            (MANIFEST_FILE, MANIFEST),
            ("greet.lua", "return function(req) return 'hi' end"),
        ]);
        let checked = good.check().expect("valid");
        assert_eq!(checked.scripts.len(), 1);
        assert_eq!(Bundle::decode(&good.encode()).expect("decodes"), good);
    }

    /// Bundles stored before `public/` existed decode unchanged, and a
    /// bundle without static files encodes as they did.
    #[test]
    fn bundles_without_public_files_keep_their_bytes() {
        let old = br#"{"files":{"picloud.toml":"name = \"x\""},"libs":{},"imports":{}}"#;
        let decoded = Bundle::decode(old).expect("an older bundle decodes");
        assert!(decoded.public.is_empty());
        assert_eq!(decoded.encode(), old.to_vec());
    }

    #[test]
    fn bad_bundles_name_file_and_line() {
        let cases: Vec<(Bundle, &str)> = vec![
            (
                bundle(&[("greet.lua", "return 1")]),
                "picloud.toml: missing",
            ),
            (
                bundle(&[(MANIFEST_FILE, MANIFEST)]),
                "greet.lua: script not found",
            ),
            (
                bundle(&[
                    (MANIFEST_FILE, MANIFEST),
                    ("greet.lua", "return function(req)\n  x = = 1\nend"),
                ]),
                "greet.lua:2:",
            ),
            (
                bundle(&[
                    (MANIFEST_FILE, MANIFEST),
                    ("greet.lua", "return function() end"),
                    ("../x.lua", ""),
                ]),
                "must be relative",
            ),
        ];
        for (bad, expected) in cases {
            let message = bad.check().expect_err(expected).message;
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn trigger_scripts_must_exist() {
        let manifest = "name = \"shop\"\n[[trigger]]\nkind = \"kv\"\nmatch = \"orders/*\"\nscript = \"on_order.lua\"\n";
        let missing = bundle(&[("picloud.toml", manifest)])
            .check()
            .expect_err("missing script");
        assert!(
            missing
                .to_string()
                .contains("on_order.lua: script not found (named by trigger \"on_order\")"),
            "{missing}"
        );
        let checked = bundle(&[
            ("picloud.toml", manifest),
            ("on_order.lua", "return function(event, ctx) end"),
        ])
        .check()
        .expect("valid");
        assert_eq!(checked.manifest.trigger_set().triggers.len(), 1);
    }
}

#[cfg(test)]
mod module_tests {
    use super::*;

    const MANIFEST: &str = "name = \"m\"\n[libs]\nmathx = 2\n[[route]]\nmethod = \"GET\"\npath = \"/\"\nscript = \"main.lua\"\n";

    fn with_lib(files: &[(&str, &str)], lib_version: u64) -> Bundle {
        let mut bundle = super::tests::bundle(files);
        let init = BTreeMap::from([("init.lua".to_string(), "return {two = 2}".to_string())]);
        bundle.libs = BTreeMap::from([(
            "mathx".to_string(),
            PinnedLib {
                version: lib_version,
                files: init,
            },
        )]);
        bundle
    }

    #[test]
    fn modules_are_not_handlers_and_imports_are_recorded() {
        let checked = with_lib(
            &[
                (MANIFEST_FILE, MANIFEST),
                ("main.lua", "local s = require('util.strings')\nlocal m = require('@mathx')\nreturn function() return s end"),
                ("modules/util/strings.lua", "return 'not a function'"),
            ],
            2,
        )
        .check()
        .expect("valid");
        assert_eq!(
            checked
                .scripts
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["main.lua"]
        );
        assert!(checked.modules.contains("util.strings") && checked.modules.contains("@mathx"));
        assert_eq!(
            checked.imports.get("main.lua"),
            Some(&vec!["util.strings".to_string(), "@mathx".to_string()])
        );
    }

    #[test]
    fn bad_modules_reject_the_deploy() {
        let route_to_module = MANIFEST.replace("main.lua", "modules/main.lua");
        let cases: Vec<(Bundle, &str)> = vec![
            (
                with_lib(
                    &[
                        (MANIFEST_FILE, MANIFEST),
                        ("main.lua", "return function() end"),
                        ("modules/x.lua", "return {\n\n = }"),
                    ],
                    2,
                ),
                "modules/x.lua:3:",
            ),
            (
                with_lib(
                    &[
                        (MANIFEST_FILE, MANIFEST),
                        ("main.lua", "return function() end"),
                    ],
                    1,
                ),
                "library mathx v2 is not in the bundle",
            ),
            (
                with_lib(
                    &[
                        (MANIFEST_FILE, &route_to_module),
                        ("modules/main.lua", "return function() end"),
                    ],
                    2,
                ),
                "modules/main.lua: is a module (under modules/), not a handler script",
            ),
            (
                with_lib(
                    &[
                        (MANIFEST_FILE, MANIFEST),
                        (
                            "main.lua",
                            "local x = require('@other')\nreturn function() end",
                        ),
                    ],
                    2,
                ),
                "main.lua:1: require: module \"@other\" not found: library other is not pinned",
            ),
        ];
        for (bad, expected) in cases {
            let message = bad.check().expect_err(expected).message;
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }
}
