//! Which app a `RCPT TO` address belongs to: `<local>@<app>.<mail-domain>`,
//! or one of the `[mail] aliases` an app's email triggers carry. An
//! address is accepted only if one of the app's `email` triggers matches
//! it, so mail no script would see is refused at `RCPT` (550), not lost.

use picloud_storage::state::StateReader;

use super::session::Resolution;

/// `orders@shop.example.org` with mail domain `example.org` →
/// (`shop`, `orders`). Addresses are lower-cased before.
pub fn route<'a>(address: &'a str, mail_domain: &str) -> Option<(&'a str, &'a str)> {
    let (local, domain) = address.rsplit_once('@')?;
    let app = domain.strip_suffix(mail_domain)?.strip_suffix('.')?;
    if local.is_empty() || app.is_empty() || app.contains('.') {
        return None;
    }
    Some((app, local))
}

/// Looks `address` up in this node's state (a local read: the log may be
/// a little behind, and `apply` decides again when the message commits).
pub fn resolve(reader: &StateReader, mail_domain: &str, address: &str) -> Resolution {
    if let Some((app, local)) = route(address, mail_domain)
        && let Ok(Some(set)) = reader.trigger_set(app)
        && set.email_triggers_on(local).next().is_some()
    {
        return Resolution::App {
            app: app.to_string(),
            local: local.to_string(),
        };
    }
    let Some(app) = alias_owner(reader, address, None) else {
        return Resolution::Unknown;
    };
    match reader.trigger_set(&app) {
        Ok(Some(set)) if set.email_triggers_on(address).next().is_some() => Resolution::App {
            app,
            local: address.to_string(),
        },
        _ => Resolution::Unknown,
    }
}

/// The app (other than `except`) whose active email triggers hold the
/// alias `address`, first by name. Deploys refuse an alias
/// another app holds, so there is at most one unless two deploys raced.
pub fn alias_owner(reader: &StateReader, address: &str, except: Option<&str>) -> Option<String> {
    let apps = reader.apps().ok()?;
    apps.into_iter()
        .filter(|record| Some(record.name.as_str()) != except)
        .find(|record| {
            reader
                .trigger_set(&record.name)
                .ok()
                .flatten()
                .is_some_and(|set| set.has_mail_alias(address))
        })
        .map(|record| record.name)
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn addresses_route_to_the_app_named_by_their_subdomain() {
        let cases = [
            ("orders@shop.example.org", Some(("shop", "orders"))),
            ("a.b+c@my-app.example.org", Some(("my-app", "a.b+c"))),
            ("x@example.org", None),
            ("x@a.b.example.org", None),
            ("x@shopexample.org", None),
            ("@shop.example.org", None),
            ("x@shop.example.com", None),
            ("no-at-sign", None),
        ];
        for (address, expected) in cases {
            assert_eq!(route(address, "example.org"), expected, "{address}");
        }
    }
}
