//! One domain as a list or rule names it: normalised the way SNI and Host carry it, and
//! refused where it cannot be a name or would cover every site under a public suffix. Used
//! by rules ([`super::classes`]) and list files ([`super::lists`]) alike.

use std::net::IpAddr;

use classifier_common::domain;

/// A domain as the tables key it: lowercase ASCII (an internationalised name in punycode,
/// `bücher.example` → `xn--bcher-kva.example`, as SNI and Host carry it), no trailing dot,
/// no `*.` wildcard prefix (every domain covers its subdomains anyway). Refuses what cannot
/// be a DNS name.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let name = trimmed
        .strip_prefix("*.")
        .or_else(|| trimmed.strip_prefix('.'))
        .unwrap_or(trimmed);
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        // UTS #46 as browsers do it: mapped, normalised, then punycode per label.
        idna::domain_to_ascii(name).map_err(|_| {
            format!("`{raw}` is not a domain name (an internationalised name IDNA refuses)")
        })?
    };
    if name.is_empty() || name.len() > domain::MAX_NAME_LEN {
        return Err(format!("`{raw}` is not a domain name (length)"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("`{raw}` is an address, not a domain name"));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(valid_label) {
        return Err(format!(
            "`{raw}` is not a domain name (letters, digits, '-' and '_' between dots)"
        ));
    }
    Ok(name)
}

/// Refuses a normalised domain that is itself a public suffix in the ICANN section of the
/// Public Suffix List (`com`, `co.uk`, `gov.uk`): listed, it would put every site under
/// it in the category. Suffixes of the list's private section (`github.io`,
/// `blogspot.com`) are one company's and may be listed on purpose.
pub fn refuse_public_suffix(domain: &str) -> Result<(), String> {
    match psl::suffix(domain.as_bytes()) {
        Some(suffix)
            if suffix.as_bytes() == domain.as_bytes() && suffix.typ() == Some(psl::Type::Icann) =>
        {
            Err(format!(
                "`{domain}` is a public suffix (Public Suffix List): it would put every site \
                 under it in this category; list the sites themselves"
            ))
        }
        _ => Ok(()),
    }
}

/// [`normalize_domain`], then [`refuse_public_suffix`]: a domain as a list entry.
pub fn list_entry(raw: &str) -> Result<String, ListEntryError> {
    let domain = normalize_domain(raw).map_err(ListEntryError::NotADomain)?;
    refuse_public_suffix(&domain).map_err(ListEntryError::PublicSuffix)?;
    Ok(domain)
}

/// Why a list entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntryError {
    /// Not a domain (an address, a URL, a typo): a list file skips such lines.
    NotADomain(String),
    /// A bare public suffix: refused wherever it is written.
    PublicSuffix(String),
}

impl ListEntryError {
    pub fn message(self) -> String {
        match self {
            ListEntryError::NotADomain(message) | ListEntryError::PublicSuffix(message) => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_or_refused() {
        assert_eq!(
            normalize_domain("WWW.YouTube.com.").unwrap(),
            "www.youtube.com"
        );
        assert_eq!(
            normalize_domain("*.googlevideo.com").unwrap(),
            "googlevideo.com"
        );
        assert_eq!(normalize_domain(".bbc.co.uk").unwrap(), "bbc.co.uk");
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        // Internationalised names become the punycode SNI and Host carry.
        assert_eq!(
            normalize_domain("Bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("*.ドメイン.テスト").unwrap(),
            "xn--eckwd4c7c.xn--zckzah"
        );
        for bad in [
            "",
            "192.0.2.1",
            "2001:db8::1",
            "http://x.com/",
            "a..b",
            "has space.com",
            "bü cher.example",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bare_public_suffixes_are_refused_and_names_under_them_are_not() {
        for suffix in [
            "com", "co.uk", "uk", "gov.uk", "org", "COM.", "*.co.uk", ".net",
        ] {
            let err = list_entry(suffix).unwrap_err();
            assert!(
                matches!(&err, ListEntryError::PublicSuffix(m) if m.contains("public suffix")),
                "{suffix}: {err:?}"
            );
        }
        for domain in [
            "example.com",
            "bbc.co.uk",
            "www.gov.uk",
            "dns.google",
            "github.io",
            "blogspot.com",
        ] {
            assert!(list_entry(domain).is_ok(), "{domain}");
        }
    }
}
