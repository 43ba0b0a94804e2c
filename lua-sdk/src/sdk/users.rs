//! `users.create/get/find/update/delete/list/set_password/login/verify/
//! logout/logout_all/add_role/remove_role/has_role/invite`: argument checking and
//! value conversion around `Host::users`. The node checks emails,
//! passwords and roles; this layer checks shapes.
//!
//! `users.login` answers `nil, "invalid_credentials"` for a wrong email or
//! password (an expected outcome a script branches on), and raises every
//! other error like the other services.

use std::sync::Arc;

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Value};

use super::docs::{object_arg, text_arg};
use super::kv::{describe, host_error, integer_arg, options_arg, value_arg};
use crate::codes::Code;
use crate::convert::json_to_lua;
use crate::host::{Host, UserPatchArgs, UsersCall};
use crate::location::script_error;

type Json = serde_json::Value;

type Parse = fn(&Lua, Value, Value) -> mlua::Result<UsersCall>;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let users = lua.create_table()?;
    let functions: [(&str, Parse); 15] = [
        ("create", |lua, fields, _| create_args(lua, fields)),
        ("get", |lua, id, _| {
            Ok(UsersCall::Get {
                id: text_arg(lua, "users.get", "id", id)?,
            })
        }),
        ("find", |lua, query, _| {
            let Some(query) = options_arg(lua, "users.find", query)? else {
                return Err(script_error(lua, "users.find: expects {email = ...}"));
            };
            known_fields(lua, "users.find", &query, &["email"])?;
            Ok(UsersCall::Find {
                email: text_arg(lua, "users.find", "email", query.raw_get("email")?)?,
            })
        }),
        ("update", |lua, id, patch| {
            Ok(UsersCall::Update {
                id: text_arg(lua, "users.update", "id", id)?,
                patch: patch_args(lua, patch)?,
            })
        }),
        ("delete", |lua, id, _| {
            Ok(UsersCall::Delete {
                id: text_arg(lua, "users.delete", "id", id)?,
            })
        }),
        ("list", |lua, options, _| list_args(lua, options)),
        ("set_password", |lua, id, password| {
            Ok(UsersCall::SetPassword {
                id: text_arg(lua, "users.set_password", "id", id)?,
                password: text_arg(lua, "users.set_password", "password", password)?,
            })
        }),
        ("login", |lua, email, password| {
            Ok(UsersCall::Login {
                email: text_arg(lua, "users.login", "email", email)?,
                password: text_arg(lua, "users.login", "password", password)?,
            })
        }),
        ("verify", |lua, token, _| {
            Ok(UsersCall::Verify {
                token: text_arg(lua, "users.verify", "token", token)?,
            })
        }),
        ("logout", |lua, token, _| {
            Ok(UsersCall::Logout {
                token: text_arg(lua, "users.logout", "token", token)?,
            })
        }),
        ("logout_all", |lua, id, _| {
            Ok(UsersCall::LogoutAll {
                id: text_arg(lua, "users.logout_all", "id", id)?,
            })
        }),
        ("add_role", |lua, id, role| {
            Ok(UsersCall::AddRole {
                id: text_arg(lua, "users.add_role", "id", id)?,
                role: text_arg(lua, "users.add_role", "role", role)?,
            })
        }),
        ("remove_role", |lua, id, role| {
            Ok(UsersCall::RemoveRole {
                id: text_arg(lua, "users.remove_role", "id", id)?,
                role: text_arg(lua, "users.remove_role", "role", role)?,
            })
        }),
        ("has_role", |lua, id, role| {
            Ok(UsersCall::HasRole {
                id: text_arg(lua, "users.has_role", "id", id)?,
                role: text_arg(lua, "users.has_role", "role", role)?,
            })
        }),
        ("invite", |lua, fields, _| invite_args(lua, fields)),
    ];
    for (name, parse) in functions {
        let (a, h) = (app.clone(), host.clone());
        users.raw_set(
            name,
            lua.create_async_function(move |lua, (x, y): (Value, Value)| {
                let (app, host) = (a.clone(), h.clone());
                let call = parse(&lua, x, y);
                async move {
                    let call = call?;
                    let is_login = matches!(call, UsersCall::Login { .. });
                    match host.users(&app, call).await {
                        // An absent user or session is nil, not json.null.
                        Ok(Json::Null) => Ok(MultiValue::from_vec(vec![Value::Nil])),
                        Ok(other) => json_to_lua(&lua, &other)?.into_lua_multi(&lua),
                        Err(error) if is_login && error.code == Code::InvalidCredentials => {
                            (Value::Nil, error.code.as_str()).into_lua_multi(&lua)
                        }
                        Err(error) => Err(host_error(error)),
                    }
                }
            })?,
        )?;
    }
    lua.globals().raw_set("users", users)
}

