//! `GET /_/api/v1/openapi.json`: the admin API as an OpenAPI 3.1 document.
//!
//! The paths, methods, parameters and request bodies come from each
//! handler's `#[utoipa::path]` annotation and its request types
//! (`ToSchema`, `IntoParams`). What is the same for every route is added
//! once here, from the tables that already decide it, so it cannot drift:
//! the security of each operation from its row of the scope matrix
//! (`routes.rs`), and the error shape `{"error":{"code","message"}}` with
//! every code of the registry (`picloud_lua_sdk::Code`) and its status.
//!
//! The document is built on the first request and kept (a `OnceLock`): it
//! depends only on the binary.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use picloud_lua_sdk::Code;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi};

use super::routes::{Mount, Need, ROUTES};
use super::{
    apps, backup, cluster, deploys, docs, files, keys, kv, libs, logs, mail, members, metrics,
    operators, realtime, secrets, triggers, users,
};
use crate::gateway::ApiError;

/// The prefix the admin router is mounted under.
pub const ADMIN_PREFIX: &str = "/_/api/v1";

/// The name of the security scheme every non-public operation requires.
const BEARER: &str = "bearer";

/// `GET /openapi.json`: the document, built once.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json")),
)]
pub(super) async fn openapi() -> Result<Response, ApiError> {
    static JSON: OnceLock<Result<String, serde_json::Error>> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json());
    match json {
        Ok(json) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response())
        }
        Err(error) => Err(ApiError::internal(format!(
            "the OpenAPI document does not serialize: {error}"
        ))),
    }
}

/// The routes of `admin::router()`, relative to [`ADMIN_PREFIX`].
#[derive(OpenApi)]
#[openapi(paths(
    openapi,
    backup::backup,
    operators::login,
    operators::logout,
    operators::setup,
    operators::list,
    operators::add,
    operators::remove,
    members::list,
    members::set,
    members::remove,
    keys::whoami,
    keys::list_keys,
    keys::create_key,
    keys::revoke_key,
    apps::list_apps,
    apps::create_app,
    apps::get_app,
    apps::delete_app,
    deploys::list_deploys,
    deploys::deploy,
    deploys::rollback,
    kv::kv_list,
    kv::kv_get,
    kv::kv_put,
    kv::kv_delete,
    files::list,
    files::sign,
    docs::insert,
    docs::find,
    docs::count,
    docs::get_doc,
    docs::delete,
    docs::indexes,
    logs::logs,
    realtime::rotate_key,
    triggers::dead_letters_list,
    triggers::dead_letter_show,
    triggers::dead_letter_delete,
    triggers::dead_letter_retry,
    mail::list,
    mail::show,
    users::list,
    users::create,
    users::show,
    users::delete,
    users::roles,
    users::invite,
    secrets::list,
    secrets::set,
    secrets::delete,
    secrets::rotate_key,
    libs::list,
    libs::publish,
    cluster::cluster_status,
    cluster::cluster_token,
    cluster::remove_node,
))]
struct AdminApi;

/// The whole document: the admin router under its prefix and the admin
/// routes mounted outside it (the streamed file route, `/_/metrics`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PiCloud admin API",
        description = "The admin API of a PiCloud node. Every node serves it; writes are forwarded to the Raft leader. Errors are `{\"error\":{\"code\",\"message\"}}` with a code of the registry (docs/errors.md).",
    ),
    paths(files::file, metrics::metrics),
    nest((path = "/_/api/v1", api = AdminApi)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// Builds the document (once per process: see [`openapi`]).
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// `(METHOD, path)` as the router spells it, in OpenAPI's path syntax:
/// absolute, and a wildcard `{*key}` as a plain parameter `{key}`.
pub fn document_path(route: &super::routes::Route) -> String {
    let path = match route.mount {
        Mount::Admin => format!("{ADMIN_PREFIX}{}", route.path),
        Mount::Outside => route.path.to_string(),
    };
    path.replace("{*", "{")
}

/// Adds what every operation shares: its security from the scope matrix,
/// a unique `operationId`, and the error responses.
struct Shared;

impl Modify for Shared {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`picloud keys create`) or an operator session token (`pcs_…`, from `POST /_/api/v1/login`).",
                    ))
                    .build(),
            ),
        );
        components
            .schemas
            .insert("Error".to_string(), error_schema().into());
        components.responses.insert(
            "Error".to_string(),
            ResponseBuilder::new()
                .description(
                    "An error: the status is the registry's for the code (see the `Error` schema).",
                )
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build()
                .into(),
        );
        let needs: BTreeMap<(String, String), Need> = ROUTES
            .iter()
            .map(|route| ((route.method.to_string(), document_path(route)), route.need))
            .collect();
        for (path, item) in document.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                let need = needs
                    .get(&(method.to_string(), path.clone()))
                    .copied()
                    .unwrap_or(Need::Admin);
                shape(operation, method, path, need);
            }
        }
    }
}

