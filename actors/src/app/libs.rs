//! Shared libraries: Lua modules published once (`picloud libs publish NAME
//! DIR`) and used by any app that pins a version in its manifest
//! (`[libs] mathx = 2`, then `require("@mathx")`).
//!
//! A published version is immutable. At deploy the gateway copies the
//! pinned versions' files into the app's bundle ([`super::bundle::PinnedLib`]),
//! so a deployed version is self-contained: pruning or republishing a
//! library never changes what a deployed (or rolled back) app runs.

use std::collections::BTreeMap;

use picloud_lua_sdk::{ModuleSet, find_requires};
use serde::{Deserialize, Serialize};

use super::error::DeployError;
use super::modules::module_sources;

/// The longest library name, in bytes (the app name rules apply).
pub const LIB_NAME_BYTES_MAX: usize = super::name::APP_NAME_BYTES_MAX;
/// The most files one library version may hold.
pub const LIB_FILES_MAX: usize = 256;
/// The most bytes (of file text) one library version may hold.
pub const LIB_BYTES_MAX: usize = 1024 * 1024;
/// Versions kept per library; older ones are pruned (apps that pinned them
/// keep their embedded copy).
pub const LIB_VERSIONS_KEPT: u32 = 20;
/// The most libraries one app may pin.
pub const LIBS_PINNED_MAX: usize = 16;

/// Checks a library name: like an app name, lower-case letters, digits,
/// `-` and `_`, starting with a letter or digit.
pub fn validate_lib_name(name: &str) -> Result<(), String> {
    super::name::validate_app_name(name)
        .map_err(|e| e.to_string().replacen("app name", "library name", 1))
}

/// Checks the manifest's `[libs]` pins.
pub(crate) fn validate_pins(pins: &BTreeMap<String, u64>) -> Result<(), String> {
    if pins.len() > LIBS_PINNED_MAX {
        return Err(format!(
            "[libs] pins {} libraries; at most {LIBS_PINNED_MAX} are allowed",
            pins.len()
        ));
    }
    for (name, version) in pins {
        validate_lib_name(name).map_err(|e| format!("[libs] {e}"))?;
        if *version == 0 {
            return Err(format!("[libs] {name} = 0: versions start at 1"));
        }
    }
    Ok(())
}

/// The files of one library version: path (relative, `.lua`) → text. Sent
/// by the CLI and stored in the log as this JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibFiles {
    pub files: BTreeMap<String, String>,
}

impl LibFiles {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a map of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<LibFiles, DeployError> {
        serde_json::from_slice(bytes).map_err(|e| DeployError {
            message: format!("library files: {e}"),
        })
    }

    /// Checks a library about to be published as `name`: bounds, paths,
    /// syntax of every file, and literal requires of its own modules.
    pub fn check(&self, name: &str) -> Result<(), DeployError> {
        let error = |message: String| DeployError { message };
        validate_lib_name(name).map_err(error)?;
        if self.files.is_empty() || self.files.len() > LIB_FILES_MAX {
            return Err(error(format!(
                "a library holds 1 to {LIB_FILES_MAX} .lua files, got {}",
                self.files.len()
            )));
        }
        let bytes: usize = self.files.values().map(String::len).sum();
        if bytes > LIB_BYTES_MAX {
            return Err(error(format!(
                "library files hold {bytes} bytes; at most {LIB_BYTES_MAX} are allowed"
            )));
        }
        for path in self.files.keys() {
            if path.starts_with('/') || path.split('/').any(|part| part == ".." || part.is_empty())
            {
                return Err(error(format!("{path}: file paths must be relative")));
            }
        }
        let prefix = format!("@{name}");
        let sources = module_sources(
            &prefix,
            &prefix,
            self.files
                .iter()
                .map(|(path, text)| (path.as_str(), text.as_str())),
        )?;
        let modules = ModuleSet::compile("", BTreeMap::from([(name.to_string(), 0)]), &sources)?;
        for module in &sources {
            for call in find_requires(&module.source) {
                let own = call.name == prefix || call.name.starts_with(&format!("{prefix}."));
                if own && let Some(problem) = modules.problem(&call.name) {
                    return Err(error(format!(
                        "{}:{}: require: {problem}",
                        module.file, call.line
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(files: &[(&str, &str)]) -> LibFiles {
        LibFiles {
            files: files
                .iter()
                .map(|(path, text)| (path.to_string(), text.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_good_library_passes() {
        lib(&[
            (
                "init.lua",
                "local sub = require('@mathx.sub')\nreturn {double = sub.double}",
            ),
            ("sub.lua", "return {double = function(x) return 2 * x end}"),
        ])
        .check("mathx")
        .expect("valid");
    }

    #[test]
    fn bad_libraries_say_why() {
        let big = "x".repeat(LIB_BYTES_MAX + 1);
        let cases: Vec<(&str, LibFiles, &str)> = vec![
            ("Math", lib(&[("init.lua", "")]), "library name \"Math\""),
            ("m", lib(&[]), "1 to 256 .lua files"),
            ("m", lib(&[("init.lua", &big)]), "at most 1048576"),
            (
                "m",
                lib(&[("README.md", "# m")]),
                "@m/README.md: a module must be a .lua file",
            ),
            ("m", lib(&[("../x.lua", "")]), "must be relative"),
            ("m", lib(&[("init.lua", "return {\n= }")]), "@m/init.lua:2:"),
            (
                "m",
                lib(&[("init.lua", "\nreturn require('@m.nope')")]),
                "@m/init.lua:2: require: module \"@m.nope\" not found",
            ),
        ];
        for (name, files, expected) in cases {
            let message = files.check(name).expect_err(expected).message;
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn pins_are_checked() {
        assert!(validate_pins(&BTreeMap::from([("mathx".into(), 2)])).is_ok());
        assert!(validate_pins(&BTreeMap::from([("mathx".into(), 0)])).is_err());
        assert!(validate_pins(&BTreeMap::from([("Bad".into(), 1)])).is_err());
        let many: BTreeMap<String, u64> = (0..=LIBS_PINNED_MAX)
            .map(|i| (format!("l{i}"), 1))
            .collect();
        assert!(validate_pins(&many).is_err());
    }
}
