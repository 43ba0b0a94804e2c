//! `domains = ["shop.example.org"]`: the host names an app is served on at
//! `/`, without the `/<app>` prefix.
//!
//! The manifest's list is checked by `manifest.rs` (`check_domains`). Each node keeps
//! a [`Domains`] map (domain → app) that the gateway looks a request's
//! `Host` up in: one hash lookup per request. The map is rebuilt from this
//! node's applied state whenever an app changes (the app change feed in
//! `supervisor.rs` calls [`Domains::refresh`]), so every node serves every
//! app's domains once it has applied the deploy.
//!
//! Uniqueness is checked at deploy against this node's map; two deploys
//! racing for one domain through different nodes are not caught. Should two
//! apps ever claim one domain, [`domain_map`] gives it to the first app by
//! name, so every node agrees.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use picloud_storage::StateReader;

use super::bundle::Bundle;
#[cfg(test)]
use super::manifest::{DOMAINS_MAX, LABEL_BYTES_MAX, check_domains};
use super::manifest::{MANIFEST_FILE, Manifest};

/// The host part of a `Host` header value: the port stripped, lower-cased,
/// a trailing dot dropped. `None` for an IPv6 literal (never a domain).
pub fn host_name(host: &str) -> Option<String> {
    if host.starts_with('[') {
        return None;
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Domain → app, from each app's declared domains. A domain two apps claim
/// (deploys that raced) goes to the first app by name, so that every node
/// decides alike.
pub fn domain_map(declared: &BTreeMap<String, Vec<String>>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (app, domains) in declared {
        for domain in domains {
            map.entry(domain.clone()).or_insert_with(|| app.clone());
        }
    }
    map
}

/// This node's domain map, shared by the gateway (reads) and the app change
/// feed (rebuilds).
#[derive(Clone, Default)]
pub struct Domains {
    inner: Arc<RwLock<DomainsState>>,
}

#[derive(Default)]
struct DomainsState {
    /// Each app's declared domains, as its active version's manifest says.
    declared: BTreeMap<String, Vec<String>>,
    /// [`domain_map`] of `declared`.
    map: Arc<HashMap<String, String>>,
}

impl Domains {
    /// The app serving `host` (a `Host` header value, port and case
    /// ignored), if any.
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        let map = self.map();
        if map.is_empty() {
            return None;
        }
        map.get(&host_name(host)?).cloned()
    }

    /// The app other than `except` that holds `domain`.
    pub fn owner(&self, domain: &str, except: &str) -> Option<String> {
        let state = self
            .inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        state
            .declared
            .iter()
            .find(|(app, domains)| app.as_str() != except && domains.iter().any(|d| d == domain))
            .map(|(app, _)| app.clone())
    }

    /// Each app's declared domains (for the admin API's apps list).
    pub fn declared(&self, app: &str) -> Vec<String> {
        let state = self
            .inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        state.declared.get(app).cloned().unwrap_or_default()
    }

    fn map(&self) -> Arc<HashMap<String, String>> {
        let state = self
            .inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        state.map.clone()
    }

    /// Re-reads `app`'s domains (or every app's, when `None`) from this
    /// node's applied state and rebuilds the map.
    pub fn refresh(&self, reader: &StateReader, app: Option<&str>) {
        let mut updates: Vec<(String, Vec<String>)> = Vec::new();
        let full = app.is_none();
        match app {
            Some(app) => updates.push((app.to_string(), read_domains(reader, app))),
            None => {
                for record in reader.apps().unwrap_or_default() {
                    let domains = read_domains(reader, &record.name);
                    updates.push((record.name, domains));
                }
            }
        }
        let mut state = self
            .inner
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if full {
            state.declared.clear();
        }
        for (app, domains) in updates {
            if domains.is_empty() {
                state.declared.remove(&app);
            } else {
                state.declared.insert(app, domains);
            }
        }
        state.map = Arc::new(domain_map(&state.declared));
    }
}

/// The domains of `app`'s active version (none when it has no active
/// version or its bundle cannot be read: it then serves no domain).
fn read_domains(reader: &StateReader, app: &str) -> Vec<String> {
    let Some(version) = reader
        .app(app)
        .ok()
        .flatten()
        .and_then(|record| record.active_version)
    else {
        return Vec::new();
    };
    let Some(bytes) = reader.bundle(app, version).ok().flatten() else {
        return Vec::new();
    };
    let Ok(bundle) = Bundle::decode(&bytes) else {
        return Vec::new();
    };
    bundle
        .files
        .get(MANIFEST_FILE)
        .and_then(|text| Manifest::parse(text).ok())
        .map(|manifest| manifest.domains)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_and_lower_cased() {
        let ok = check_domains(vec!["Shop.Example.ORG".into(), "a-b.c".into()]);
        assert_eq!(
            ok,
            Ok(vec!["shop.example.org".to_string(), "a-b.c".to_string()])
        );
        for bad in [
            "",
            "shop.example.org:8080",
            "shop..org",
            "-shop.org",
            "shop-.org",
            "shop.org.",
            "sh op.org",
            "*.example.org",
            "https://shop.org",
        ] {
            assert!(check_domains(vec![bad.into()]).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.org", "a".repeat(LABEL_BYTES_MAX + 1));
        assert!(check_domains(vec![long]).is_err());
        assert!(check_domains(vec!["a.org".into(), "A.org".into()]).is_err());
        let many = (0..=DOMAINS_MAX).map(|i| format!("d{i}.org")).collect();
        assert!(check_domains(many).is_err());
    }

    #[test]
    fn host_headers_lose_port_case_and_trailing_dot() {
        assert_eq!(
            host_name("Shop.Example.org:8080").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            host_name("shop.example.org.").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            host_name("shop.example.org").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(host_name("[::1]:8080"), None);
        assert_eq!(host_name(""), None);
    }

    #[test]
    fn a_domain_claimed_twice_goes_to_the_first_app_by_name() {
        let declared = BTreeMap::from([
            (
                "beta".to_string(),
                vec!["x.org".to_string(), "b.org".to_string()],
            ),
            ("alpha".to_string(), vec!["x.org".to_string()]),
        ]);
        let map = domain_map(&declared);
        assert_eq!(map["x.org"], "alpha");
        assert_eq!(map["b.org"], "beta");
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn lookups_ignore_port_and_case_and_unknown_hosts_find_nothing() {
        let domains = Domains::default();
        {
            let mut state = domains.inner.write().expect("lock");
            state
                .declared
                .insert("shop".into(), vec!["shop.example.org".into()]);
            state.map = Arc::new(domain_map(&state.declared));
        }
        assert_eq!(
            domains.app_for_host("SHOP.example.org:443").as_deref(),
            Some("shop")
        );
        assert_eq!(domains.app_for_host("other.example.org"), None);
        assert_eq!(
            domains.owner("shop.example.org", "blog").as_deref(),
            Some("shop")
        );
        assert_eq!(domains.owner("shop.example.org", "shop"), None);
    }
}
