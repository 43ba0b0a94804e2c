//! `picloud.toml`: what an app declares.

use serde::Deserialize;

/// The manifest file's name inside an app folder and a deploy bundle.
pub const MANIFEST_FILE: &str = "picloud.toml";

/// The longest app name; names are URL path segments and storage prefixes.
pub const APP_NAME_BYTES_MAX: usize = 63;

/// The most routes one app may declare.
pub const ROUTES_MAX: usize = 256;

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub routes: Vec<RouteSpec>,
}

/// One `[[route]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// An HTTP method in upper case, or `*` for any.
    pub method: String,
    /// `/greet/:name`, `/files/*rest`.
    pub path: String,
    /// The script file (relative to the app folder) whose handler serves the route.
    pub script: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default, rename = "route")]
    routes: Vec<RouteSpec>,
}

/// Why a manifest was rejected; the message names the file and, when known, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{MANIFEST_FILE}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    pub line: Option<usize>,
    pub message: String,
}

fn manifest_error(message: impl Into<String>) -> ManifestError {
    ManifestError {
        line: None,
        message: message.into(),
    }
}

/// Checks an app name: lower-case letters, digits, `-` and `_`, starting with a
/// letter or digit, at most [`APP_NAME_BYTES_MAX`] bytes. `_` alone is reserved
/// (the `/_/` system prefix).
pub fn validate_app_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > APP_NAME_BYTES_MAX {
        return Err(format!(
            "app name must be 1 to {APP_NAME_BYTES_MAX} characters, got {}",
            name.len()
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok {
        return Err(format!(
            "app name {name:?} may hold only a-z, 0-9, '-' and '_', and must start with a letter or digit"
        ));
    }
    Ok(())
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*",
];

impl Manifest {
    /// Parses and validates the manifest text. Route paths are checked by
    /// [`crate::app::routes::RouteTable::compile`] as well.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            ManifestError {
                line,
                message: e.message().to_string(),
            }
        })?;
        validate_app_name(&raw.name).map_err(manifest_error)?;
        if raw.routes.len() > ROUTES_MAX {
            return Err(manifest_error(format!(
                "{} routes declared; at most {ROUTES_MAX} are allowed",
                raw.routes.len()
            )));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (index, mut route) in raw.routes.into_iter().enumerate() {
            route.method = route.method.to_ascii_uppercase();
            if !METHODS.contains(&route.method.as_str()) {
                return Err(manifest_error(format!(
                    "route {}: method {:?} is not one of {}",
                    index + 1,
                    route.method,
                    METHODS.join(", ")
                )));
            }
            if route.script.is_empty() || !route.script.ends_with(".lua") {
                return Err(manifest_error(format!(
                    "route {}: script {:?} must name a .lua file",
                    index + 1,
                    route.script
                )));
            }
            routes.push(route);
        }
        Ok(Manifest {
            name: raw.name,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hello_manifest() {
        let manifest = Manifest::parse(
            "name = \"hello\"\n[[route]]\nmethod = \"get\"\npath = \"/greet/:name\"\nscript = \"greet.lua\"\n",
        )
        .expect("valid manifest");
        assert_eq!(manifest.name, "hello");
        assert_eq!(manifest.routes[0].method, "GET");
    }

    #[test]
    fn rejections_name_the_problem() {
        let cases = [
            ("name = \"Hello\"", "may hold only"),
            ("name = \"_\"", "must start with"),
            (
                "name = \"x\"\n[[route]]\nmethod=\"FETCH\"\npath=\"/\"\nscript=\"a.lua\"",
                "FETCH",
            ),
            (
                "name = \"x\"\n[[route]]\nmethod=\"GET\"\npath=\"/\"\nscript=\"a.py\"",
                ".lua",
            ),
            ("name = \"x\"\nbogus = 1", "unknown field"),
            ("name = ", "picloud.toml:1"),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }
}
