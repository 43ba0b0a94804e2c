//! What an app is made of: its manifest, routes and deploy bundles.

//!
//! # Layout
//! - `name.rs`: [`AppName`], checked once where a name enters
//! - `manifest.rs`: `picloud.toml`
//! - `domains.rs`: `domains`, checked, and the node's domain → app map
//! - `routes.rs`: the route table a manifest compiles to
//! - `bundle.rs`: deploy bundles and their checks
//! - `modules.rs`: the modules folder and the import graph
//! - `libs.rs`: shared libraries and `[libs]` pins
//! - `topics.rs`: `[[topic]]` declarations and the topic name rule
//! - `public.rs`: `public/`, the static files served when no route matches
//! - `cors.rs`: `[cors]` and [`cors::answer`], the pure decision for every
//!   cross-origin request (preflights and actual responses)
//! - `error.rs`: [`DeployError`], shared by the deploy checks

pub mod bundle;
pub mod cors;
pub mod domains;
pub mod error;
pub mod libs;
pub mod manifest;
pub mod modules;
pub mod name;
pub mod public;
pub mod routes;
pub mod topics;

pub use bundle::{Bundle, CheckedBundle, PinnedLib};
pub use error::DeployError;
pub use manifest::{MANIFEST_FILE, Manifest, RouteSpec};
pub use name::{APP_NAME_BYTES_MAX, AppName, AppNameError, validate_app_name};
pub use public::{PublicFile, PublicFiles};
pub use routes::{RouteMatch, RouteMiss, RouteTable};
pub use topics::{TopicAuth, TopicSpec, find_topic, validate_topic_name};
