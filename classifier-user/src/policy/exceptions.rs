//! Exceptions: after a risk assessment and a line manager's approval, a user (by address)
//! or a group may use a category the rules block. Every exception names who approved it,
//! a reference (a ticket), the reason, and when it expires; expired ones stop applying on
//! time.

use std::net::IpAddr;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

use super::source::{FieldPath, PolicyError, Source};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSection {
    /// The user's device address; or give `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Categories allowed despite the rules.
    #[serde(alias = "category")]
    pub categories: Vec<String>,
    pub approved_by: String,
    /// A ticket or case number, e.g. RITM0012345.
    pub reference: String,
    pub reason: String,
    /// RFC 3339 time (`2027-03-31T17:00:00Z`), or a date (`2027-03-31`): the end of that day
    /// in the site's time zone.
    pub expires: String,
}

/// Who an exception is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Client(IpAddr),
    Group(u16),
}

#[derive(Debug, Clone)]
pub struct Exception {
    /// Where it was written: `exceptions[3]` of the policy or the exceptions file.
    pub origin: String,
    pub target: Target,
    pub categories: Vec<u16>,
    pub approved_by: String,
    pub reference: String,
    pub reason: String,
    pub expires: Timestamp,
}

impl Exception {
    pub fn is_active(&self, at: Timestamp) -> bool {
        at < self.expires
    }

    /// Whether it lets `client` (in `group`) use `category` at `at`.
    pub fn applies(&self, client: IpAddr, group: u16, category: u16, at: Timestamp) -> bool {
        let target = match self.target {
            Target::Client(addr) => addr == client.to_canonical(),
            Target::Group(id) => id == group,
        };
        target && self.categories.contains(&category) && self.is_active(at)
    }
}

/// Names an exception may refer to.
pub struct Names<'a> {
    pub category: &'a dyn Fn(&str) -> Option<u16>,
    pub group: &'a dyn Fn(&str) -> Option<u16>,
}

/// Validates the `[[exceptions]]` in a file; `label` names the file in `origin`.
pub fn compile(
    sections: &[ExceptionSection],
    names: &Names<'_>,
    tz: &TimeZone,
    source: &Source<'_>,
) -> Result<Vec<Exception>, PolicyError> {
    sections
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let path = FieldPath::root().key("exceptions").index(index);
            compile_one(section, &path, names, tz)
                .map_err(|(field, message)| source.error_at(&field, message))
        })
        .collect()
}

type FieldError = (FieldPath, String);

fn compile_one(
    section: &ExceptionSection,
    path: &FieldPath,
    names: &Names<'_>,
    tz: &TimeZone,
) -> Result<Exception, FieldError> {
    let target = match (&section.client, &section.group) {
        (Some(client), None) => Target::Client(
            client
                .trim()
                .parse::<IpAddr>()
                .map(|a| a.to_canonical())
                .map_err(|_| (path.key("client"), format!("`{client}` is not an address")))?,
        ),
        (None, Some(group)) => Target::Group(
            (names.group)(group)
                .ok_or_else(|| (path.key("group"), format!("no group `{group}`")))?,
        ),
        _ => {
            return Err((
                path.clone(),
                "an exception is for one `client` (address) or one `group`".into(),
            ));
        }
    };
    if section.categories.is_empty() {
        return Err((
            path.key("categories"),
            "name the categories the exception allows".into(),
        ));
    }
    let categories = section
        .categories
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (names.category)(name).ok_or_else(|| {
                (
                    path.key("categories").index(i),
                    format!("no category `{name}`"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (field, value) in [
        ("approved_by", &section.approved_by),
        ("reference", &section.reference),
        ("reason", &section.reason),
    ] {
        if value.trim().is_empty() {
            return Err((
                path.key(field),
                format!(
                    "every exception records `{field}` (the policy requires approval on record)"
                ),
            ));
        }
    }
    let expires = parse_expiry(&section.expires, tz).map_err(|e| (path.key("expires"), e))?;
    Ok(Exception {
        origin: path.to_string(),
        target,
        categories,
        approved_by: section.approved_by.clone(),
        reference: section.reference.clone(),
        reason: section.reason.clone(),
        expires,
    })
}

/// An RFC 3339 instant, or a date meaning the end of that day in `tz`.
pub fn parse_expiry(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        format!("`{text}`: write a date (2027-03-31) or a time (2027-03-31T17:00:00Z)")
    })?;
    let next_day = date.tomorrow().map_err(|e| format!("`{text}`: {e}"))?;
    next_day
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| format!("`{text}`: {e}"))
}

/// The `[[exceptions]]` of an exceptions file (kept apart from the policy so that the CLI
/// can add and expire them without rewriting the policy).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionsFile {
    #[serde(default)]
    pub exceptions: Vec<ExceptionSection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_expires_at_the_end_of_that_local_day() {
        let london = TimeZone::get("Europe/London").unwrap();
        // British Summer Time: the end of 31 July is 23:00 UTC.
        assert_eq!(
            parse_expiry("2027-07-31", &london).unwrap().to_string(),
            "2027-07-31T23:00:00Z"
        );
        assert_eq!(
            parse_expiry("2027-01-31", &london).unwrap().to_string(),
            "2027-02-01T00:00:00Z"
        );
        assert_eq!(
            parse_expiry("2027-03-31T17:00:00Z", &london)
                .unwrap()
                .to_string(),
            "2027-03-31T17:00:00Z"
        );
        assert!(parse_expiry("next week", &london).is_err());
        assert!(parse_expiry("2027-02-30", &london).is_err());
    }
}
