//! App names: checked once, where a name enters (a deploy, a create, a
//! request path), and carried as [`AppName`] from there.

use std::fmt;
use std::ops::Deref;

/// The longest app name; names are URL path segments and storage prefixes.
pub const APP_NAME_BYTES_MAX: usize = 63;

/// Why a text is not an app name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppNameError {
    #[error("app name must be 1 to {APP_NAME_BYTES_MAX} characters, got {len}")]
    Length { len: usize },
    #[error(
        "app name {name:?} may hold only a-z, 0-9, '-' and '_', and must start with a letter or digit"
    )]
    Characters { name: String },
}

/// A checked app name (see [`validate_app_name`] for the rules). It derefs
/// to `str`, so it goes wherever a name is read; the log's commands keep
/// `String` fields (their encoding is fixed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    /// Checks `name` and wraps it.
    pub fn parse(name: impl Into<String>) -> Result<AppName, AppNameError> {
        let name = name.into();
        validate_app_name(&name)?;
        Ok(AppName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for AppName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an app name: lower-case letters, digits, `-` and `_`, starting with a
/// letter or digit, at most [`APP_NAME_BYTES_MAX`] bytes. `_` alone is reserved
/// (the `/_/` system prefix).
pub fn validate_app_name(name: &str) -> Result<(), AppNameError> {
    if name.is_empty() || name.len() > APP_NAME_BYTES_MAX {
        return Err(AppNameError::Length { len: name.len() });
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok {
        return Err(AppNameError::Characters {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_with_the_same_messages() {
        assert_eq!(AppName::parse("shop-2").expect("valid").as_str(), "shop-2");
        assert_eq!(
            AppName::parse("").expect_err("empty").to_string(),
            "app name must be 1 to 63 characters, got 0"
        );
        assert!(AppName::parse("a".repeat(APP_NAME_BYTES_MAX)).is_ok());
        assert!(AppName::parse("a".repeat(APP_NAME_BYTES_MAX + 1)).is_err());
        for bad in ["_", "-a", "Shop", "a/b", "a b", "ä"] {
            assert!(
                matches!(AppName::parse(bad), Err(AppNameError::Characters { .. })),
                "{bad}"
            );
        }
    }
}
