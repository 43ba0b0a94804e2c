//! What an app is made of: its manifest, routes and deploy bundles.

pub mod bundle;
pub mod libs;
pub mod manifest;
pub mod modules;
pub mod routes;

pub use bundle::{Bundle, CheckedBundle, DeployError, PinnedLib};
pub use manifest::{MANIFEST_FILE, Manifest, RouteSpec, validate_app_name};
pub use routes::{RouteMatch, RouteMiss, RouteTable};
