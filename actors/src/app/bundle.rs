//! Deploy bundles: the files of one app version, and the checks a deploy must pass.
//!
//! A bundle travels from the CLI to the gateway as JSON (`{"files": {"path": "text"}}`)
//! and is stored in the log as the same JSON bytes, so storage never needs to
//! understand it.

use std::collections::BTreeMap;
use std::sync::Arc;

use picloud_lua_sdk::{CompileError, Host, SandboxLimits, ScriptSource, Vm};
use serde::{Deserialize, Serialize};

use super::manifest::{MANIFEST_FILE, Manifest};
use super::routes::RouteTable;

/// The most files one bundle may hold.
pub const BUNDLE_FILES_MAX: usize = 512;

/// The files of one app version: relative path → UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Bundle {
    pub files: BTreeMap<String, String>,
}

/// A deploy that cannot be accepted. The message is what the user sees
/// (`greet.lua:3: unexpected symbol near '='`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeployError {
    pub message: String,
}

impl From<CompileError> for DeployError {
    fn from(error: CompileError) -> Self {
        DeployError {
            message: error.to_string(),
        }
    }
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
    pub scripts: Vec<ScriptSource>,
}

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
        let mut scripts = Vec::new();
        for (path, source) in &self.files {
            if path.ends_with(".lua") {
                picloud_lua_sdk::check_syntax(path, source)?;
                scripts.push(ScriptSource {
                    name: path.clone(),
                    source: source.clone(),
                });
            }
        }
        Ok(CheckedBundle {
            manifest,
            routes,
            scripts,
        })
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
        Vm::new(app, &self.scripts, host, limits)
            .map(|_| ())
            .map_err(DeployError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle {
            files: files
                .iter()
                .map(|(path, text)| (path.to_string(), text.to_string()))
                .collect(),
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
