//! The mails of the built-in auth flows: `[auth.templates.verify|reset|
//! invite]` of a manifest (or the defaults here), checked at deploy and
//! rendered by a pure function.
//!
//! A template is text with `{{name}}` placeholders; the names are
//! [`PLACEHOLDERS`]. An unknown name (a typo such as `{{lnik}}`) is refused
//! at deploy rather than mailed to users as written. In `html` the values
//! are HTML-escaped; in `subject` and `text` they are inserted as they are.

use std::fmt::Write as _;

/// The names a template may use: the link to follow, the app's name, the
/// recipient's address and the bare token (for apps that build their own
/// link).
pub const PLACEHOLDERS: [&str; 4] = ["link", "app", "email", "token"];

/// The longest template part (subject, text or html), in bytes.
pub const TEMPLATE_BYTES_MAX: usize = 64 * 1024;

/// The longest subject, in bytes (a subject is one header line).
pub const SUBJECT_BYTES_MAX: usize = 998;

/// One mail of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The three flow mails of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    pub verify: Template,
    pub reset: Template,
    pub invite: Template,
}

impl Default for Templates {
    fn default() -> Self {
        let template = |subject: &str, text: &str| Template {
            subject: subject.into(),
            text: text.into(),
            html: None,
        };
        Templates {
            verify: template(
                "Confirm your email for {{app}}",
                "Confirm your email address {{email}} for {{app}} by opening this link:\n\n{{link}}\n\nIf you did not sign up, ignore this mail.\n",
            ),
            reset: template(
                "Reset your {{app}} password",
                "Someone asked to reset the password of {{email}} on {{app}}. To choose a new one, open this link:\n\n{{link}}\n\nIf it was not you, ignore this mail: your password stays as it is.\n",
            ),
            invite: template(
                "You are invited to {{app}}",
                "You are invited to join {{app}} as {{email}}. To accept and choose a password, open this link:\n\n{{link}}\n",
            ),
        }
    }
}

/// The values a rendering fills in.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub link: &'a str,
    pub app: &'a str,
    pub email: &'a str,
    pub token: &'a str,
}

impl Values<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "link" => Some(self.link),
            "app" => Some(self.app),
            "email" => Some(self.email),
            "token" => Some(self.token),
            _ => None,
        }
    }
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Why a template is refused at deploy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{{name}}}}} (use {})", PLACEHOLDERS.join(", "))]
    UnknownPlaceholder { name: String },
    #[error("a '{{{{' is never closed by '}}}}'")]
    Unclosed,
    #[error("it is {bytes} bytes; at most {max} are allowed")]
    TooLong { bytes: usize, max: usize },
    #[error("the subject must be one line")]
    SubjectLines,
}

/// One piece of a template: text as written, or a placeholder's name.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits `template` into text and placeholders (`{{ name }}`, spaces
/// inside the braces allowed).
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        pieces.push(Piece::Text(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        pieces.push(Piece::Placeholder(after[..close].trim()));
        rest = &after[close + 2..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// Checks one part of a template: size, closed braces, known names.
fn check_part(part: &str, max: usize) -> Result<(), TemplateError> {
    if part.len() > max {
        return Err(TemplateError::TooLong {
            bytes: part.len(),
            max,
        });
    }
    for piece in pieces(part)? {
        if let Piece::Placeholder(name) = piece
            && !PLACEHOLDERS.contains(&name)
        {
            return Err(TemplateError::UnknownPlaceholder { name: name.into() });
        }
    }
    Ok(())
}

/// Whether `template` can be rendered: every part within its size, every
/// placeholder known, the subject one line.
pub fn check(template: &Template) -> Result<(), TemplateError> {
    check_part(&template.subject, SUBJECT_BYTES_MAX)?;
    if template.subject.contains(['\r', '\n']) {
        return Err(TemplateError::SubjectLines);
    }
    check_part(&template.text, TEMPLATE_BYTES_MAX)?;
    if let Some(html) = &template.html {
        check_part(html, TEMPLATE_BYTES_MAX)?;
    }
    Ok(())
}

fn escape_html(value: &str, out: &mut String) {
    for character in value.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

/// Fills one part; a name [`check`] would refuse is left as written (a
/// template reaches here only after `check`).
fn render_part(part: &str, values: &Values<'_>, html: bool) -> String {
    let Ok(pieces) = pieces(part) else {
        return part.to_string();
    };
    let mut out = String::with_capacity(part.len() + values.link.len());
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => match values.get(name) {
                Some(value) if html => escape_html(value, &mut out),
                Some(value) => out.push_str(value),
                None => {
                    let _ = write!(out, "{{{{{name}}}}}");
                }
            },
        }
    }
    out
}

/// The mail `template` makes with `values`. The subject loses any line
/// break a value could carry, so a value never adds a header.
pub fn render(template: &Template, values: &Values<'_>) -> Rendered {
    Rendered {
        subject: render_part(&template.subject, values, false).replace(['\r', '\n'], " "),
        text: render_part(&template.text, values, false),
        html: template
            .html
            .as_deref()
            .map(|html| render_part(html, values, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: Values<'static> = Values {
        link: "https://x.org/v?token=t&a=1",
        app: "shop",
        email: "ann@example.org",
        token: "t",
    };

    fn template(subject: &str, text: &str, html: Option<&str>) -> Template {
        Template {
            subject: subject.into(),
            text: text.into(),
            html: html.map(str::to_string),
        }
    }

    #[test]
    fn fills_every_placeholder_and_escapes_only_html() {
        let rendered = render(
            &template(
                "Hi {{ email }} from {{app}}",
                "{{link}} ({{token}})",
                Some("<a href=\"{{link}}\">go</a>"),
            ),
            &VALUES,
        );
        assert_eq!(rendered.subject, "Hi ann@example.org from shop");
        assert_eq!(rendered.text, "https://x.org/v?token=t&a=1 (t)");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<a href=\"https://x.org/v?token=t&amp;a=1\">go</a>")
        );
    }

    #[test]
    fn deploy_refuses_unknown_names_unclosed_braces_and_multiline_subjects() {
        let table: &[(Template, Result<(), TemplateError>)] = &[
            (template("s", "{{link}}", None), Ok(())),
            (
                template("s", "{{lnik}}", None),
                Err(TemplateError::UnknownPlaceholder {
                    name: "lnik".into(),
                }),
            ),
            (
                template("s", "t", Some("{{ password }}")),
                Err(TemplateError::UnknownPlaceholder {
                    name: "password".into(),
                }),
            ),
            (template("{{app", "t", None), Err(TemplateError::Unclosed)),
            (
                template("a\nb", "t", None),
                Err(TemplateError::SubjectLines),
            ),
            (
                template("s", &"x".repeat(TEMPLATE_BYTES_MAX + 1), None),
                Err(TemplateError::TooLong {
                    bytes: TEMPLATE_BYTES_MAX + 1,
                    max: TEMPLATE_BYTES_MAX,
                }),
            ),
        ];
        for (template, expected) in table {
            assert_eq!(check(template), *expected, "{template:?}");
        }
        let defaults = Templates::default();
        for template in [&defaults.verify, &defaults.reset, &defaults.invite] {
            assert_eq!(check(template), Ok(()));
            assert!(render(template, &VALUES).text.contains(VALUES.link));
        }
    }

    #[test]
    fn a_value_cannot_break_the_subject_line() {
        let values = Values {
            email: "a@b.org\r\nBcc: x@y.org",
            ..VALUES
        };
        let rendered = render(&template("to {{email}}", "t", None), &values);
        assert_eq!(rendered.subject, "to a@b.org  Bcc: x@y.org");
    }
}