/// Every operation of a path item with its method's name.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("HEAD", &mut item.head),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("PATCH", &mut item.patch),
        ("OPTIONS", &mut item.options),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|operation| (method, operation)))
}

fn shape(operation: &mut Operation, method: &str, path: &str, need: Need) {
    // Handlers in different resources share names (`list`, `delete`) and one
    // handler may serve several methods: derive the id from the route.
    let slug: String = path
        .trim_start_matches(ADMIN_PREFIX)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let slug = slug
        .split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    operation.operation_id = Some(format!("{}_{slug}", method.to_ascii_lowercase()));
    operation.security = if need == Need::Public {
        None
    } else {
        Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])])
    };
    let needs = match need {
        Need::Public => "none (public)",
        Need::Caller => "any valid key or operator session",
        Need::Read => "read access to the app (`read:<app>` key, a viewer)",
        Need::Write => "write access to the app (`deploy:<app>` key, a developer)",
        Need::Owner => "the app's owner (or admin)",
        Need::Admin => "admin (an `admin` key or an admin operator)",
    };
    let description = operation.description.take().unwrap_or_default();
    operation.description = Some(
        format!("{description}\n\nNeeds: {needs}.")
            .trim_start()
            .to_string(),
    );
    operation.responses.responses.insert(
        "default".to_string(),
        Ref::from_response_name("Error").into(),
    );
}

/// `{"error":{"code","message"}}`, the code one of the registry's.
fn error_schema() -> utoipa::openapi::schema::Schema {
    let mut codes = String::from("The registry's codes (status: code — meaning):\n");
    for code in Code::ALL {
        codes.push_str(&format!(
            "\n- {}: `{}` — {}",
            code.status(),
            code.as_str(),
            code.meaning()
        ));
    }
    let inner = ObjectBuilder::new()
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(Code::ALL.iter().map(|code| code.as_str())))
                .description(Some(codes)),
        )
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("What went wrong, for a person.")),
        )
        .required("message");
    ObjectBuilder::new()
        .property("error", inner)
        .required("error")
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn document_json() -> Value {
        serde_json::to_value(document()).expect("the document serializes")
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let json = document_json();
        let mut pairs = BTreeSet::new();
        for (path, item) in json["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if [
                    "get", "head", "put", "post", "delete", "patch", "options", "trace",
                ]
                .contains(&method.as_str())
                {
                    pairs.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        pairs
    }

    /// Every route of the scope matrix (which `mod.rs`'s test holds equal
    /// to the router) is in the document with the same method, and every
    /// operation of the document is a route.
    #[test]
    fn the_document_and_the_routes_agree() {
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|route| (route.method.to_string(), document_path(route)))
            .collect();
        let documented = documented();
        let missing: Vec<_> = routes.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes missing from the document: {missing:?}; documented but not routes: {extra:?}"
        );
    }

    /// The router itself (read from its source) against the document, for
    /// the admin routes: the same check without the matrix in between.
    #[test]
    fn the_document_covers_the_router() {
        let documented = documented();
        for (method, path) in super::super::tests::mounted() {
            let path = format!("{ADMIN_PREFIX}{}", path.replace("{*", "{"));
            assert!(
                documented.contains(&(method.clone(), path.clone())),
                "{method} {path} is mounted but not documented"
            );
        }
    }

    #[test]
    fn operations_have_unique_ids_security_and_the_error_shape() {
        let json = document_json();
        assert!(
            json["openapi"]
                .as_str()
                .expect("openapi")
                .starts_with("3.1")
        );
        let mut ids = BTreeSet::new();
        for (path, item) in json["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let id = operation["operationId"].as_str().expect("an operationId");
                // Every `{name}` of the path is a declared path parameter.
                for name in path
                    .split('{')
                    .skip(1)
                    .filter_map(|rest| rest.split('}').next())
                {
                    let declared = operation["parameters"].as_array().is_some_and(|all| {
                        all.iter()
                            .any(|parameter| parameter["name"] == name && parameter["in"] == "path")
                    });
                    assert!(declared, "{method} {path}: parameter {name}");
                }
                assert!(ids.insert(id.to_string()), "{id} twice");
                assert_eq!(
                    operation["responses"]["default"]["$ref"], "#/components/responses/Error",
                    "{method} {path}"
                );
                let public = path.ends_with("/login")
                    || path.ends_with("/admins/setup")
                    || path.ends_with("/openapi.json");
                assert_eq!(
                    operation.get("security").is_none(),
                    public,
                    "{method} {path}: security"
                );
            }
        }
        let codes = json["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"]
            .as_array()
            .expect("the code enum")
            .len();
        assert_eq!(codes, Code::ALL.len());
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // A typed request body and query parameters made it in.
        assert!(json["components"]["schemas"]["CreateApp"].is_object());
        let kv_list = &json["paths"]["/_/api/v1/apps/{app}/kv"]["get"]["parameters"];
        let names: Vec<&str> = kv_list
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|parameter| parameter["name"].as_str())
            .collect();
        assert_eq!(names, ["app", "prefix", "limit", "cursor", "consistency"]);
    }
}
