//! Route matching: `/greet/:name` and trailing `*rest` patterns.

use std::collections::BTreeMap;

use super::manifest::RouteSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// A trailing `*name` that takes the rest of the path (possibly empty).
    Rest(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: String,
    segments: Vec<Segment>,
    script: String,
}

/// The routes of one app version, in manifest order (the first match wins).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// A matched route: the script to run and the captured parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub script: &'a str,
    pub params: BTreeMap<String, String>,
}

/// Why a path pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route path {path:?}: {message}")]
pub struct RoutePatternError {
    pub path: String,
    pub message: String,
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

impl RouteTable {
    pub fn compile(specs: &[RouteSpec]) -> Result<RouteTable, RoutePatternError> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let error = |message: &str| RoutePatternError {
                path: spec.path.clone(),
                message: message.to_string(),
            };
            if !spec.path.starts_with('/') {
                return Err(error("must start with '/'"));
            }
            let parts: Vec<&str> = split(&spec.path).collect();
            let mut segments = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                if let Some(name) = part.strip_prefix(':') {
                    if name.is_empty() {
                        return Err(error("a ':' parameter needs a name"));
                    }
                    segments.push(Segment::Param(name.to_string()));
                } else if let Some(name) = part.strip_prefix('*') {
                    if index + 1 != parts.len() {
                        return Err(error("a '*rest' segment must be the last one"));
                    }
                    if name.is_empty() {
                        return Err(error("a '*' segment needs a name"));
                    }
                    segments.push(Segment::Rest(name.to_string()));
                } else {
                    segments.push(Segment::Literal(part.to_string()));
                }
            }
            routes.push(Route {
                method: spec.method.clone(),
                segments,
                script: spec.script.clone(),
            });
        }
        Ok(RouteTable { routes })
    }

    /// Finds the first route matching `method` and `path` (the part after `/<app>`).
    /// `path_matched` tells a 405-style miss apart from a 404 one.
    pub fn find(&self, method: &str, path: &str) -> Result<RouteMatch<'_>, RouteMiss> {
        let parts: Vec<&str> = split(path).collect();
        let mut path_matched = false;
        for route in &self.routes {
            let Some(params) = match_segments(&route.segments, &parts) else {
                continue;
            };
            path_matched = true;
            if route.method == "*" || route.method == method {
                return Ok(RouteMatch {
                    script: &route.script,
                    params,
                });
            }
        }
        Err(if path_matched {
            RouteMiss::MethodNotAllowed
        } else {
            RouteMiss::NotFound
        })
    }
}

/// Why no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    MethodNotAllowed,
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Rest(name) => {
                params.insert(name.clone(), parts.get(index..)?.join("/"));
                return Some(params);
            }
            Segment::Literal(literal) => {
                if parts.get(index)? != literal {
                    return None;
                }
            }
            Segment::Param(name) => {
                params.insert(name.clone(), percent_decode(parts.get(index)?));
            }
        }
    }
    (segments.len() == parts.len()).then_some(params)
}

/// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 are kept as they came.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, path: &str, script: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            script: script.into(),
        }
    }

    #[test]
    fn matches_params_rest_and_methods() {
        let table = RouteTable::compile(&[
            spec("GET", "/greet/:name", "greet.lua"),
            spec("*", "/files/*rest", "files.lua"),
            spec("POST", "/items", "create.lua"),
        ])
        .expect("compiles");
        let hit = table.find("GET", "/greet/pi").expect("match");
        assert_eq!(hit.script, "greet.lua");
        assert_eq!(hit.params["name"], "pi");
        assert_eq!(
            table.find("GET", "/greet/a%20b").expect("match").params["name"],
            "a b"
        );
        let rest = table.find("DELETE", "/files/a/b/c").expect("match");
        assert_eq!(rest.params["rest"], "a/b/c");
        assert_eq!(
            table.find("GET", "/files").expect("match").params["rest"],
            ""
        );
        assert_eq!(
            table.find("GET", "/items").err(),
            Some(RouteMiss::MethodNotAllowed)
        );
        assert_eq!(table.find("GET", "/nope").err(), Some(RouteMiss::NotFound));
        assert_eq!(
            table.find("GET", "/greet/pi/extra").err(),
            Some(RouteMiss::NotFound)
        );
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(RouteTable::compile(&[spec("GET", "nope", "a.lua")]).is_err());
        assert!(RouteTable::compile(&[spec("GET", "/*rest/x", "a.lua")]).is_err());
        assert!(RouteTable::compile(&[spec("GET", "/:", "a.lua")]).is_err());
    }

    #[test]
    fn percent_decode_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