/// Fails on a field outside `known` (a typo should not be ignored).
fn known_fields(lua: &Lua, function: &str, table: &Table, known: &[&str]) -> mlua::Result<()> {
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let ok = matches!(&key, Value::String(s) if known.contains(&&*s.to_string_lossy()));
        if !ok {
            return Err(script_error(
                lua,
                format!(
                    "{function}: unknown field {} (use {})",
                    describe(&key),
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn roles_arg(lua: &Lua, function: &str, value: Value) -> mlua::Result<Vec<String>> {
    let bad = || script_error(lua, format!("{function}: roles must be a list of strings"));
    match value_arg(lua, function, &value)? {
        // An empty table is an empty list.
        Json::Object(fields) if fields.is_empty() => Ok(Vec::new()),
        Json::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Json::String(role) => Ok(role),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

fn create_args(lua: &Lua, fields: Value) -> mlua::Result<UsersCall> {
    const F: &str = "users.create";
    let Some(fields) = options_arg(lua, F, fields)? else {
        return Err(script_error(
            lua,
            format!("{F}: expects {{email = ..., password = ...}}"),
        ));
    };
    known_fields(lua, F, &fields, &["email", "password", "data", "roles"])?;
    let data = match fields.raw_get::<Value>("data")? {
        Value::Nil => Json::Object(Default::default()),
        data => object_arg(lua, F, "data", &data)?,
    };
    let roles = match fields.raw_get::<Value>("roles")? {
        Value::Nil => Vec::new(),
        roles => roles_arg(lua, F, roles)?,
    };
    Ok(UsersCall::Create {
        email: text_arg(lua, F, "email", fields.raw_get("email")?)?,
        password: text_arg(lua, F, "password", fields.raw_get("password")?)?,
        data,
        roles,
    })
}

/// `{email = e, roles = {..}}`.
fn invite_args(lua: &Lua, fields: Value) -> mlua::Result<UsersCall> {
    const F: &str = "users.invite";
    let Some(fields) = options_arg(lua, F, fields)? else {
        return Err(script_error(lua, format!("{F}: expects {{email = ...}}")));
    };
    known_fields(lua, F, &fields, &["email", "roles"])?;
    let roles = match fields.raw_get::<Value>("roles")? {
        Value::Nil => Vec::new(),
        roles => roles_arg(lua, F, roles)?,
    };
    Ok(UsersCall::Invite {
        email: text_arg(lua, F, "email", fields.raw_get("email")?)?,
        roles,
    })
}

fn patch_args(lua: &Lua, patch: Value) -> mlua::Result<UserPatchArgs> {
    const F: &str = "users.update";
    let Some(patch) = options_arg(lua, F, patch)? else {
        return Err(script_error(lua, format!("{F}: expects a patch table")));
    };
    known_fields(lua, F, &patch, &["email", "data", "verified", "roles"])?;
    let email = match patch.raw_get::<Value>("email")? {
        Value::Nil => None,
        email => Some(text_arg(lua, F, "email", email)?),
    };
    let verified = match patch.raw_get::<Value>("verified")? {
        Value::Nil => None,
        Value::Boolean(verified) => Some(verified),
        other => {
            return Err(script_error(
                lua,
                format!("{F}: verified must be a boolean, got {}", describe(&other)),
            ));
        }
    };
    let roles = match patch.raw_get::<Value>("roles")? {
        Value::Nil => None,
        roles => Some(roles_arg(lua, F, roles)?),
    };
    let data = match patch.raw_get::<Value>("data")? {
        Value::Nil => None,
        data => Some(object_arg(lua, F, "data", &data)?),
    };
    Ok(UserPatchArgs {
        email,
        verified,
        roles,
        data,
    })
}

/// `{cursor = c, limit = n}`; the node bounds the limit (`invalid_limit`).
fn list_args(lua: &Lua, options: Value) -> mlua::Result<UsersCall> {
    const F: &str = "users.list";
    let Some(options) = options_arg(lua, F, options)? else {
        return Ok(UsersCall::List {
            cursor: None,
            limit: None,
        });
    };
    known_fields(lua, F, &options, &["cursor", "limit"])?;
    let cursor = match options.raw_get::<Value>("cursor")? {
        Value::Nil => None,
        cursor => Some(text_arg(lua, F, "cursor", cursor)?),
    };
    let limit = match options.raw_get::<Value>("limit")? {
        Value::Nil => None,
        limit => {
            let limit = integer_arg(lua, F, "limit", &limit, 0)?;
            Some(usize::try_from(limit).map_err(|_| {
                script_error(lua, format!("{F}: limit must be positive, got {limit}"))
            })?)
        }
    };
    Ok(UsersCall::List { cursor, limit })
}
